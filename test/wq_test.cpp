// Workqueues: max_active and the inactive list, ordered queues, flush,
// drain, destroy.
#include <cowq/cowq.hpp>

#include "test_util.hpp"
#include "wq/wq_impl.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <poll.h>
#include <unistd.h>
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

// --- spawns an unbound pool's worker keeps until its item returns --------
//
// A worker of an unbound pool keeps the coroutines its item spawns onto
// the same workqueue in an outbox, while every worker the pool wants is
// running. These tests fill the pool with spinning items first, so the
// spawns go there, and check so.

cowq::detail::pwq& only_pwq(cowq::workqueue& wq) {
  return *wq.impl().pwqs_.front();
}

// Spinning items are no CPU hogs here: the watchdog would take them out of
// nr_running, and the pool would no longer be full.
cowq::runtime_options no_hog_detection() {
  cowq::runtime_options o;
  o.watchdog.cpu_hog_threshold = std::chrono::minutes(10);
  return o;
}

// Items that spin until released, enough to leave the pool room for one.
struct filler {
  std::atomic<bool> release{false};
  std::atomic<int> started{0};
  int count = 0;

  cowq::task<void> spin() {
    started.fetch_add(1);
    // Outlasts every bounded wait of the tests, which would otherwise pass
    // late, with its worker free again.
    const auto end = std::chrono::steady_clock::now() + 2 * cowq::test::kDeadline;
    while (!release.load() && std::chrono::steady_clock::now() < end) {
    }
    finished.fetch_add(1);
    co_return;
  }
  std::atomic<int> finished{0};
  bool fill(cowq::workqueue& wq) {
    count = only_pwq(wq).pool_->concurrency_ - 1;
    for (int i = 0; i < count; ++i) wq.spawn(spin());
    return wait_until([&] { return started.load() == count; });
  }
};

// Waits for pred busily, without sleeping: an item that slept would look
// blocked to the watchdog. Bounded by the tests' deadline.
bool spin_until(const std::function<bool()>& pred) {
  const auto end = std::chrono::steady_clock::now() + cowq::test::kDeadline;
  while (std::chrono::steady_clock::now() < end)
    if (pred()) return true;
  return pred();
}

bool in_outbox(int n) {
  return cowq::detail::current_worker()->outbox_len_.load() == n;
}

// A flush that begins after a spawn, while the spawning item still runs,
// waits for the spawned coroutine even though it is linked later.
TEST(workqueue_outbox, a_flush_begun_after_a_spawn_waits_for_it) {
  cowq::runtime rt(no_hog_detection());
  if (rt.cpus().size() < 2) GTEST_SKIP() << "an unbound pool on one CPU keeps no outbox";
  auto& wq = rt.alloc_workqueue("outbox_flush", cowq::wq::unbound);
  auto& q = only_pwq(wq);
  filler f;
  ASSERT_TRUE(f.fill(wq));
  std::atomic<bool> spawned{false};
  std::atomic<bool> kept{false};
  std::atomic<bool> child_done{false};
  std::atomic<bool> parent_saw_flush{false};
  std::atomic<bool> flush_returned{false};
  auto child = [&]() -> cowq::task<void> {
    // A flush that wrongly left this out returns meanwhile: give it the
    // time to (bounded, since a right one waits for this).
    const auto end = std::chrono::steady_clock::now() + 300ms;
    while (!flush_returned.load() && std::chrono::steady_clock::now() < end) {
    }
    child_done.store(true);
    co_return;
  };
  auto parent = [&]() -> cowq::task<void> {
    wq.spawn(child());
    kept.store(in_outbox(1));
    spawned.store(true);
    // Busy, not asleep, so the item is still running when the flush flips
    // the colour.
    parent_saw_flush.store(spin_until([&] {
      std::lock_guard g(q.pool_->lock_);
      return q.flush_color_ >= 0;
    }));
    f.release.store(true);
    co_return;
  };
  wq.spawn(parent());
  ASSERT_TRUE(wait_until([&] { return spawned.load(); }));
  wq.flush();
  const bool done_at_return = child_done.load();
  flush_returned.store(true);
  EXPECT_TRUE(kept.load()) << "the spawn did not go to the outbox";
  EXPECT_TRUE(parent_saw_flush.load());
  EXPECT_TRUE(done_at_return) << "flush returned before a coroutine spawned before it";
  wq.flush();
}

// A coroutine that spawns and then blocks without saying so: the watchdog
// finds it blocked, and what it spawned runs on another worker meanwhile.
TEST(workqueue_outbox, a_spawner_that_blocks_does_not_hold_its_spawns) {
  cowq::runtime rt(no_hog_detection());
  if (rt.cpus().size() < 2) GTEST_SKIP() << "an unbound pool on one CPU keeps no outbox";
  auto& wq = rt.alloc_workqueue("outbox_block", cowq::wq::unbound);
  filler f;
  ASSERT_TRUE(f.fill(wq));
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  std::atomic<bool> kept{false};
  std::atomic<bool> read_done{false};
  std::atomic<bool> read_ok{false};
  auto child = [&]() -> cowq::task<void> {
    const char c = 'x';
    EXPECT_EQ(::write(fds[1], &c, 1), 1);
    co_return;
  };
  auto parent = [&]() -> cowq::task<void> {
    wq.spawn(child());
    kept.store(in_outbox(1));
    // Blocks until the child ran (bounded, so a failure does not hang).
    pollfd p{fds[0], POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(std::chrono::milliseconds(cowq::test::kDeadline).count())) ==
        1) {
      char c;
      read_ok.store(::read(fds[0], &c, 1) == 1);
    }
    read_done.store(true);
    co_return;
  };
  wq.spawn(parent());
  EXPECT_TRUE(wait_until([&] { return read_done.load(); }, cowq::test::kDeadline + 5s));
  f.release.store(true);
  wq.flush();
  EXPECT_TRUE(kept.load()) << "the spawn did not go to the outbox";
  EXPECT_TRUE(read_ok.load()) << "the spawned coroutine waited for its blocked spawner";
  ::close(fds[0]);
  ::close(fds[1]);
}

// An item that spawns many keeps running while they start elsewhere: the
// outbox is handed over in batches, and a worker that runs out of work
// takes what is left in it.
TEST(workqueue_outbox, spawns_start_while_their_spawner_still_runs) {
  cowq::runtime rt(no_hog_detection());
  if (rt.cpus().size() < 2) GTEST_SKIP() << "an unbound pool on one CPU keeps no outbox";
  auto& wq = rt.alloc_workqueue("outbox_batches", cowq::wq::unbound);
  filler f;
  ASSERT_TRUE(f.fill(wq));
  // Not a multiple of the batch: some are left in the outbox.
  constexpr int kChildren = 70;
  std::atomic<int> started{0};
  std::atomic<bool> kept{false};
  std::atomic<bool> all_seen{false};
  auto child = [&]() -> cowq::task<void> {
    started.fetch_add(1);
    co_return;
  };
  auto parent = [&]() -> cowq::task<void> {
    wq.spawn(child());
    kept.store(in_outbox(1));
    for (int i = 1; i < kChildren; ++i) wq.spawn(child());
    // The filler's worker, once free, runs out of work with some of them
    // still in this worker's outbox.
    f.release.store(true);
    all_seen.store(spin_until([&] { return started.load() == kChildren; }));
    co_return;
  };
  wq.spawn(parent());
  wq.flush();
  EXPECT_TRUE(kept.load()) << "the spawns did not go to the outbox";
  EXPECT_TRUE(all_seen.load()) << started.load() << " of " << kChildren
                               << " started while the spawner ran";
  EXPECT_EQ(started.load(), kChildren);
}

// Once the pool stops being full (here the filler's worker goes idle), a
// spawn goes straight to the worklist: with the watchdog off, nothing else
// would ever take it from an outbox while its spawner keeps running.
TEST(workqueue_outbox, spawns_after_the_pool_stops_being_full_are_not_kept) {
  cowq::runtime_options o = no_hog_detection();
  o.watchdog.detect_blocking = false;
  cowq::runtime rt(o);
  if (rt.cpus().size() < 2) GTEST_SKIP() << "an unbound pool on one CPU keeps no outbox";
  auto& wq = rt.alloc_workqueue("outbox_not_full", cowq::wq::unbound);
  filler f;
  ASSERT_TRUE(f.fill(wq));
  std::atomic<bool> kept_first{false};
  std::atomic<bool> closed{false};
  std::atomic<int> started{0};
  std::atomic<bool> second_seen{false};
  auto child = [&]() -> cowq::task<void> {
    started.fetch_add(1);
    co_return;
  };
  auto parent = [&]() -> cowq::task<void> {
    auto* self = cowq::detail::current_worker();
    wq.spawn(child());
    kept_first.store(in_outbox(1));
    // The filler ends; its worker, out of work, takes the first spawn and
    // closes this worker's outbox before going idle.
    f.release.store(true);
    closed.store(wait_until([&] {
      std::lock_guard g(self->outbox_lock_);
      return !self->outbox_open_;
    }));
    wq.spawn(child());
    second_seen.store(spin_until([&] { return started.load() == 2; }));
    co_return;
  };
  wq.spawn(parent());
  wq.flush();
  EXPECT_TRUE(kept_first.load()) << "the first spawn did not go to the outbox";
  EXPECT_TRUE(closed.load()) << "the outbox stayed open with a worker idle";
  EXPECT_TRUE(second_seen.load()) << "a spawn waited in the outbox while a worker was idle";
}

}  // namespace
