// task<T>, sync_wait, when_all, when_any, yield and schedule_on.
#include <cowq/cowq.hpp>

#include "pool/pool.hpp"
#include "runtime/runtime_impl.hpp"
#include "test_util.hpp"

#include <gtest/gtest.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <coroutine>
#include <stdexcept>
#include <string>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <utility>
#include <vector>

using namespace std::chrono_literals;

namespace {

cowq::task<int> value(int v) { co_return v; }
cowq::task<void> nothing() { co_return; }
cowq::task<int> thrower() {
  throw std::runtime_error("boom");
  co_return 0;
}

cowq::task<int> add_one(cowq::task<int> t) { co_return co_await std::move(t) + 1; }

TEST(task, is_lazy_and_returns_its_value) {
  cowq::runtime rt;
  bool started = false;
  auto t = [&]() -> cowq::task<int> {
    started = true;
    co_return 7;
  }();
  EXPECT_FALSE(started);
  EXPECT_EQ(cowq::sync_wait(rt, std::move(t)), 7);
  EXPECT_TRUE(started);
}

TEST(task, move_only_and_move_transfers_the_frame) {
  static_assert(!std::is_copy_constructible_v<cowq::task<int>>);
  cowq::runtime rt;
  auto a = value(3);
  auto b = std::move(a);
  EXPECT_FALSE(a.valid());
  EXPECT_TRUE(b.valid());
  EXPECT_EQ(cowq::sync_wait(rt, add_one(std::move(b))), 4);
}

TEST(task, exception_propagates_through_co_await) {
  cowq::runtime rt;
  auto outer = []() -> cowq::task<std::string> {
    try {
      co_await thrower();
    } catch (const std::runtime_error& e) {
      co_return std::string("caught ") + e.what();
    }
    co_return "not thrown";
  };
  EXPECT_EQ(cowq::sync_wait(rt, outer()), "caught boom");
  EXPECT_THROW(cowq::sync_wait(rt, thrower()), std::runtime_error);
}

TEST(task, result_of_a_temporary_outlives_the_task) {
  cowq::runtime rt;
  auto make = []() -> cowq::task<std::vector<int>> { co_return std::vector<int>{1, 2, 3, 4}; };
  auto sum = [&]() -> cowq::task<int> {
    int s = 0;
    // The task temporary dies at the end of the range initialiser.
    for (int x : co_await make()) s += x;
    co_return s;
  };
  EXPECT_EQ(cowq::sync_wait(rt, sum()), 10);
}

TEST(task, reference_results) {
  cowq::runtime rt;
  int x = 1;
  auto ref = [&]() -> cowq::task<int&> { co_return x; };
  int& r = cowq::sync_wait(rt, ref());
  EXPECT_EQ(&r, &x);
}

// GCC only emits the tail call behind symmetric transfer when optimising.
#if defined(__GNUC__) && !defined(__clang__) && !defined(__OPTIMIZE__)
#define COWQ_NO_TAIL_CALLS 1
#endif

cowq::task<long> nested(long n) {
  if (n == 0) co_return 0;
  co_return co_await nested(n - 1) + 1;
}

TEST(task, million_nested_awaits_do_not_grow_the_stack) {
#ifdef COWQ_NO_TAIL_CALLS
  GTEST_SKIP() << "GCC without optimisation does not make symmetric transfer a tail call";
#endif
  cowq::runtime rt;
  EXPECT_EQ(cowq::sync_wait(rt, nested(1'000'000)), 1'000'000);
}

TEST(task, million_sequential_synchronous_awaits) {
#ifdef COWQ_NO_TAIL_CALLS
  GTEST_SKIP() << "GCC without optimisation does not make symmetric transfer a tail call";
#endif
  cowq::runtime rt;
  auto loop = []() -> cowq::task<long> {
    long s = 0;
    for (int i = 0; i < 1'000'000; ++i) s += co_await value(1);
    co_return s;
  };
  EXPECT_EQ(cowq::sync_wait(rt, loop()), 1'000'000);
}

TEST(sync_wait, without_a_runtime_argument_uses_the_current_one) {
  cowq::runtime rt;
  EXPECT_EQ(cowq::runtime::current(), &rt);
  EXPECT_EQ(cowq::sync_wait(value(5)), 5);
}

TEST(sync_wait, from_a_worker_is_refused) {
  cowq::runtime rt;
  auto inner = [&]() -> cowq::task<bool> {
    try {
      cowq::sync_wait(rt, nothing());
    } catch (const std::logic_error&) {
      co_return true;
    }
    co_return false;
  };
  EXPECT_TRUE(cowq::sync_wait(rt, inner()));
}

// The same bodies on several executor shapes.
struct shape {
  const char* name;
  cowq::wq_flags flags;
  int max_active;
};

class on_shape : public ::testing::TestWithParam<shape> {
 protected:
  cowq::runtime rt_;
  cowq::workqueue& wq_ = rt_.alloc_workqueue(std::string("shape-") + GetParam().name,
                                             GetParam().flags, GetParam().max_active);
};

TEST_P(on_shape, spawn_runs_every_coroutine_once) {
  constexpr int kN = 5000;
  std::vector<std::atomic<int>> runs(kN);
  for (int i = 0; i < kN; ++i)
    wq_.spawn([](std::atomic<int>* r) -> cowq::task<void> {
      r->fetch_add(1);
      co_await cowq::yield();
      r->fetch_add(1);
    }(&runs[static_cast<std::size_t>(i)]));
  wq_.drain();
  for (auto& r : runs) ASSERT_EQ(r.load(), 2);
  auto s = rt_.stats();
  auto* ws = s.find_workqueue(wq_.name());
  ASSERT_NE(ws, nullptr);
  EXPECT_EQ(ws->completed, 2u * kN);
  EXPECT_EQ(ws->queued, 2u * kN);
  EXPECT_EQ(ws->active, 0);
}

TEST_P(on_shape, when_all_variadic_and_range) {
  auto t = []() -> cowq::task<int> {
    auto [a, b, c] = co_await cowq::when_all(value(1), nothing(), value(3));
    (void)b;
    std::vector<cowq::task<int>> v;
    for (int i = 0; i < 100; ++i) v.push_back(value(i));
    auto all = co_await cowq::when_all(std::move(v));
    int s = a + c;
    for (int x : all) s += x;
    co_return s;
  };
  EXPECT_EQ(cowq::sync_wait(wq_, t()), 4 + 4950);
}

TEST_P(on_shape, when_all_waits_for_suspended_children_and_rethrows) {
  auto slow = [](int v) -> cowq::task<int> {
    co_await cowq::yield();
    co_await cowq::yield();
    co_return v;
  };
  auto t = [&]() -> cowq::task<int> {
    auto [a, b] = co_await cowq::when_all(slow(2), slow(5));
    co_return a * b;
  };
  EXPECT_EQ(cowq::sync_wait(wq_, t()), 10);
  auto bad = [&]() -> cowq::task<void> { co_await cowq::when_all(slow(1), thrower()); };
  EXPECT_THROW(cowq::sync_wait(wq_, bad()), std::runtime_error);
}

// Children that finish inside the start loop are counted without the shared
// atomic; the others with it. Mixed in one call, every way a child can end:
// at once, on another pool's thread, inline on the starter's thread but
// resumed by a sibling, and inside a nested when_all. The parent must
// resume exactly once, after all of them, with every result.
TEST_P(on_shape, when_all_mixes_children_that_finish_inline_and_elsewhere) {
  auto& away = rt_.alloc_workqueue("away", cowq::wq::unbound);
  // A child parks its handle here; a later sibling resumes it inline, so it
  // finishes on the starter's thread while the start loop still runs.
  std::coroutine_handle<> parked;
  struct park {
    std::coroutine_handle<>& slot;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) noexcept { slot = h; }
    void await_resume() const noexcept {}
  };
  auto parks = [&](int v) -> cowq::task<int> {
    co_await park{parked};
    co_return v;
  };
  auto releases = [&](int v) -> cowq::task<int> {
    std::exchange(parked, {}).resume();
    co_return v;
  };
  auto hops = [&](int v) -> cowq::task<int> {
    co_await cowq::schedule_on(away);
    co_return v;
  };
  auto nested = [&](int v) -> cowq::task<int> {
    auto [a, b] = co_await cowq::when_all(value(v), hops(v));
    co_return a + b;
  };
  auto t = [&]() -> cowq::task<long> {
    long total = 0;
    for (int round = 0; round < 200; ++round) {
      std::vector<cowq::task<int>> v;
      v.push_back(value(1));
      v.push_back(parks(10));
      v.push_back(hops(100));
      v.push_back(releases(1000));
      v.push_back(nested(10000));
      v.push_back(value(100000));
      for (int x : co_await cowq::when_all(std::move(v))) total += x;
      auto [a, b] = co_await cowq::when_all(hops(1), value(2));
      total += a + b;
    }
    co_return total;
  };
  EXPECT_EQ(cowq::sync_wait(wq_, t()), 200L * (121111 + 3));
}

TEST_P(on_shape, when_any_returns_the_first_to_finish) {
  std::atomic<bool> release{false};
  auto fast = []() -> cowq::task<int> { co_return 1; };
  auto held = [&]() -> cowq::task<int> {
    while (!release.load()) co_await cowq::yield();
    co_return 2;
  };
  auto t = [&]() -> cowq::task<std::pair<std::size_t, int>> {
    co_return co_await cowq::when_any(held(), fast());
  };
  auto [index, v] = cowq::sync_wait(wq_, t());
  EXPECT_EQ(index, 1u);
  EXPECT_EQ(v, 1);
  release = true;
  wq_.drain();
}

INSTANTIATE_TEST_SUITE_P(
    shapes, on_shape,
    ::testing::Values(shape{"bound", cowq::wq_flags::none, 0},
                      shape{"highpri", cowq::wq::highpri, 0},
                      shape{"unbound", cowq::wq::unbound, 0},
                      shape{"ordered", cowq::wq::ordered, 0},
                      shape{"cpu_intensive", cowq::wq::cpu_intensive, 0},
                      shape{"max_active_1", cowq::wq_flags::none, 1}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(yield, interleaves_coroutines_on_one_cpu) {
  cowq::runtime rt({.cpus = {0}});
  std::string trace;  // touched only by the pool's one running worker
  auto worker = [&](char c) -> cowq::task<void> {
    for (int i = 0; i < 3; ++i) {
      trace += c;
      co_await cowq::yield();
    }
  };
  auto parent = [&]() -> cowq::task<void> {
    rt.system_wq().spawn(worker('a'));
    rt.system_wq().spawn(worker('b'));
    co_return;
  };
  cowq::sync_wait(rt, parent());
  rt.system_wq().drain();
  EXPECT_EQ(trace, "ababab");
}

// A coroutine yielding in a loop, alone on its pool, goes on without a trip
// round the worklist; these check that whatever else comes for the pool
// still gets its turn at once, and that every continuation is counted.
namespace yielding {

struct spinner {
  std::atomic<long> yields{0};  // written by the spinner only
  std::atomic<bool> stop{false};
  std::atomic<bool> done{false};
  cowq::task<void> run() {
    while (!stop.load(std::memory_order_relaxed)) {
      yields.store(yields.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      co_await cowq::yield();
    }
    done = true;
  }
  bool started() const { return yields.load() > 1000; }
};

}  // namespace yielding

TEST(yield, counts_every_continuation_as_an_item_queued_and_completed) {
  cowq::runtime rt({.cpus = {cowq::test::first_allowed_cpu()}});
  auto& wq = rt.alloc_workqueue("yielder");
  constexpr int kYields = 1000;
  wq.spawn([]() -> cowq::task<void> {
    for (int i = 0; i < kYields; ++i) co_await cowq::yield();
  }());
  wq.drain();
  const auto s = rt.stats();
  const auto* ws = s.find_workqueue("yielder");
  ASSERT_NE(ws, nullptr);
  EXPECT_EQ(ws->queued, kYields + 1u);
  EXPECT_EQ(ws->completed, kYields + 1u);
  EXPECT_EQ(ws->active, 0);
}

TEST(yield, an_item_queued_while_a_coroutine_keeps_yielding_runs_within_a_few_yields) {
  cowq::runtime rt({.cpus = {cowq::test::first_allowed_cpu()}});
  yielding::spinner sp;
  rt.system_wq().spawn(sp.run());
  ASSERT_TRUE(cowq::test::wait_until([&] { return sp.started(); }));
  // The pool's one running worker is the spinner's; the item waits for its
  // next yield. Counted after queueing, so a delay on this thread can only
  // make the figure smaller.
  long worst = 0;
  for (int round = 0; round < 20; ++round) {
    std::atomic<long> seen{-1};
    cowq::work item([&] { seen = sp.yields.load(); });
    ASSERT_TRUE(cowq::queue_work(rt.system_wq(), item));
    const long at_queue = sp.yields.load();
    ASSERT_TRUE(cowq::test::wait_until([&] { return seen.load() >= 0; }));
    cowq::flush_work(item);
    worst = std::max(worst, seen.load() - at_queue);
  }
  sp.stop = true;
  ASSERT_TRUE(cowq::test::wait_until([&] { return sp.done.load(); }));
  EXPECT_LE(worst, 16) << "yields that went on while an item waited";
}

TEST(yield, a_sleeper_and_a_recv_on_the_same_pool_finish_while_a_coroutine_keeps_yielding) {
  cowq::runtime rt({.cpus = {cowq::test::first_allowed_cpu()}});
  yielding::spinner sp;
  rt.system_wq().spawn(sp.run());
  ASSERT_TRUE(cowq::test::wait_until([&] { return sp.started(); }));
  std::atomic<bool> slept{false};
  rt.system_wq().spawn([](std::atomic<bool>& f) -> cowq::task<void> {
    co_await cowq::sleep_for(1ms);
    f = true;
  }(slept));
  EXPECT_TRUE(cowq::test::wait_until([&] { return slept.load(); }));
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  std::atomic<bool> got{false};
  rt.system_wq().spawn(cowq::test::recv_one_byte(sv[0], got));
  ASSERT_EQ(::write(sv[1], "x", 1), 1);
  EXPECT_TRUE(cowq::test::wait_until([&] { return got.load(); }));
  ::close(sv[1]);
  sp.stop = true;
  ASSERT_TRUE(cowq::test::wait_until([&] { return sp.done.load(); }));
}

TEST(yield, a_flush_returns_while_a_coroutine_of_the_workqueue_keeps_yielding) {
  cowq::runtime rt({.cpus = {cowq::test::first_allowed_cpu()}});
  auto& wq = rt.alloc_workqueue("flushed");
  yielding::spinner sp;
  wq.spawn(sp.run());
  ASSERT_TRUE(cowq::test::wait_until([&] { return sp.started(); }));
  // Each continuation is a new item, queued after the flush began: the
  // flush waits for none of them.
  std::atomic<bool> flushed{false};
  std::thread t([&] {
    wq.flush();
    flushed = true;
  });
  EXPECT_TRUE(cowq::test::wait_until([&] { return flushed.load(); }));
  sp.stop = true;
  t.join();
  ASSERT_TRUE(cowq::test::wait_until([&] { return sp.done.load(); }));
}

// A blocking scope left open across a yield ends with the item (as at any
// suspension); a scope opened after it counts as a region of its own.
TEST(yield, a_blocking_scope_open_across_it_does_not_swallow_the_next_one) {
  cowq::runtime rt({.cpus = {cowq::test::first_allowed_cpu()}});
  auto& wq = rt.alloc_workqueue("scoped");
  const auto before = rt.stats().pools[0].blocking_regions;
  cowq::sync_wait(wq, []() -> cowq::task<void> {
    {
      cowq::blocking_scope open_across;
      co_await cowq::yield();
    }
    cowq::blocking_scope next;
    co_return;
  }());
  EXPECT_EQ(rt.stats().pools[0].blocking_regions - before, 2u);
}

// A worker that ends a blocking scope counts again, one too many for the
// CPU: a worker running yields next to it gives way at its next yield (it
// goes idle, its continuation queued) rather than after a run of them.
namespace yielding {

int nr_running(cowq::detail::pool* p) {
  std::lock_guard g(p->lock_);
  return p->nr_running_;
}

// Blocks in a marked region until *release, then counts how many more
// times sp yields until sp's worker has gone idle.
cowq::task<void> back_from_block(cowq::detail::pool* p, std::atomic<std::uint32_t>* release,
                                 std::atomic<bool>* blocked, std::atomic<long>* extra,
                                 spinner* sp) {
  {
    cowq::blocking_scope s;
    *blocked = true;
    release->wait(0);
  }
  const long at_rejoin = sp->yields.load();
  const auto end = std::chrono::steady_clock::now() + cowq::test::kDeadline;
  // Gives the CPU up while it looks: both workers are pinned to one CPU,
  // and a busy loop here could keep the spinner's worker off it until the
  // watchdog calls this item a hog, with no chance to go idle.
  while (nr_running(p) > 1 && std::chrono::steady_clock::now() < end) ::sched_yield();
  *extra = sp->yields.load() - at_rejoin;
  co_return;
}

}  // namespace yielding

TEST(yield, a_yielding_worker_gives_way_at_once_to_a_worker_back_from_a_blocking_scope) {
  cowq::runtime rt({.cpus = {cowq::test::first_allowed_cpu()}});
  cowq::detail::pool* p = rt.impl().bound_[0][0];
  long worst = 0;
  for (int round = 0; round < 8; ++round) {
    yielding::spinner sp;
    rt.system_wq().spawn(sp.run());
    ASSERT_TRUE(cowq::test::wait_until([&] { return sp.started(); }));
    std::atomic<std::uint32_t> release{0};
    std::atomic<bool> blocked{false};
    std::atomic<long> extra{-1};
    rt.system_wq().spawn(yielding::back_from_block(p, &release, &blocked, &extra, &sp));
    // The spinner goes on on another worker while the item blocks.
    ASSERT_TRUE(cowq::test::wait_until([&] { return blocked.load(); }));
    const long at_block = sp.yields.load();
    ASSERT_TRUE(cowq::test::wait_until([&] { return sp.yields.load() > at_block + 1000; }));
    release = 1;
    release.notify_one();
    ASSERT_TRUE(cowq::test::wait_until([&] { return extra.load() >= 0; }));
    worst = std::max(worst, extra.load());
    sp.stop = true;
    ASSERT_TRUE(cowq::test::wait_until([&] { return sp.done.load(); }));
  }
  EXPECT_LE(worst, 16) << "yields the spinner made beside the worker back from its block";
}

TEST(schedule_on, hops_between_workqueues_and_pools) {
  cowq::runtime rt;
  auto& unbound = rt.alloc_workqueue("hop", cowq::wq::unbound);
  auto t = [&]() -> cowq::task<std::pair<int, int>> {
    int before = cowq::detail::current_worker()->pool_->cpu_;
    co_await cowq::schedule_on(unbound);
    int after = cowq::detail::current_worker()->pool_->cpu_;
    co_return std::pair{before, after};
  };
  auto [before, after] = cowq::sync_wait(rt, t());
  EXPECT_GE(before, 0);
  EXPECT_EQ(after, -1);
}

// spawn() from a worker stays on its CPU; spawn_on() is the way to another.
TEST(spawn_on, starts_the_coroutine_on_the_pool_of_that_cpu) {
  cowq::runtime rt;
  auto& wq = rt.system_wq();
  auto cpus = rt.cpus();
  std::vector<std::atomic<int>> ran_on(cpus.size());
  for (auto& r : ran_on) r.store(-2);
  auto child = [](std::atomic<int>* out) -> cowq::task<void> {
    out->store(cowq::detail::current_worker()->pool_->cpu_);
    co_return;
  };
  // From a worker of the first CPU, onto every CPU.
  auto parent = [&]() -> cowq::task<void> {
    co_await cowq::schedule_on(wq, cpus[0]);
    for (std::size_t i = 0; i < cpus.size(); ++i) wq.spawn_on(cpus[i], child(&ran_on[i]));
  };
  cowq::sync_wait(rt, parent());
  ASSERT_TRUE(cowq::test::wait_until([&] {
    for (auto& r : ran_on)
      if (r.load() == -2) return false;
    return true;
  }));
  for (std::size_t i = 0; i < cpus.size(); ++i) EXPECT_EQ(ran_on[i].load(), cpus[i]);

  // A CPU the runtime does not use is refused, and the task is not leaked.
  EXPECT_THROW(wq.spawn_on(CPU_SETSIZE + 1, child(&ran_on[0])), std::invalid_argument);
  wq.flush();
  EXPECT_EQ(rt.stats().live_coroutines, 0);
}

TEST(detached, escaped_exception_is_counted_not_fatal) {
  cowq::runtime rt;
  auto& wq = rt.alloc_workqueue("throws");
  for (int i = 0; i < 3; ++i) wq.spawn(thrower());
  wq.drain();
  auto s = rt.stats();
  EXPECT_EQ(s.find_workqueue("throws")->escaped_exceptions, 3u);
  EXPECT_EQ(s.live_coroutines, 0);
}

}  // namespace
