// Asio interop, both ways: Asio work on cowq workqueues (asio_executor),
// and Asio operations awaited from cowq tasks (use_task).
#include <cowq/asio.hpp>
#include <cowq/cowq.hpp>

#include "test_util.hpp"

#include <asio/any_io_executor.hpp>
#include <asio/co_spawn.hpp>
#include <asio/connect.hpp>
#include <asio/detached.hpp>
#include <asio/dispatch.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/post.hpp>
#include <asio/read.hpp>
#include <asio/steady_timer.hpp>
#include <asio/strand.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <optional>
#include <string>
#include <thread>

using namespace std::chrono_literals;
using cowq::test::wait_until;

namespace {

// An io_context run by a thread of its own for the length of a test.
struct asio_thread {
  asio::io_context io;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> guard{
      asio::make_work_guard(io)};
  std::thread thread{[this] { io.run(); }};
  ~asio_thread() {
    guard.reset();
    io.stop();
    thread.join();
  }
};

TEST(asio_executor, meets_asios_executor_requirements) {
  static_assert(asio::execution::is_executor<cowq::asio_executor>::value);
  static_assert(asio::is_executor<cowq::asio_executor>::value ||
                asio::execution::is_executor<cowq::asio_executor>::value);
  cowq::runtime rt;
  cowq::asio_executor ex(rt.system_wq());
  // Converts to the type-erased executor Asio's I/O objects and coroutines use.
  asio::any_io_executor any = ex;
  std::atomic<bool> ran{false};
  asio::post(any, [&] {
    EXPECT_TRUE(cowq::detail::on_worker_thread());
    ran = true;
  });
  EXPECT_TRUE(wait_until([&] { return ran.load(); }));
  EXPECT_EQ(ex, cowq::asio_executor(rt.system_wq()));
  EXPECT_NE(ex, cowq::asio_executor(rt.system_unbound_wq()));
}

TEST(asio_executor, post_runs_functions_as_items_of_the_workqueue) {
  cowq::runtime rt;
  auto& wq = rt.alloc_workqueue("asio_posts");
  cowq::asio_executor ex(wq);
  constexpr int n = 1000;
  std::atomic<int> ran{0};
  std::atomic<int> wrong_place{0};
  for (int i = 0; i < n; ++i)
    asio::post(ex, [&] {
      if (!ex.running_in_this_thread()) ++wrong_place;
      ++ran;
    });
  ASSERT_TRUE(wait_until([&] { return ran.load() == n; }));
  EXPECT_EQ(wrong_place.load(), 0);
  EXPECT_TRUE(wait_until([&] { return rt.stats().find_workqueue("asio_posts")->completed >= n; }));
}

TEST(asio_executor, dispatch_runs_inline_on_its_own_workqueue_and_post_never_does) {
  cowq::runtime rt;
  auto& wq = rt.alloc_workqueue("asio_dispatch");
  auto& other = rt.alloc_workqueue("asio_other");
  cowq::asio_executor ex(wq);
  struct seen {
    bool dispatched_inline = false;
    bool posted_inline = false;
    bool foreign_inline = false;
  };
  auto s = cowq::sync_wait(wq, [](cowq::asio_executor ex, cowq::workqueue& other) -> cowq::task<seen> {
    seen s;
    bool done = false;
    asio::dispatch(ex, [&] { done = true; });
    s.dispatched_inline = done;
    std::atomic<bool> posted{false};
    asio::post(ex, [&] { posted = true; });
    s.posted_inline = posted.load();
    // Another workqueue's executor queues even when dispatched.
    std::atomic<bool> foreign{false};
    asio::dispatch(cowq::asio_executor(other), [&] { foreign = true; });
    s.foreign_inline = foreign.load();
    co_await cowq::yield();
    while (!posted.load() || !foreign.load()) co_await cowq::yield();
    co_return s;
  }(ex, other));
  EXPECT_TRUE(s.dispatched_inline);
  EXPECT_FALSE(s.posted_inline);
  EXPECT_FALSE(s.foreign_inline);
}

TEST(asio_executor, a_strand_serialises_on_the_unbound_pool) {
  cowq::runtime rt;
  auto strand = asio::make_strand(cowq::asio_executor(rt.system_unbound_wq()));
  constexpr int per_thread = 2000;
  long counter = 0;  // guarded by the strand alone
  std::atomic<int> done{0};
  std::vector<std::thread> posters;
  for (int t = 0; t < 3; ++t)
    posters.emplace_back([&] {
      for (int i = 0; i < per_thread; ++i)
        asio::post(strand, [&] {
          ++counter;
          done.fetch_add(1, std::memory_order_release);
        });
    });
  for (auto& t : posters) t.join();
  ASSERT_TRUE(wait_until([&] { return done.load(std::memory_order_acquire) == 3 * per_thread; }));
  asio::post(strand, [&] { done.fetch_add(1, std::memory_order_release); });
  ASSERT_TRUE(wait_until([&] { return done.load(std::memory_order_acquire) == 3 * per_thread + 1; }));
  EXPECT_EQ(counter, 3 * per_thread);
}

asio::awaitable<int> asio_sum(int n) {
  auto ex = co_await asio::this_coro::executor;
  int sum = 0;
  for (int i = 1; i <= n; ++i) {
    co_await asio::post(ex, asio::use_awaitable);
    if (!cowq::detail::on_worker_thread()) throw std::runtime_error("left the cowq workers");
    sum += i;
  }
  co_return sum;
}

asio::awaitable<int> asio_throws() {
  co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
  throw std::runtime_error("thrown in an Asio coroutine");
}

TEST(asio_executor, co_spawn_runs_asio_coroutines_on_cowq_workers) {
  cowq::runtime rt;
  cowq::asio_executor ex(rt.system_wq());
  std::atomic<int> result{0};
  asio::co_spawn(ex, asio_sum(100), [&](std::exception_ptr e, int v) {
    EXPECT_FALSE(e);
    result = v;
  });
  ASSERT_TRUE(wait_until([&] { return result.load() != 0; }));
  EXPECT_EQ(result.load(), 5050);

  // And a cowq task awaits an Asio coroutine, its exceptions included.
  auto got = cowq::sync_wait(rt, [](cowq::asio_executor ex) -> cowq::task<std::string> {
    int v = co_await asio::co_spawn(ex, asio_sum(10), cowq::use_task);
    try {
      co_await asio::co_spawn(ex, asio_throws(), cowq::use_task);
    } catch (const std::runtime_error& e) {
      co_return std::to_string(v) + " " + e.what();
    }
    co_return "no exception";
  }(ex));
  EXPECT_EQ(got, "55 thrown in an Asio coroutine");
}

TEST(asio_executor, asio_io_objects_built_on_it_complete_on_the_workqueue) {
  cowq::runtime rt;
  auto& wq = rt.alloc_workqueue("asio_timers");
  cowq::asio_executor ex(wq);
  asio::steady_timer timer(ex, 5ms);
  std::atomic<bool> fired{false};
  std::atomic<bool> on_wq{false};
  timer.async_wait([&](std::error_code ec) {
    on_wq = !ec && ex.running_in_this_thread();
    fired = true;
  });
  ASSERT_TRUE(wait_until([&] { return fired.load(); }));
  EXPECT_TRUE(on_wq.load());
}

TEST(asio_executor, shutdown_with_an_asio_wait_pending_neither_hangs_nor_runs_it) {
  std::atomic<bool> ran{false};
  std::atomic<bool> destroyed{false};
  struct on_destroy {
    std::atomic<bool>* flag;
    on_destroy(std::atomic<bool>* f) : flag(f) {}
    on_destroy(on_destroy&& o) noexcept : flag(std::exchange(o.flag, nullptr)) {}
    ~on_destroy() {
      if (flag != nullptr) *flag = true;
    }
  };
  {
    cowq::runtime rt;
    cowq::asio_executor ex(rt.system_wq());
    asio::steady_timer timer(ex, std::chrono::hours(1));
    timer.async_wait([&, guard = on_destroy(&destroyed)](std::error_code) { ran = true; });
    rt.shutdown();
    EXPECT_TRUE(destroyed.load());
  }
  EXPECT_FALSE(ran.load());
}

TEST(asio_executor, functions_given_after_shutdown_are_dropped_not_thrown) {
  cowq::runtime rt;
  cowq::asio_executor ex(rt.system_wq());
  rt.shutdown();
  bool ran = false;
  EXPECT_NO_THROW(asio::post(ex, [&] { ran = true; }));
  EXPECT_FALSE(ran);
}

TEST(asio_executor, an_exception_from_a_posted_function_is_counted) {
  cowq::runtime rt;
  auto& wq = rt.alloc_workqueue("asio_throws");
  asio::post(cowq::asio_executor(wq), [] { throw std::runtime_error("posted and thrown"); });
  EXPECT_TRUE(wait_until(
      [&] { return rt.stats().find_workqueue("asio_throws")->escaped_exceptions == 1; }));
}

// --- use_task: Asio operations awaited from cowq tasks ---

TEST(use_task, a_timer_on_an_io_context_resumes_on_the_pool_it_left) {
  asio_thread a;
  cowq::runtime rt;
  auto& wq = rt.alloc_workqueue("timer_waiters");
  const auto io_thread = a.thread.get_id();
  auto r = cowq::sync_wait(wq, [](asio::io_context& io, cowq::workqueue& wq,
                                  std::thread::id io_thread) -> cowq::task<std::string> {
    const int cpu_before = ::sched_getcpu();
    asio::steady_timer t(io, 10ms);
    co_await t.async_wait(cowq::use_task);
    if (std::this_thread::get_id() == io_thread) co_return "resumed on Asio's thread";
    if (!cowq::asio_executor(wq).running_in_this_thread()) co_return "not on its workqueue";
    // A bound workqueue's items stay on their CPU's pool.
    if (::sched_getcpu() != cpu_before) co_return "moved CPU";
    co_return "ok";
  }(a.io, wq, io_thread));
  EXPECT_EQ(r, "ok");
}

TEST(use_task, errors_throw_and_as_tuple_returns_them) {
  asio_thread a;
  cowq::runtime rt;
  // A port nobody listens on: bound, then closed.
  unsigned short port;
  {
    asio::ip::tcp::acceptor probe(a.io, {asio::ip::make_address("127.0.0.1"), 0});
    port = probe.local_endpoint().port();
  }
  auto r = cowq::sync_wait(rt, [](asio::io_context& io, unsigned short port) -> cowq::task<std::string> {
    const asio::ip::tcp::endpoint nobody(asio::ip::make_address("127.0.0.1"), port);
    std::string out;
    asio::ip::tcp::socket s(io);
    try {
      co_await s.async_connect(nobody, cowq::use_task);
      out += "connected;";
    } catch (const std::system_error& e) {
      out += e.code() == asio::error::connection_refused ? "refused;" : e.code().message() + ";";
    }
    asio::ip::tcp::socket s2(io);
    auto [ec] = co_await s2.async_connect(nobody, asio::experimental::as_tuple(cowq::use_task));
    out += ec == asio::error::connection_refused ? "tuple refused" : "tuple " + ec.message();
    co_return out;
  }(a.io, port));
  EXPECT_EQ(r, "refused;tuple refused");
}

TEST(use_task, asio_sockets_and_the_resolver_from_a_cowq_task) {
  asio_thread a;
  cowq::runtime rt;
  // An Asio echo peer on the io_context's thread.
  asio::ip::tcp::acceptor acceptor(a.io, {asio::ip::make_address("127.0.0.1"), 0});
  const auto port = acceptor.local_endpoint().port();
  asio::co_spawn(a.io, [&]() -> asio::awaitable<void> {
    auto s = co_await acceptor.async_accept(asio::use_awaitable);
    char buf[4096];
    for (;;) {
      auto [ec, n] = co_await s.async_read_some(asio::buffer(buf),
                                               asio::experimental::as_tuple(asio::use_awaitable));
      if (ec) break;
      co_await asio::async_write(s, asio::buffer(buf, n), asio::use_awaitable);
    }
  }, asio::detached);

  auto echoed = cowq::sync_wait(rt, [](asio::io_context& io, unsigned short port) -> cowq::task<std::string> {
    asio::ip::tcp::resolver resolver(io);
    auto endpoints = co_await resolver.async_resolve("127.0.0.1", std::to_string(port), cowq::use_task);
    asio::ip::tcp::socket s(io);
    co_await asio::async_connect(s, endpoints, cowq::use_task);
    std::string msg(100'000, 'x');
    for (std::size_t i = 0; i < msg.size(); ++i) msg[i] = static_cast<char>('a' + i % 26);
    std::size_t sent = co_await asio::async_write(s, asio::buffer(msg), cowq::use_task);
    std::string back(sent, '\0');
    co_await asio::async_read(s, asio::buffer(back), cowq::use_task);
    co_return back == msg ? "same" : "different";
  }(a.io, port));
  EXPECT_EQ(echoed, "same");
}

TEST(use_task, a_destroyed_io_context_resumes_the_task_as_aborted) {
  cowq::runtime rt;
  auto& wq = rt.alloc_workqueue("abandoned");
  std::atomic<int> outcome{0};  // 1 aborted, 2 something else
  auto io = std::make_unique<asio::io_context>();
  auto timer = std::make_unique<asio::steady_timer>(*io, std::chrono::hours(1));
  wq.spawn([](asio::steady_timer& t, std::atomic<int>& outcome) -> cowq::task<void> {
    try {
      co_await t.async_wait(cowq::use_task);
      outcome = 2;
    } catch (const std::system_error& e) {
      outcome = e.code() == asio::error::operation_aborted ? 1 : 2;
    }
  }(*timer, outcome));
  // The item returns to its worker once the wait is under way.
  ASSERT_TRUE(wait_until([&] { return rt.stats().find_workqueue("abandoned")->completed >= 1; }));
  // Never run: destroying it destroys the pending handler.
  timer.reset();
  io.reset();
  ASSERT_TRUE(wait_until([&] { return outcome.load() != 0; }));
  EXPECT_EQ(outcome.load(), 1);
}

// Asynchronous operations of the simplest kinds: one that completes inside
// its initiation, and one whose initiation takes the handler and throws
// (the handler is destroyed unused while the exception unwinds).
template <typename Token>
auto async_at_once(int v, Token&& token) {
  return asio::async_initiate<Token, void(std::error_code, int)>(
      [](auto handler, int v) { std::move(handler)(std::error_code{}, v); }, token, v);
}
template <typename Token>
auto async_refused(Token&& token) {
  return asio::async_initiate<Token, void(std::error_code)>(
      [](auto handler) {
        auto taken = std::move(handler);
        throw std::runtime_error("initiation refused");
      },
      token);
}

TEST(use_task, an_operation_done_in_its_initiation_returns_and_one_that_throws_rethrows) {
  cowq::runtime rt;
  auto& wq = rt.alloc_workqueue("initiations");
  constexpr int kRounds = 1000;
  auto r = cowq::sync_wait(wq, []() -> cowq::task<long> {
    long sum = 0;
    for (int i = 0; i < kRounds; ++i) {
      sum += co_await async_at_once(i, cowq::use_task);
      try {
        co_await async_refused(cowq::use_task);
        sum -= 1'000'000;
      } catch (const std::runtime_error& e) {
        if (std::string(e.what()) == "initiation refused") sum += 1;
      } catch (...) {
        sum -= 1'000'000;  // operation_aborted: the handler's destruction won
      }
    }
    co_return sum;
  }());
  EXPECT_EQ(r, long(kRounds) * (kRounds - 1) / 2 + kRounds);
  // Each went on in place: the task's one item, nothing queued per call.
  // (Counted when queued, so before the task could finish; its completion
  // is counted after sync_wait may have returned.)
  EXPECT_EQ(rt.stats().find_workqueue("initiations")->queued, 1u);
}

TEST(use_task, many_tasks_await_one_io_context_at_once) {
  asio_thread a;
  cowq::runtime rt;
  constexpr int n = 500;
  std::atomic<int> done{0};
  for (int i = 0; i < n; ++i)
    rt.system_unbound_wq().spawn([](asio::io_context& io, std::atomic<int>& done, int i) -> cowq::task<void> {
      asio::steady_timer t(io, std::chrono::microseconds(i % 50));
      co_await t.async_wait(cowq::use_task);
      co_await asio::post(io, cowq::use_task);
      done.fetch_add(1);
    }(a.io, done, i));
  EXPECT_TRUE(wait_until([&] { return done.load() == n; }));
}

}  // namespace
