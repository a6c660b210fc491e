// Callable work items with the kernel workqueue's semantics.
#pragma once

#include <cowq/work_node.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>

namespace cowq {

class workqueue;

class work;

namespace detail {
struct pool;
struct worker;
struct work_access;
struct work_ops;

// A deadline in a pool's timer heap. Intrusive so that arming one
// allocates nothing; every field belongs to that pool's lock.
struct timer_node {
  std::chrono::steady_clock::time_point deadline_{};
  std::size_t heap_index_ = static_cast<std::size_t>(-1);
  // Called once the deadline has passed: with the owning pool's lock held
  // if fire_locked_, else with no lock held.
  void (*fire_)(timer_node*) = nullptr;
  bool fire_locked_ = false;
  timer_node* next_due_ = nullptr;  // links due timers while they fire
  bool armed() const noexcept { return heap_index_ != static_cast<std::size_t>(-1); }
};

// The nodes a work embeds, each pointing back at it.
struct work_item_node : work_node {
  work* self_ = nullptr;
};
struct work_timer : timer_node {
  work* self_ = nullptr;
};
}  // namespace detail

// A function queued on a workqueue, like the kernel's work_struct.
//
// - Queueing a work that is already pending does nothing and returns false.
// - A work never runs concurrently with itself: queued again while it runs,
//   it runs once more after the current run, on the same worker.
// - flush_work() waits for the last queued run to finish; cancel_work_sync()
//   removes a pending run and waits for a running one.
//
// The object must stay alive and at the same address while it is pending or
// running; destroy it only after cancel_work_sync() or flush_work().
//
// Thread safety: all member functions may be called from any thread,
// including from inside the work's own function (except the *_sync ones and
// flush_work, which would wait for themselves and throw instead).
class work {
 public:
  explicit work(std::function<void()> fn);
  work(const work&) = delete;
  work& operator=(const work&) = delete;
  ~work();

  bool pending() const noexcept;

 private:
  friend struct detail::work_access;
  friend struct detail::work_ops;

  detail::work_item_node node_;
  std::function<void()> fn_;
  // Bit 0: pending. Owned by whoever set it: the queuer until the worker
  // clears it when the run starts, or a canceller while it cancels.
  std::atomic<std::uint32_t> state_{0};
  // The pool this work was last queued on. Written by the owner of the
  // pending bit before the item is linked; read by flush/cancel, which
  // then take that pool's lock and re-check.
  std::atomic<detail::pool*> pool_{nullptr};
  // The worker running it, or null. Under pool_'s lock.
  detail::worker* running_on_ = nullptr;
  // Runs started and finished, and whether a flusher waits. Written under
  // pool_'s lock; finished_ is also read without it by waiters (acquire,
  // pairs with the release increment in the worker's finish path).
  std::uint32_t started_ = 0;
  std::atomic<std::uint32_t> finished_{0};
  bool waiters_ = false;

 protected:
  // delayed_work only; written by the owner of the pending bit. The timer
  // is armed on timer_pool_'s heap.
  detail::work_timer timer_;
  detail::pool* timer_pool_ = nullptr;
  workqueue* delayed_wq_ = nullptr;
  int delayed_cpu_ = -1;
};

// A work queued after a delay (the kernel's delayed_work).
class delayed_work : public work {
 public:
  explicit delayed_work(std::function<void()> fn);
};

// Kernel-named free functions. All may be called from any thread.
bool queue_work(workqueue& wq, work& w);
bool queue_work_on(int cpu, workqueue& wq, work& w);
bool queue_delayed_work(workqueue& wq, delayed_work& w,
                        std::chrono::nanoseconds delay);
bool queue_delayed_work_on(int cpu, workqueue& wq, delayed_work& w,
                           std::chrono::nanoseconds delay);
// Re-arms a delayed work with a new delay whether or not it was pending;
// returns true if it was pending.
bool mod_delayed_work(workqueue& wq, delayed_work& w,
                      std::chrono::nanoseconds delay);
// Waits until the last queued run has finished; true if it had to wait.
bool flush_work(work& w);
// If the delayed work's timer is armed, queue it now; then flush it.
bool flush_delayed_work(delayed_work& w);
// Removes a pending run (timer or queue) without waiting; true if one was.
bool cancel_delayed_work(delayed_work& w);
// Removes a pending run and waits for a running one; true if one was pending.
bool cancel_work_sync(work& w);
bool cancel_delayed_work_sync(delayed_work& w);

}  // namespace cowq
