// Telling the runtime that code is about to block.
//
// A worker that blocks in a system call, on a std::mutex or on a page fault
// holds its CPU's pool hostage: the pool believes a worker is running and
// wakes nobody for the items behind it. Marking the region hands the CPU to
// another worker at once, as the kernel does for a sleeping kworker. The
// runtime's watchdog finds unmarked blocking too, but only after a tick or
// two (runtime_options::watchdog); marking costs two short trips through the
// pool lock and reacts immediately.
#pragma once

#include <coroutine>
#include <cstdint>
#include <functional>
#include <type_traits>
#include <utility>

namespace cowq {

namespace detail {
struct worker;
}

// While a blocking_scope lives, the calling worker does not count as running
// in its pool: if work is pending, an idle worker is woken (or one created)
// to run it. On destruction the worker counts again; if that leaves the pool
// over-subscribed, it goes idle after its current item. Off a worker thread
// it does nothing. Scopes may nest; only the outermost one acts.
//
// Meant for plain code: a coroutine that suspends (co_await) inside a scope
// has left its worker, which counts again once the item ends; the scope's
// end then does nothing.
class blocking_scope {
 public:
  blocking_scope() noexcept;
  ~blocking_scope();
  blocking_scope(const blocking_scope&) = delete;
  blocking_scope& operator=(const blocking_scope&) = delete;

 private:
  detail::worker* worker_;  // null when this scope does nothing
  std::uint64_t item_;      // the worker's item sequence at entry
};

// co_await blocking(fn): calls fn() right here, on the current worker, inside
// a blocking_scope, and gives its result (or rethrows its exception).
template <typename F>
auto blocking(F&& fn) {
  using result = std::invoke_result_t<std::decay_t<F>&>;
  struct awaiter {
    std::decay_t<F> fn_;
    bool await_ready() const noexcept { return true; }
    void await_suspend(std::coroutine_handle<>) const noexcept {}
    result await_resume() {
      blocking_scope scope;
      return std::invoke(fn_);
    }
  };
  return awaiter{std::forward<F>(fn)};
}

}  // namespace cowq
