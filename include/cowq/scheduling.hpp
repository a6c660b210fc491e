// Awaitables that move the current coroutine between work items.
#pragma once

#include <cowq/task.hpp>
#include <cowq/workqueue.hpp>

namespace cowq {
namespace detail {
// Queues n behind the current item's pool and workqueue; false when the
// caller is not running a work item on a worker (then nothing is queued).
bool requeue_current(work_node* n);
// Records in n where the current item runs (its pool and workqueue), so it
// can be queued back there later from any thread. False off a worker.
bool bind_to_current(work_node* n) noexcept;
bool on_worker_thread() noexcept;
}  // namespace detail

// co_await yield(): lets the pool's other pending items run first, then
// continues on the same pool and workqueue. Outside a worker it does nothing.
inline auto yield() noexcept {
  struct awaiter {
    detail::resume_node node_;
    bool await_ready() const noexcept { return false; }
    bool await_suspend(std::coroutine_handle<> h) {
      node_.handle_ = h;
      return detail::requeue_current(&node_);
    }
    void await_resume() const noexcept {}
  };
  return awaiter{};
}

// co_await schedule_on(wq): continues as an item of wq (on the caller's
// CPU for a bound workqueue). Throws if wq no longer accepts work.
inline auto schedule_on(workqueue& wq, int cpu = -1) noexcept {
  struct awaiter {
    workqueue* wq_;
    int cpu_;
    detail::resume_node node_{};
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) {
      node_.handle_ = h;
      detail::queue_node(*wq_, &node_, cpu_);
    }
    void await_resume() const noexcept {}
  };
  return awaiter{&wq, cpu};
}

}  // namespace cowq
