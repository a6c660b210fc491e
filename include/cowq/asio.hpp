// Asio interop, both ways.
//
//   cowq::asio_executor ex(wq);                 Asio work on a cowq workqueue:
//   asio::post(ex, fn);                         asio::post / dispatch / defer
//   asio::co_spawn(ex, awaitable(), detached);  Asio coroutines on cowq workers
//
//   co_await timer.async_wait(cowq::use_task);  any Asio operation awaited from
//                                               a cowq task, which resumes on
//                                               the pool and workqueue it left
//
// Only this header brings Asio in; the rest of cowq does not depend on it.
#pragma once

// Asio 1.22 looks for C++20 coroutines in clang through the Coroutines TS
// header only, so with clang and libstdc++ asio::awaitable and co_spawn
// would be missing. The compiler has them: say so, before Asio's config
// is read. (Include this header before any of Asio's for it to count.)
#if defined(__clang__) && !defined(ASIO_HAS_CO_AWAIT) && !defined(ASIO_DISABLE_CO_AWAIT) && \
    defined(__cpp_impl_coroutine) && __cpp_impl_coroutine >= 201902L
#define ASIO_HAS_CO_AWAIT 1
#endif

#include <cowq/scheduling.hpp>
#include <cowq/task.hpp>
#include <cowq/workqueue.hpp>

#include <asio/async_result.hpp>
#include <asio/error.hpp>
#include <asio/execution.hpp>
#include <asio/execution_context.hpp>

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <exception>
#include <optional>
#include <stdexcept>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <utility>

namespace cowq {

namespace detail {
// Queues n, bound by bind_to_current(), from any thread, waking a worker
// of its pool if none runs. Returns false (and queues nothing) once the
// runtime has stopped its pools.
bool resume_bound(work_node* n) noexcept;
// True while the calling thread runs an item of wq.
bool running_item_of(const workqueue& wq) noexcept;
// The Asio execution context standing for wq's runtime: I/O objects built
// on an asio_executor keep their services here. Created on first use,
// shut down when the runtime shuts down.
asio::execution_context& asio_context_of(workqueue& wq);

// Queues the start of the detached task t on wq from any thread, Asio's
// own included, also while the runtime drains at shutdown (then Asio's
// completions still arrive). False, with t destroyed and the drop logged,
// once the workqueue is destroyed or the pools have stopped.
bool spawn_for_asio(workqueue& wq, task<void> t) noexcept;

template <typename F>
task<void> run_asio_function(F f) {
  std::move(f)();
  co_return;
}
}  // namespace detail

// An Asio executor that runs function objects as items of a cowq workqueue.
//
// It satisfies Asio's standard executor requirements (execution::executor,
// convertible to asio::any_io_executor), so asio::post, asio::dispatch,
// asio::defer, asio::co_spawn, strands and Asio's own I/O objects accept
// it. Each function runs as a detached coroutine item of the workqueue: an
// exception escaping it is logged and counted in the workqueue's stats,
// like any detached task's. Functions given after the runtime has stopped
// (or the workqueue was destroyed) are dropped, with a log line, as an
// io_context drops handlers once it is gone; execute() never throws
// that at Asio's threads. With blocking.possibly (the default, and what
// asio::dispatch asks for) a function given on an item of this same
// workqueue runs at once, inline; blocking.never (asio::post) always
// queues it.
//
// An Asio I/O object built on this executor (a steady_timer, a socket) has
// its reactor run by a thread of Asio's, as with asio::system_executor; its
// completion handlers run on the workqueue. Those services are shut down
// with the runtime, destroying any handler still pending.
//
// Thread safety: copies may be used from any thread.
class asio_executor {
 public:
  explicit asio_executor(workqueue& wq) noexcept : wq_(&wq) {}

  workqueue& queue() const noexcept { return *wq_; }

  asio::execution_context& query(asio::execution::context_t) const noexcept {
    return detail::asio_context_of(*wq_);
  }
  asio::execution::blocking_t query(asio::execution::blocking_t) const noexcept {
    return never_ ? asio::execution::blocking_t(asio::execution::blocking.never)
                  : asio::execution::blocking_t(asio::execution::blocking.possibly);
  }
  static constexpr asio::execution::relationship_t query(
      asio::execution::relationship_t) noexcept {
    return asio::execution::relationship.fork;
  }
  static constexpr asio::execution::outstanding_work_t query(
      asio::execution::outstanding_work_t) noexcept {
    // The runtime's own shutdown, not a work count, decides its lifetime.
    return asio::execution::outstanding_work.untracked;
  }

  asio_executor require(asio::execution::blocking_t::never_t) const noexcept {
    return with_never(true);
  }
  asio_executor require(asio::execution::blocking_t::possibly_t) const noexcept {
    return with_never(false);
  }

  template <typename F>
  void execute(F&& f) const {
    if (!never_ && detail::running_item_of(*wq_)) {
      std::forward<F>(f)();
      return;
    }
    detail::spawn_for_asio(*wq_, detail::run_asio_function(std::decay_t<F>(std::forward<F>(f))));
  }

  bool running_in_this_thread() const noexcept { return detail::running_item_of(*wq_); }

  friend bool operator==(const asio_executor& a, const asio_executor& b) noexcept {
    return a.wq_ == b.wq_ && a.never_ == b.never_;
  }
  friend bool operator!=(const asio_executor& a, const asio_executor& b) noexcept {
    return !(a == b);
  }

 private:
  asio_executor with_never(bool never) const noexcept {
    asio_executor e(*wq_);
    e.never_ = never;
    return e;
  }

  workqueue* wq_;
  bool never_ = false;
};

// The completion token that makes an Asio asynchronous operation awaitable
// from a cowq task:
//
//   std::size_t n = co_await sock.async_read_some(buf, cowq::use_task);
//
// The operation starts when it is awaited. Its handler only records the
// result and queues the task back onto the pool and workqueue it was
// running on, whatever thread Asio completes on; it has no associated
// executor of its own, so Asio calls it where the operation completes.
// Results follow asio::use_awaitable: a leading error_code (or
// exception_ptr) that is set is thrown as std::system_error (or rethrown);
// the remaining arguments are returned, as a value, a std::tuple, or
// nothing. Wrap the token in asio::experimental::as_tuple to receive the
// error code instead of catching it. An operation whose handler Asio
// destroys without calling it (its io_context destroyed) resumes the task
// with asio::error::operation_aborted.
//
// Must be awaited by a coroutine running on a cowq worker (a task spawned
// on a workqueue, not one under sync_wait directly); otherwise awaiting it
// throws std::logic_error. Keep the io_context whose operations cowq tasks
// await alive until the runtime is shut down, or stop it first.
struct use_task_t {
  constexpr use_task_t() noexcept = default;
};
inline constexpr use_task_t use_task{};

namespace detail {

template <typename... Args>
struct asio_results {
  using tuple = std::tuple<std::decay_t<Args>...>;

  // The arguments from index First on: nothing, one value, or a tuple.
  template <std::size_t First, std::size_t... I>
  static auto rest(tuple&& t, std::index_sequence<I...>) {
    if constexpr (sizeof...(I) == 0)
      return;
    else if constexpr (sizeof...(I) == 1)
      return std::move(std::get<First>(t));
    else
      return std::tuple<std::tuple_element_t<First + I, tuple>...>(
          std::move(std::get<First + I>(t))...);
  }

  // Throws a leading error, returns the rest.
  static auto unpack(tuple&& t) {
    if constexpr (sizeof...(Args) == 0) {
      return;
    } else {
      using first = std::tuple_element_t<0, tuple>;
      if constexpr (std::is_same_v<first, std::error_code>) {
        if (auto& ec = std::get<0>(t)) throw std::system_error(ec);
        return rest<1>(std::move(t), std::make_index_sequence<sizeof...(Args) - 1>{});
      } else if constexpr (std::is_same_v<first, std::exception_ptr>) {
        if (auto& ep = std::get<0>(t)) std::rethrow_exception(ep);
        return rest<1>(std::move(t), std::make_index_sequence<sizeof...(Args) - 1>{});
      } else {
        return rest<0>(std::move(t), std::make_index_sequence<sizeof...(Args)>{});
      }
    }
  }
};

// The awaitable an Asio initiating function returns for cowq::use_task.
// It lives in the awaiting coroutine's frame; its node is what is queued
// to resume the coroutine, so resuming allocates nothing of cowq's.
template <typename Initiation, typename ArgsTuple, typename... Args>
class asio_op : resume_node {
  using results = asio_results<Args...>;

 public:
  asio_op(Initiation init, ArgsTuple args) : init_(std::move(init)), args_(std::move(args)) {}
  asio_op(const asio_op&) = delete;

  bool await_ready() const noexcept { return false; }

  bool await_suspend(std::coroutine_handle<> h) {
    handle_ = h;
    if (!bind_to_current(this))
      throw std::logic_error(
          "cowq::use_task must be awaited by a coroutine running on a cowq worker");
    // Moved to this stack first: the operation may complete, and the
    // coroutine resume and free this awaiter, before the initiation returns.
    Initiation init = std::move(init_);
    ArgsTuple args = std::move(args_);
    try {
      std::apply([&](auto&&... a) { std::move(init)(handler{this}, std::move(a)...); },
                 std::move(args));
    } catch (...) {
      // The handler, destroyed unused while unwinding (or called before
      // the throw), saw initiating and left the coroutine to us: it goes on
      // here, with the exception.
      state_.store(thrown, std::memory_order_relaxed);
      throw;
    }
    // Acquire pairs with the handler's exchange: if it came first, its
    // result_ is in and the coroutine goes on at once, not queued.
    std::uint8_t expected = initiating;
    return state_.compare_exchange_strong(expected, suspended, std::memory_order_acq_rel);
  }

  auto await_resume() {
    // result_ was written before the resumption was queued (the pool lock
    // taken to queue it and to run it orders the two), or before the
    // handler's exchange that await_suspend's compare-exchange read.
    if (!result_) throw std::system_error(asio::error::operation_aborted);
    return results::unpack(std::move(*result_));
  }

 private:
  // Who resumes the coroutine. While the initiation runs, the awaiting
  // thread does: a handler called (or destroyed unused) meanwhile only
  // records it, and never queues a coroutine that has not suspended. Once
  // suspended, the handler queues it. The handler's exchange (acq_rel)
  // pairs with the initiator's compare-exchange: whichever is second sees
  // what the first wrote (result_, or that the coroutine waits).
  enum : std::uint8_t { initiating, suspended, handled, thrown };
  // The handler is done with the operation (result_ written, if any).
  void finish() noexcept {
    if (state_.exchange(handled, std::memory_order_acq_rel) == suspended) resume_bound(this);
  }

  // Move-only. Asio moves it into its operation and calls it once, or
  // destroys it uncalled when the operation is abandoned.
  class handler {
   public:
    explicit handler(asio_op* op) noexcept : op_(op) {}
    handler(handler&& o) noexcept : op_(std::exchange(o.op_, nullptr)) {}
    handler& operator=(handler&&) = delete;
    ~handler() {
      if (op_ != nullptr) op_->finish();
    }

    template <typename... Vals>
    void operator()(Vals&&... vals) {
      asio_op* op = std::exchange(op_, nullptr);
      if (op == nullptr) return;
      op->result_.emplace(std::forward<Vals>(vals)...);
      op->finish();
    }

   private:
    asio_op* op_;
  };

  Initiation init_;
  ArgsTuple args_;
  std::optional<typename results::tuple> result_;
  std::atomic<std::uint8_t> state_{initiating};
};

}  // namespace detail
}  // namespace cowq

namespace asio {

template <typename R, typename... Args>
class async_result<cowq::use_task_t, R(Args...)> {
 public:
  template <typename Initiation, typename... InitArgs>
  static auto initiate(Initiation&& init, cowq::use_task_t, InitArgs&&... args) {
    using args_tuple = std::tuple<std::decay_t<InitArgs>...>;
    return cowq::detail::asio_op<std::decay_t<Initiation>, args_tuple, Args...>(
        std::forward<Initiation>(init), args_tuple(std::forward<InitArgs>(args)...));
  }
};

}  // namespace asio
