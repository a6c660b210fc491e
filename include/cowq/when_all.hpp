// when_all and when_any: wait for several tasks.
#pragma once

#include <cowq/task.hpp>

#include <array>
#include <iterator>
#include <atomic>
#include <memory>
#include <optional>
#include <tuple>
#include <utility>
#include <variant>
#include <vector>

namespace cowq {
namespace detail {

template <typename T>
using non_void_t = std::conditional_t<std::is_void_v<T>, std::monostate, T>;

// Starts every child in turn on the awaiting thread; each runs until it
// first suspends. The children's own final_suspend counts them down on
// latch (their promises point at it), so nothing is allocated beyond
// their frames. Children is a range of tasks or of handles.
template <typename Children>
struct join_awaiter {
  Children& children;
  join_latch& latch;
  bool await_ready() const noexcept { return std::empty(children); }
  bool await_suspend(std::coroutine_handle<> parent) {
    const std::size_t n = std::size(children);
    latch.count.store(n + 1, std::memory_order_relaxed);
    latch.parent = parent;
    latch.finished_inline = 0;
    join_latch*& starting = join_latch::starting();
    join_latch* const outer = std::exchange(starting, &latch);
    for (auto& c : children) start(c);
    starting = outer;
    const std::size_t done_here = latch.finished_inline;
    // All finished in the loop: nobody else ever touched the count.
    if (done_here == n) return false;
    // Last one out: every child already finished, so continue at once.
    return latch.count.fetch_sub(done_here + 1, std::memory_order_acq_rel) != done_here + 1;
  }
  void await_resume() const noexcept {}

 private:
  // noexcept: starting() must be put back after the loop, and a task keeps
  // its exceptions for take_result() anyway.
  void start(std::coroutine_handle<> h) noexcept { h.resume(); }
  template <typename T>
  void start(task<T>& t) noexcept {
    t.handle().promise().latch_ = &latch;
    t.handle().resume();
  }
};

template <typename T>
std::coroutine_handle<> join_child(task<T>& t, join_latch& latch) noexcept {
  t.handle().promise().latch_ = &latch;
  return t.handle();
}

template <typename T>
non_void_t<T> take_result(task<T>& t) {
  auto& p = t.handle().promise();
  if constexpr (std::is_void_v<T>) {
    p.result();
    return {};
  } else {
    return std::move(p).result();
  }
}

}  // namespace detail

// Runs every task concurrently (each starts in turn on the awaiting worker
// and runs until it first suspends) and completes when all have finished.
// Results come back in argument order, void as std::monostate; if any task
// threw, the first one's exception (in argument order) is rethrown after all
// have finished.
template <typename... T>
task<std::tuple<detail::non_void_t<T>...>> when_all(task<T>... ts) {
  detail::join_latch latch;
  std::array<std::coroutine_handle<>, sizeof...(T)> children{detail::join_child(ts, latch)...};
  co_await detail::join_awaiter<decltype(children)>{children, latch};
  co_return std::tuple<detail::non_void_t<T>...>{detail::take_result(ts)...};
}

template <typename T>
task<std::vector<detail::non_void_t<T>>> when_all(std::vector<task<T>> ts) {
  detail::join_latch latch;
  co_await detail::join_awaiter<std::vector<task<T>>>{ts, latch};
  std::vector<detail::non_void_t<T>> out;
  out.reserve(ts.size());
  for (auto& t : ts) out.push_back(detail::take_result(t));
  co_return out;
}

namespace detail {

template <typename R>
struct any_state {
  // The first child to finish exchanges won_ and owns index/value/error.
  std::atomic<bool> won_{false};
  // Bit 0: the starter finished starting; bit 1: the winner stored its
  // result. Whoever sets the second bit resumes the parent (acq_rel on both
  // sides publishes the winner's result to the parent).
  std::atomic<std::uint8_t> phase_{0};
  std::coroutine_handle<> parent_;
  std::size_t index_ = 0;
  std::optional<R> value_;
  std::exception_ptr error_;
};

// A self-destroying coroutine that runs one when_any child.
struct detached_runner {
  struct promise_type {
    detached_runner get_return_object() noexcept {
      return {std::coroutine_handle<promise_type>::from_promise(*this)};
    }
    std::suspend_always initial_suspend() noexcept { return {}; }
    std::suspend_never final_suspend() noexcept { return {}; }
    void return_void() noexcept {}
    void unhandled_exception() noexcept { std::terminate(); }
  };
  std::coroutine_handle<promise_type> h;
};

template <typename R, typename T>
detached_runner any_runner(task<T> t, std::shared_ptr<any_state<R>> s,
                           std::size_t index) {
  std::optional<R> v;
  std::exception_ptr e;
  try {
    if constexpr (std::is_void_v<T>) {
      co_await std::move(t);
      v.emplace();
    } else {
      v.emplace(co_await std::move(t));
    }
  } catch (...) {
    e = std::current_exception();
  }
  if (!s->won_.exchange(true, std::memory_order_acq_rel)) {
    s->index_ = index;
    s->value_ = std::move(v);
    s->error_ = e;
    if (s->phase_.fetch_or(2, std::memory_order_acq_rel) & 1) s->parent_.resume();
  }
}

template <typename R>
struct any_awaiter {
  std::shared_ptr<any_state<R>> s;
  std::vector<detached_runner> runners;
  bool await_ready() const noexcept { return runners.empty(); }
  bool await_suspend(std::coroutine_handle<> parent) {
    s->parent_ = parent;
    for (auto& r : runners) r.h.resume();
    return (s->phase_.fetch_or(1, std::memory_order_acq_rel) & 2) == 0;
  }
  void await_resume() const noexcept {}
};

}  // namespace detail

// Starts every task and completes as soon as the first one finishes, with
// its index and result (or rethrows its exception). The others keep running
// to completion in the background and their results are dropped: give them
// a std::stop_token to cancel their I/O if they should stop early, and do
// not let them refer to the awaiting coroutine's locals.
template <typename T>
task<std::pair<std::size_t, detail::non_void_t<T>>> when_any(
    std::vector<task<T>> ts) {
  using R = detail::non_void_t<T>;
  if (ts.empty()) throw std::invalid_argument("cowq::when_any of no tasks");
  detail::any_awaiter<R> aw{std::make_shared<detail::any_state<R>>(), {}};
  aw.runners.reserve(ts.size());
  for (std::size_t i = 0; i < ts.size(); ++i)
    aw.runners.push_back(detail::any_runner<R>(std::move(ts[i]), aw.s, i));
  co_await aw;
  if (aw.s->error_) std::rethrow_exception(aw.s->error_);
  co_return std::pair<std::size_t, R>{aw.s->index_, std::move(*aw.s->value_)};
}

// Variadic form of the same, for tasks of one result type.
template <typename T, typename... U>
  requires(std::is_same_v<T, U> && ...)
task<std::pair<std::size_t, detail::non_void_t<T>>> when_any(task<T> first,
                                                             task<U>... rest) {
  std::vector<task<T>> v;
  v.reserve(1 + sizeof...(U));
  v.push_back(std::move(first));
  (v.push_back(std::move(rest)), ...);
  co_return co_await when_any(std::move(v));
}

}  // namespace cowq
