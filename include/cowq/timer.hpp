// Sleeping coroutines: one heap per pool, one kernel wait per pool.
#pragma once

#include <cowq/io.hpp>
#include <cowq/work.hpp>

#include <chrono>
#include <optional>
#include <stop_token>
#include <system_error>

namespace cowq {

namespace detail {
struct sleep_timer : timer_node {
  io_op* op_ = nullptr;
};
// Arms t on the calling worker's pool; false if the deadline has passed.
bool start_sleep(io_op* op, sleep_timer* t, std::chrono::steady_clock::time_point deadline);
void cancel_sleep(io_op* op, sleep_timer* t) noexcept;

struct sleep_canceller {
  io_op* op;
  sleep_timer* t;
  void operator()() const noexcept { cancel_sleep(op, t); }
};
}  // namespace detail

// co_await sleep_until(tp): resumes on the same pool and workqueue at or
// after tp. Returns an empty error_code, or operation_canceled if the
// stop token was triggered first. A hundred thousand sleeping coroutines
// are a hundred thousand heap entries, not kernel timers.
class [[nodiscard]] sleep_awaitable {
 public:
  sleep_awaitable(std::chrono::steady_clock::time_point deadline, std::stop_token stop) noexcept
      : deadline_(deadline), stop_(std::move(stop)) {}
  sleep_awaitable(const sleep_awaitable&) = delete;

  bool await_ready() noexcept {
    if (stop_.stop_requested()) {
      op_.res_ = -ECANCELED;
      return true;
    }
    return false;
  }
  bool await_suspend(std::coroutine_handle<> h) {
    op_.handle_ = h;
    timer_.op_ = &op_;
    // Before arming: once armed, the timer may resume us on another worker.
    if (stop_.stop_possible()) cancel_.emplace(stop_, detail::sleep_canceller{&op_, &timer_});
    return detail::start_sleep(&op_, &timer_, deadline_);
  }
  std::error_code await_resume() noexcept {
    cancel_.reset();  // waits for a canceller running on another thread
    return op_.res_ == 0 ? std::error_code{} : std::make_error_code(std::errc::operation_canceled);
  }

 private:
  std::chrono::steady_clock::time_point deadline_;
  std::stop_token stop_;
  detail::io_op op_;
  detail::sleep_timer timer_;
  std::optional<std::stop_callback<detail::sleep_canceller>> cancel_;
};

inline sleep_awaitable sleep_until(std::chrono::steady_clock::time_point deadline,
                                   std::stop_token stop = {}) noexcept {
  return sleep_awaitable(deadline, std::move(stop));
}

template <typename Rep, typename Period>
sleep_awaitable sleep_for(std::chrono::duration<Rep, Period> d, std::stop_token stop = {}) noexcept {
  return sleep_awaitable(
      std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(d),
      std::move(stop));
}

}  // namespace cowq
