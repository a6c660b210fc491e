// Workqueues: max_active and the inactive list, ordered queues, flush,
// drain, destroy.
#include <cowq/cowq.hpp>

#include "test_util.hpp"
#include "wq/wq_impl.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using cowq::test::wait_until;

namespace {

struct concurrency_probe {
  std::atomic<int> now{0};
  std::atomic<int> peak{0};
  void enter() {
    int n = now.fetch_add(1) + 1;
    int p = peak.load();
    while (n > p && !peak.compare_exchange_weak(p, n)) {}
  }
  void leave() { now.fetch_sub(1); }
};

TEST(workqueue, max_active_is_never_exceeded_and_is_reached) {
  cowq::runtime rt;
  // cpu_intensive: items do not count as running, so only max_active holds
  // them back.
  auto& wq = rt.alloc_workqueue("limited", cowq::wq::unbound | cowq::wq::cpu_intensive, 3);
  concurrency_probe probe;
  std::atomic<bool> reached{false};
  std::atomic<int> done{0};
  std::atomic<int> inactive_seen{0};
  constexpr int kItems = 40;
  for (int i = 0; i < kItems; ++i)
    wq.spawn(cowq::test::run([&]() -> cowq::task<void> {
      probe.enter();
      if (probe.peak.load() == 3) reached = true;
      EXPECT_TRUE(wait_until([&] { return reached.load(); }));
      probe.leave();
      done.fetch_add(1);
      co_return;
    }));
  auto stats = rt.stats();
  if (auto* s = stats.find_workqueue("limited")) inactive_seen = s->inactive;
  ASSERT_TRUE(wait_until([&] { return done.load() == kItems; }));
  EXPECT_EQ(probe.peak.load(), 3);
  EXPECT_GT(inactive_seen.load(), 0);
  wq.drain();
  auto after = *rt.stats().find_workqueue("limited");
  EXPECT_EQ(after.active, 0);
  EXPECT_EQ(after.inactive, 0);
  EXPECT_EQ(after.completed, static_cast<std::uint64_t>(kItems));
}

TEST(workqueue, ordered_runs_one_at_a_time_in_queueing_order) {
  cowq::runtime rt;
  auto& wq = rt.alloc_workqueue("strand", cowq::wq::ordered);
  EXPECT_EQ(wq.max_active(), 1);
  concurrency_probe probe;
  std::vector<int> order;  // the strand serialises every access
  constexpr int kItems = 3000;
  // Queued from two threads in turn, handing off through a flag, so the
  // queueing order is known.
  std::atomic<int> next{0};
  auto producer = [&](int parity) {
    while (true) {
      int i = next.load();
      if (i >= kItems) return;
      if (i % 2 != parity) continue;
      wq.spawn(cowq::test::run([&probe, &order, i]() -> cowq::task<void> {
        probe.enter();
        order.push_back(i);
        probe.leave();
        co_return;
      }));
      next.store(i + 1);
    }
  };
  std::thread a(producer, 0), b(producer, 1);
  a.join();
  b.join();
  wq.drain();
  ASSERT_EQ(order.size(), static_cast<std::size_t>(kItems));
  for (int i = 0; i < kItems; ++i) ASSERT_EQ(order[static_cast<std::size_t>(i)], i);
  EXPECT_EQ(probe.peak.load(), 1);
}

TEST(workqueue, flush_waits_for_earlier_items_only) {
  cowq::runtime rt;
  auto& wq = rt.alloc_workqueue("flushme", cowq::wq::unbound | cowq::wq::cpu_intensive);
  std::atomic<bool> release_first{false}, release_second{false};
  std::atomic<bool> first_done{false}, second_started{false};
  wq.spawn(cowq::test::run([&]() -> cowq::task<void> {
    EXPECT_TRUE(wait_until([&] { return release_first.load(); }));
    first_done = true;
    co_return;
  }));
  std::atomic<bool> flushed{false};
  std::thread flusher([&] {
    wq.flush();
    // Everything queued before the flush has finished by now.
    EXPECT_TRUE(first_done.load());
    flushed = true;
  });
  // The flusher is inside flush() once it waits for a pool workqueue.
  ASSERT_TRUE(wait_until([&] { return wq.impl().pwqs_to_flush_.load() == 1; }));
  // Queued after the flush began: it must not be waited for.
  wq.spawn(cowq::test::run([&]() -> cowq::task<void> {
    second_started = true;
    EXPECT_TRUE(wait_until([&] { return release_second.load(); }));
    co_return;
  }));
  ASSERT_TRUE(wait_until([&] { return second_started.load(); }));
  EXPECT_FALSE(flushed.load());
  release_first = true;
  ASSERT_TRUE(wait_until([&] { return flushed.load(); }));
  flusher.join();
  EXPECT_FALSE(release_second.load());
  release_second = true;
  wq.flush();
  EXPECT_EQ(rt.stats().find_workqueue("flushme")->completed, 2u);
}

TEST(workqueue, flush_from_its_own_item_is_refused) {
  cowq::runtime rt;
  auto& wq = rt.alloc_workqueue("selfflush");
  auto t = [&]() -> cowq::task<bool> {
    try {
      wq.flush();
    } catch (const std::logic_error&) {
      co_return true;
    }
    co_return false;
  };
  EXPECT_TRUE(cowq::sync_wait(wq, t()));
}

cowq::task<void> chain(cowq::workqueue& wq, std::atomic<int>& count, int left) {
  count.fetch_add(1);
  if (left > 0) wq.spawn(chain(wq, count, left - 1));
  co_return;
}

TEST(workqueue, drain_waits_for_chained_items_and_refuses_outsiders) {
  cowq::runtime rt;
  auto& wq = rt.alloc_workqueue("chain");
  std::atomic<int> count{0};
  std::atomic<bool> hold{true};
  std::atomic<bool> holding{false};
  wq.spawn(cowq::test::run([&]() -> cowq::task<void> {
    holding = true;
    EXPECT_TRUE(wait_until([&] { return !hold.load(); }));
    co_return;
  }));
  ASSERT_TRUE(wait_until([&] { return holding.load(); }));
  wq.spawn(chain(wq, count, 200));
  std::atomic<bool> drained{false};
  std::thread drainer([&] {
    wq.drain();
    drained = true;
  });
  // While draining, a queue from outside the workqueue's items is refused.
  ASSERT_TRUE(wait_until([&] {
    try {
      wq.spawn([]() -> cowq::task<void> { co_return; }());
      return false;
    } catch (const std::logic_error&) {
      return true;
    }
  }));
  hold = false;
  drainer.join();
  EXPECT_TRUE(drained.load());
  EXPECT_EQ(count.load(), 201);
  // After the drain it accepts work again.
  wq.spawn([]() -> cowq::task<void> { co_return; }());
  wq.drain();
}

TEST(workqueue, destroy_drains_then_refuses) {
  cowq::runtime rt;
  auto& wq = rt.alloc_workqueue("doomed");
  std::atomic<int> ran{0};
  for (int i = 0; i < 1000; ++i)
    wq.spawn(cowq::test::run([&]() -> cowq::task<void> {
      ran.fetch_add(1);
      co_return;
    }));
  rt.destroy_workqueue(wq);
  EXPECT_EQ(ran.load(), 1000);
  EXPECT_THROW(wq.spawn([]() -> cowq::task<void> { co_return; }()), std::logic_error);
  EXPECT_EQ(rt.stats().find_workqueue("doomed"), nullptr);
  EXPECT_THROW(rt.destroy_workqueue(rt.system_wq()), std::invalid_argument);
}

TEST(workqueue, alloc_validates_max_active) {
  cowq::runtime rt;
  EXPECT_THROW(rt.alloc_workqueue("bad", cowq::wq_flags::none, -1), std::invalid_argument);
  EXPECT_THROW(rt.alloc_workqueue("bad", cowq::wq_flags::none, cowq::wq_max_active + 1),
               std::invalid_argument);
  EXPECT_EQ(rt.alloc_workqueue("dfl").max_active(), cowq::wq_dfl_active);
}

TEST(workqueue, default_workqueues_exist) {
  cowq::runtime rt;
  EXPECT_EQ(rt.system_wq().name(), "events");
  EXPECT_TRUE(cowq::has(rt.system_highpri_wq().flags(), cowq::wq::highpri));
  EXPECT_TRUE(cowq::has(rt.system_unbound_wq().flags(), cowq::wq::unbound));
  EXPECT_EQ(rt.system_long_wq().name(), "events_long");
}

}  // namespace
