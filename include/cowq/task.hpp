// task<T>: the lazy, move-only coroutine type of cowq.
#pragma once

#include <cowq/work_node.hpp>

#include <cassert>
#include <cstddef>
#include <atomic>
#include <coroutine>
#include <exception>
#include <new>
#include <type_traits>
#include <utility>
#include <variant>

namespace cowq {

class workqueue;
template <typename T = void>
class task;

namespace detail {

// Bookkeeping of detached coroutines (defined in lib/): the count of live
// ones, and an exception that escaped one, logged and counted against the
// workqueue it was spawned on.
void detached_started(workqueue& wq) noexcept;
void detached_finished(workqueue* wq, std::exception_ptr e) noexcept;

// Runs a queued coroutine: the node sits in the promise of a spawned task or
// in an awaiter, followed by the handle to resume.
struct resume_node : work_node {
  std::coroutine_handle<> handle_;

  resume_node() noexcept { run_ = &resume_node::run; }
  static void run(work_node* n) noexcept {
    static_cast<resume_node*>(n)->handle_.resume();
  }
};

// Coroutine frames come from a per-thread cache (lib/util/frame_cache.cpp).
void* frame_alloc(std::size_t size);
void frame_free(void* p, std::size_t size) noexcept;

// when_all's children report here; the last one resumes the parent.
//
// Children run inline on the starter's thread until they first suspend, and
// most finish right there (a child that never waits on anything). Those are
// counted in a plain field: only a child that finishes on another thread,
// or on this one after the start, pays for the shared atomic.
struct join_latch {
  // children + 1 for the starter, so a child that finishes while the
  // starter is still starting the others cannot resume the parent early.
  // acq_rel: every decrement publishes its child's result to whoever
  // brings the count to zero.
  std::atomic<std::size_t> count{0};
  std::coroutine_handle<> parent;
  // Children that finished inside the starter's loop. Only the starting
  // thread touches it, and only while starting() points at this latch.
  std::size_t finished_inline = 0;

  // The latch whose children this thread is starting right now, if any. A
  // child that sees its own latch here is on the starter's thread inside
  // the loop: no other thread can see that value, since each thread has its
  // own and a live latch's address is unique.
  static join_latch*& starting() noexcept {
    static thread_local join_latch* current = nullptr;
    return current;
  }

  std::coroutine_handle<> arrive() noexcept {
    if (starting() == this) {
      ++finished_inline;
      return std::noop_coroutine();  // back into the starter's loop
    }
    return count.fetch_sub(1, std::memory_order_acq_rel) == 1 ? parent
                                                               : std::noop_coroutine();
  }
};

class promise_base {
 public:
  static void* operator new(std::size_t size) { return frame_alloc(size); }
  static void operator delete(void* p, std::size_t size) noexcept { frame_free(p, size); }

  std::suspend_always initial_suspend() noexcept { return {}; }

  struct final_awaiter {
    bool await_ready() const noexcept { return false; }
    template <typename Promise>
    std::coroutine_handle<> await_suspend(
        std::coroutine_handle<Promise> h) noexcept {
      promise_base& p = h.promise();
      if (p.detached_wq_ != nullptr) {
        // Nobody awaits a spawned task: it owns its frame and reports what
        // escaped it rather than letting it vanish.
        workqueue* wq = p.detached_wq_;
        std::exception_ptr e = std::move(p.exception_);
        h.destroy();
        detached_finished(wq, std::move(e));
        return std::noop_coroutine();
      }
      // A child of when_all: the last one to finish goes on with the parent.
      if (p.latch_ != nullptr) return p.latch_->arrive();
      // Symmetric transfer: a chain of completions runs in constant stack.
      return p.continuation_;
    }
    void await_resume() noexcept {}
  };
  final_awaiter final_suspend() noexcept { return {}; }

  void unhandled_exception() noexcept { exception_ = std::current_exception(); }

  void rethrow_if_exception() {
    if (exception_) std::rethrow_exception(exception_);
  }

  std::coroutine_handle<> continuation_ = std::noop_coroutine();
  std::exception_ptr exception_;
  // Set by workqueue::spawn: the frame then destroys itself at the end.
  workqueue* detached_wq_ = nullptr;
  // Set by when_all, which keeps the task and takes its result after.
  join_latch* latch_ = nullptr;
  // The work item that starts a spawned task; unused for awaited tasks.
  resume_node start_node_;
};

template <typename T>
class promise final : public promise_base {
 public:
  task<T> get_return_object() noexcept;

  template <typename U>
    requires std::is_convertible_v<U&&, T>
  void return_value(U&& v) noexcept(std::is_nothrow_constructible_v<T, U&&>) {
    value_.template emplace<1>(std::forward<U>(v));
  }

  T& result() & {
    rethrow_if_exception();
    return std::get<1>(value_);
  }
  // By value: `for (auto x : co_await make_task())` would otherwise bind a
  // reference into a frame destroyed at the end of the range initialiser.
  T result() && {
    rethrow_if_exception();
    return std::move(std::get<1>(value_));
  }

 private:
  std::variant<std::monostate, T> value_;
};

template <typename T>
class promise<T&> final : public promise_base {
 public:
  task<T&> get_return_object() noexcept;
  void return_value(T& v) noexcept { value_ = std::addressof(v); }
  T& result() {
    rethrow_if_exception();
    return *value_;
  }

 private:
  T* value_ = nullptr;
};

template <>
class promise<void> final : public promise_base {
 public:
  task<void> get_return_object() noexcept;
  void return_void() noexcept {}
  void result() { rethrow_if_exception(); }
};

}  // namespace detail

// A lazily started coroutine producing a T.
//
// Nothing runs until the task is co_awaited (the awaiting coroutine is
// suspended and the task runs in its place, on the same worker, and resumes
// it by symmetric transfer when done) or handed to workqueue::spawn.
// An exception thrown in the body is rethrown by co_await.
//
// Thread safety: a task is a unique owner of its frame; it may be moved
// between threads but not used from two at once.
template <typename T>
class [[nodiscard]] task {
 public:
  using promise_type = detail::promise<T>;
  using handle_type = std::coroutine_handle<promise_type>;
  using value_type = T;

  task() noexcept = default;
  explicit task(handle_type h) noexcept : h_(h) {}
  task(task&& o) noexcept : h_(std::exchange(o.h_, {})) {}
  task& operator=(task&& o) noexcept {
    if (this != &o) {
      destroy();
      h_ = std::exchange(o.h_, {});
    }
    return *this;
  }
  task(const task&) = delete;
  task& operator=(const task&) = delete;
  ~task() { destroy(); }

  bool valid() const noexcept { return static_cast<bool>(h_); }
  bool done() const noexcept { return h_ && h_.done(); }

  handle_type handle() const noexcept { return h_; }

  // Gives up ownership of the frame (used by spawn and the combinators).
  handle_type release() noexcept { return std::exchange(h_, {}); }

  auto operator co_await() && noexcept { return awaiter{h_}; }
  auto operator co_await() & noexcept { return awaiter{h_}; }

 private:
  struct awaiter {
    handle_type h_;
    bool await_ready() const noexcept { return !h_ || h_.done(); }
    std::coroutine_handle<> await_suspend(
        std::coroutine_handle<> awaiting) noexcept {
      h_.promise().continuation_ = awaiting;
      return h_;
    }
    decltype(auto) await_resume() {
      assert(h_ && "co_await on an empty task");
      if constexpr (std::is_void_v<T>) {
        h_.promise().result();
      } else if constexpr (std::is_reference_v<T>) {
        return h_.promise().result();
      } else {
        return std::move(h_.promise()).result();
      }
    }
  };

  void destroy() noexcept {
    if (h_) h_.destroy();
  }

  handle_type h_;
};

namespace detail {
template <typename T>
task<T> promise<T>::get_return_object() noexcept {
  return task<T>{std::coroutine_handle<promise<T>>::from_promise(*this)};
}
template <typename T>
task<T&> promise<T&>::get_return_object() noexcept {
  return task<T&>{std::coroutine_handle<promise<T&>>::from_promise(*this)};
}
inline task<void> promise<void>::get_return_object() noexcept {
  return task<void>{std::coroutine_handle<promise<void>>::from_promise(*this)};
}
}  // namespace detail

}  // namespace cowq
