// sync_wait: run a task on a runtime and block the calling thread for it.
#pragma once

#include <cowq/runtime.hpp>
#include <cowq/scheduling.hpp>
#include <cowq/task.hpp>

#include <atomic>
#include <exception>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <variant>

namespace cowq {
namespace detail {

template <typename T>
struct sync_state {
  using stored = std::conditional_t<
      std::is_void_v<T>, std::monostate,
      std::conditional_t<std::is_reference_v<T>, std::remove_reference_t<T>*, T>>;
  std::optional<stored> value;
  std::exception_ptr error;
  // 0 until the task finished. The release store in run_sync pairs with
  // the acquire load in sync_wait.
  std::atomic<std::uint32_t> done{0};
};

template <typename T>
task<void> run_sync(task<T> t, sync_state<T>* s) {
  try {
    if constexpr (std::is_void_v<T>) {
      co_await std::move(t);
    } else if constexpr (std::is_reference_v<T>) {
      s->value.emplace(std::addressof(co_await std::move(t)));
    } else {
      s->value.emplace(co_await std::move(t));
    }
  } catch (...) {
    s->error = std::current_exception();
  }
  s->done.store(1, std::memory_order_release);
  s->done.notify_one();
}

}  // namespace detail

// Runs t as an item of wq and blocks until it finishes; returns its result
// or rethrows its exception. Must not be called from a worker thread (it
// would block the worker that should run it): that throws std::logic_error.
template <typename T>
T sync_wait(workqueue& wq, task<T> t) {
  if (detail::on_worker_thread())
    throw std::logic_error("cowq::sync_wait called from a worker thread");
  detail::sync_state<T> s;
  wq.spawn(detail::run_sync(std::move(t), &s));
  while (s.done.load(std::memory_order_acquire) == 0) s.done.wait(0);
  if (s.error) std::rethrow_exception(s.error);
  if constexpr (std::is_void_v<T>) {
    return;
  } else if constexpr (std::is_reference_v<T>) {
    return **s.value;
  } else {
    return std::move(*s.value);
  }
}

template <typename T>
T sync_wait(runtime& rt, task<T> t) {
  return sync_wait(rt.system_wq(), std::move(t));
}

// Uses runtime::current(); throws std::logic_error when there is none.
template <typename T>
T sync_wait(task<T> t) {
  runtime* rt = runtime::current();
  if (rt == nullptr) throw std::logic_error("cowq::sync_wait: no runtime");
  return sync_wait(*rt, std::move(t));
}

}  // namespace cowq
