// One io_uring per pool: submission, reaping, and the poller's sleep.
#pragma once

#include "../util/spinlock.hpp"

#include <liburing.h>

#include <atomic>
#include <cstdint>
#include <string>

namespace cowq::detail {

// What this kernel's io_uring offers, probed at run time.
struct ring_features {
  bool ext_arg = false;           // timed waits without a timeout SQE (5.11)
  bool nodrop = false;            // CQ overflow kept by the kernel (5.5)
  bool coop_taskrun = false;      // task work without IPIs (5.19)
  bool multishot_accept = false;  // one SQE, many accepts (5.19)
  bool async_cancel_any = false;  // cancel every request at once (5.19)
  bool op_socket = false;         // IORING_OP_SOCKET (5.19)
  bool buf_ring = false;          // provided buffers in a ring (5.19)
  bool multishot_recv = false;    // one receive, many completions (6.0)
  std::string describe() const;
};

// user_data values that are not operations (operations are pointers,
// aligned to at least 8, so these never collide).
inline constexpr std::uint64_t kUdEventFd = 1;  // the poller's wake-up read
inline constexpr std::uint64_t kUdIgnore = 2;   // link timeouts, cancels

class ring {
 public:
  // Throws std::system_error whose message names the cause and the fix
  // when the kernel refuses io_uring.
  explicit ring(unsigned entries);
  ~ring();
  ring(const ring&) = delete;
  ring& operator=(const ring&) = delete;

  static const ring_features& features();

  // The SQ side: every call below with "locked" needs sq_lock_.
  spinlock sq_lock_;
  // An SQE for `need` consecutive entries' first, submitting what is
  // queued when the SQ is full (never drops). Null only if the kernel
  // refuses submission outright.
  io_uring_sqe* sqe_locked(unsigned need = 1);
  int submit_locked();
  // Submits prepared SQEs if there are any: one io_uring_enter per batch.
  void submit();
  bool has_unsubmitted() const noexcept {
    return unsubmitted_.load(std::memory_order_relaxed);
  }

  // The CQ side, for one reaper at a time (the pool lock). Calls
  // f(user_data, res, flags) for each completion; returns how many.
  // *woken tells whether a wake() (the eventfd read) was among them.
  template <typename F>
  unsigned reap(F&& f, bool* woken = nullptr) {
    unsigned n = 0;
    io_uring_cqe* cqe;
    unsigned head;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      if (cqe->user_data == kUdEventFd) {
        efd_armed_.store(false, std::memory_order_relaxed);
        if (woken != nullptr) *woken = true;
      } else if (cqe->user_data != kUdIgnore) {
        f(cqe->user_data, cqe->res, cqe->flags);
      }
      ++n;
    }
    if (n != 0) io_uring_cq_advance(&ring_, n);
    return n;
  }
  bool cq_ready() const noexcept {
    return io_uring_cq_ready(&ring_) != 0 || io_uring_cq_has_overflow(&ring_);
  }
  // cq_ready() for a thread that does not hold the reaper's lock (a
  // spinning idle worker): the head, which the reaper advances with a
  // release store, is read atomically too. A stale answer only ends a spin
  // early or a moment late.
  bool cq_ready_unlocked() const noexcept {
    const unsigned head = __atomic_load_n(ring_.cq.khead, __ATOMIC_RELAXED);
    // Acquire pairs with the kernel's release store of the tail.
    return io_uring_smp_load_acquire(ring_.cq.ktail) != head;
  }
  // Moves completions the kernel holds back (overflow, deferred task work)
  // into the CQ. A syscall: only when cq_ready() or a flag says so.
  void flush_overflow();
  bool task_work_pending() const noexcept {
    return (IO_URING_READ_ONCE(*ring_.sq.kflags) & IORING_SQ_TASKRUN) != 0;
  }

  // The poller: sleeps in the ring until a completion, a wake() or the
  // timeout (null: none). Arms the wake-up read first, and submits what
  // is prepared in the same io_uring_enter.
  void wait(const __kernel_timespec* timeout);
  // Wakes the poller sleeping in wait().
  void wake() noexcept;
  // Posts a completion of no meaning: a poller on its way into wait(), or
  // asleep in it, returns. For a reaper that took a wake() meant for the
  // poller (its eventfd read) before the poller entered the kernel.
  void post_nop();

  io_uring* raw() noexcept { return &ring_; }

  // Tests only: called on the poller's thread in wait(), before it arms the
  // wake-up read (armed false) and again just before it enters the kernel
  // (armed true). The release store of the hook, after its argument, pairs
  // with the acquire load in wait().
  using wait_hook = void (*)(void* arg, bool armed);
  std::atomic<wait_hook> wait_hook_{nullptr};
  void* wait_hook_arg_ = nullptr;

 private:
  // Publishes the prepared SQEs to the kernel (the SQ tail) without
  // entering it; returns how many it has not consumed yet.
  unsigned flush_locked() noexcept;

  io_uring ring_{};
  int event_fd_ = -1;
  std::uint64_t efd_value_ = 0;
  // Whether the eventfd read is in flight. Set under sq_lock_ when armed,
  // cleared by the reaper when it completes (relaxed: a stale true only
  // delays re-arming to the next wait, a stale false arms twice, which
  // the kernel tolerates).
  std::atomic<bool> efd_armed_{false};
  // sq_lock_ writes it; relaxed reads decide whether to take the lock.
  std::atomic<bool> unsubmitted_{false};
};

}  // namespace cowq::detail
