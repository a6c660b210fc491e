// The I/O awaitable every operation is built on: io_uring underneath.
#pragma once

#include <cowq/task.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <stop_token>
#include <system_error>

namespace cowq {

// What an operation produced: an error, or a value (bytes moved, or the
// new file descriptor for accept and open). Errors are the kernel's
// -errno, mapped 1:1 onto std::system_category; a cancelled operation
// gives std::errc::operation_canceled and one that hit its timeout
// std::errc::timed_out.
struct io_result {
  std::error_code error;
  std::size_t value = 0;
  explicit operator bool() const noexcept { return !error; }
};

// How long an operation may take and what may cancel it. Converts from a
// std::stop_token or a duration, so `recv(buf, 5s)` and `recv(buf, tok)`
// both read naturally.
struct io_options {
  std::stop_token stop{};
  std::chrono::nanoseconds timeout{0};  // 0: none

  io_options() = default;
  io_options(std::stop_token s) noexcept : stop(std::move(s)) {}  // NOLINT: implicit by design
  template <typename Rep, typename Period>
  io_options(std::chrono::duration<Rep, Period> d) noexcept  // NOLINT
      : timeout(std::chrono::duration_cast<std::chrono::nanoseconds>(d)) {}
  template <typename Rep, typename Period>
  io_options(std::chrono::duration<Rep, Period> d, std::stop_token s) noexcept
      : stop(std::move(s)), timeout(std::chrono::duration_cast<std::chrono::nanoseconds>(d)) {}
};

namespace detail {

struct pool;

// An operation in flight. Lives in the awaitable, inside the awaiting
// coroutine's frame, so starting one allocates nothing. The CQE's result
// lands in res_ under the pool lock; the coroutine resumes as a work item
// on the pool and workqueue it started from.
struct io_op : resume_node {
  std::int32_t res_ = 0;
  std::uint32_t cqe_flags_ = 0;
  // Bit 0 submitted, bit 1 cancel requested. The submitter and a
  // canceller on another thread meet here (acq_rel on both sides).
  std::atomic<std::uint32_t> state_{0};
  pool* pool_ = nullptr;
  // A __kernel_timespec for the linked timeout; read by the kernel when
  // the SQE is submitted.
  struct {
    std::int64_t tv_sec;
    long long tv_nsec;
  } timeout_{};
  bool has_timeout_ = false;
  // Set when the op waits on a multishot request's queue rather than on a
  // request of its own (then cancelling it takes it off that queue). Set
  // before op_submitted is, and not changed after.
  void* multishot_ = nullptr;
  // Under the multishot request's pool lock: the op is that request's
  // waiter. Once it is not, the request's state may be gone, and a
  // canceller must not look at it.
  bool multishot_waiting_ = false;
};
// How an operation that a shared request may serve (multishot accept or
// receive) starts, decided under that request's pool lock: done (the
// result is in), waiting (for the request's next completion; the op may
// already be resuming on another worker), or with a request of its own.
enum class shared_start : std::uint8_t { done, waiting, own_request };

inline constexpr std::uint32_t op_submitted = 1;
inline constexpr std::uint32_t op_cancel_requested = 2;

enum class op_code : std::uint8_t {
  nop, read, write, readv, writev, recv, send, sendmsg, recvmsg,
  accept, connect, close, shutdown, fsync, openat, statx,
};

struct op_args {
  op_code code = op_code::nop;
  int fd = -1;
  void* buf = nullptr;
  std::uint32_t len = 0;
  std::uint64_t offset = 0;
  int flags = 0;
  const void* addr = nullptr;
  std::uint32_t addrlen = 0;
  void* addrlen_out = nullptr;
  const char* path = nullptr;
  unsigned mode = 0;
  unsigned mask = 0;
  void* extra = nullptr;
};

// Prepares the SQE(s) for op on the calling worker's pool ring; the worker
// submits them when its current item returns. Returns false when op
// completed at once (res_ set): cancelled before it started, or the
// runtime is shutting down. Throws std::logic_error off a worker.
bool submit_op(io_op* op, const op_args& args, std::chrono::nanoseconds timeout);
// Asks the kernel to cancel op (from any thread).
void cancel_op(io_op* op) noexcept;
io_result to_result(const io_op& op) noexcept;

struct op_canceller {
  io_op* op;
  void operator()() const noexcept { cancel_op(op); }
};

}  // namespace detail

// co_await-able form of one io_uring operation.
class [[nodiscard]] io_awaitable {
 public:
  io_awaitable(detail::op_args args, io_options opts) noexcept
      : args_(args), opts_(std::move(opts)) {}
  io_awaitable(const io_awaitable&) = delete;
  io_awaitable& operator=(const io_awaitable&) = delete;

  bool await_ready() noexcept {
    if (opts_.stop.stop_requested()) {
      op_.res_ = -ECANCELED;
      op_.state_.store(detail::op_cancel_requested, std::memory_order_relaxed);
      return true;
    }
    return false;
  }
  bool await_suspend(std::coroutine_handle<> h) {
    op_.handle_ = h;
    // Registered before submitting: a stop that races the submission is
    // seen by submit_op through the op's state.
    if (opts_.stop.stop_possible()) cancel_.emplace(opts_.stop, detail::op_canceller{&op_});
    return detail::submit_op(&op_, args_, opts_.timeout);
  }
  io_result await_resume() noexcept {
    // Waits for a canceller running on another thread to finish with op_.
    cancel_.reset();
    return detail::to_result(op_);
  }

 protected:
  // await_suspend for an operation a shared request may serve: start(op,
  // timeout) decides how it starts. Returns await_suspend's answer, or
  // nullopt when the op needs a request of its own.
  template <typename Start>
  std::optional<bool> suspend_shared(std::coroutine_handle<> h, Start&& start) {
    op_.handle_ = h;
    // Registered first, as for any operation: see await_suspend above.
    if (opts_.stop.stop_possible()) cancel_.emplace(opts_.stop, detail::op_canceller{&op_});
    switch (start(&op_, opts_.timeout)) {
      case detail::shared_start::waiting:
        return true;  // op_ may already be another worker's: not looked at
      case detail::shared_start::done:
        return false;
      case detail::shared_start::own_request:
        break;
    }
    cancel_.reset();
    return std::nullopt;
  }

  detail::io_op op_;
  detail::op_args args_;
  io_options opts_;
  std::optional<std::stop_callback<detail::op_canceller>> cancel_;
};

}  // namespace cowq
