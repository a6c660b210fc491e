// A group of child coroutines that run as work items and are joined
// together, with one stop source for all of them.
//
//   cowq::task_group g(rt.system_wq());
//   for (auto& url : urls) g.spawn(fetch(url, g.stop_token()));
//   co_await g.join();  // all finished; rethrows the first exception
//
// Unlike when_all, whose children run inline on the awaiting worker until
// they first suspend, each child is spawned on the group's workqueue, so
// children run in parallel on the workqueue's pools from the start. The
// first child to throw requests stop on the group's token (children that
// pass it to their I/O, sleeps and waits end early) and its exception is
// rethrown by join(); later exceptions are dropped. A group must be joined
// before it is destroyed while children run (otherwise std::terminate, as
// for an unjoined std::thread).
#pragma once

#include <cowq/sync.hpp>
#include <cowq/task.hpp>
#include <cowq/workqueue.hpp>

#include <coroutine>
#include <cstddef>
#include <exception>
#include <mutex>
#include <stop_token>
#include <utility>

namespace cowq {

class task_group {
 public:
  explicit task_group(workqueue& wq) noexcept : wq_(&wq) {}
  task_group(const task_group&) = delete;
  task_group& operator=(const task_group&) = delete;
  ~task_group();

  // Spawns t on the group's workqueue as a child; its result is dropped.
  // Throws what workqueue::spawn throws (the child is then not counted).
  template <typename T>
  void spawn(task<T> t) {
    {
      std::lock_guard g(m_);
      ++live_;
    }
    try {
      wq_->spawn(run_child(this, std::move(t)));
    } catch (...) {
      child_done();
      throw;
    }
  }

  // The token every child should pass to what it waits on.
  std::stop_token stop_token() const noexcept { return stop_.get_token(); }
  void request_stop() noexcept { stop_.request_stop(); }
  // Children still running (a snapshot).
  std::size_t size() const noexcept;

  // co_await g.join(): waits until every child spawned so far has finished
  // (at once if none runs), then rethrows the first exception a child
  // threw since the last join. One joiner at a time.
  [[nodiscard]] auto join() noexcept { return join_awaiter{this, {}}; }

 private:
  template <typename T>
  static task<void> run_child(task_group* g, task<T> t) {
    try {
      co_await std::move(t);
    } catch (...) {
      g->child_failed(std::current_exception());
    }
    // The last use of g: the joiner may destroy the group once this returns.
    g->child_done();
  }

  struct join_awaiter {
    task_group* g_;
    detail::sync_waiter waiter_;
    bool await_ready() noexcept { return g_->size() == 0; }
    bool await_suspend(std::coroutine_handle<> h) { return g_->suspend_join(&waiter_, h); }
    void await_resume() { g_->rethrow_first(); }
  };

  void child_failed(std::exception_ptr e) noexcept;
  void child_done() noexcept;
  bool suspend_join(detail::sync_waiter* w, std::coroutine_handle<> h);
  void rethrow_first();

  workqueue* wq_;
  std::stop_source stop_;
  mutable std::mutex m_;
  std::size_t live_ = 0;                  // m_
  std::exception_ptr first_;              // m_
  detail::sync_waiter* joiner_ = nullptr;  // m_
};

}  // namespace cowq
