// Callable work items: pending, non-reentrancy, delayed work, flush and
// cancel, with the kernel's semantics.
#include <cowq/cowq.hpp>

#include "test_util.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <atomic>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using cowq::test::wait_until;
using cowq::test::this_tid;
using cowq::test::thread_state;
using cowq::test::voluntary_switches;

namespace {

TEST(work, queueing_a_pending_work_returns_false) {
  cowq::runtime rt({.cpus = {0}});
  std::atomic<bool> hold{true};
  std::atomic<bool> holding{false};
  // Occupy the only CPU's pool so the work stays pending.
  rt.system_wq().spawn(cowq::test::run([&]() -> cowq::task<void> {
    holding = true;
    while (hold.load()) std::this_thread::yield();
    co_return;
  }));
  ASSERT_TRUE(wait_until([&] { return holding.load(); }));
  std::atomic<int> runs{0};
  cowq::work w([&] { runs.fetch_add(1); });
  EXPECT_TRUE(cowq::queue_work(rt.system_wq(), w));
  EXPECT_TRUE(w.pending());
  EXPECT_FALSE(cowq::queue_work(rt.system_wq(), w));
  EXPECT_FALSE(cowq::queue_work(rt.system_wq(), w));
  hold = false;
  EXPECT_TRUE(cowq::flush_work(w));
  EXPECT_EQ(runs.load(), 1);
  EXPECT_FALSE(w.pending());
  EXPECT_FALSE(cowq::flush_work(w));  // nothing left to wait for
}

TEST(work, never_runs_concurrently_with_itself) {
  cowq::runtime rt;
  std::atomic<int> inside{0};
  std::atomic<int> overlaps{0};
  std::atomic<int> runs{0};
  cowq::work w([&] {
    if (inside.fetch_add(1) != 0) overlaps.fetch_add(1);
    for (int i = 0; i < 2000; ++i) asm volatile("" ::: "memory");
    inside.fetch_sub(1);
    runs.fetch_add(1);
  });
  // Two threads, each queueing onto a different CPU's pool when it can.
  std::atomic<bool> stop{false};
  auto hammer = [&](int cpu_index) {
    int cpu = rt.cpus()[static_cast<std::size_t>(cpu_index) % rt.cpus().size()];
    while (!stop.load()) {
      cowq::queue_work_on(cpu, rt.system_wq(), w);
      std::this_thread::yield();
    }
  };
  std::thread a(hammer, 0), b(hammer, 1);
  ASSERT_TRUE(wait_until([&] { return runs.load() >= 2000; }));
  stop = true;
  a.join();
  b.join();
  cowq::flush_work(w);
  EXPECT_EQ(overlaps.load(), 0);
}

TEST(work, queued_while_running_runs_again_after) {
  cowq::runtime rt;
  std::atomic<int> runs{0};
  std::atomic<bool> release{false};
  std::atomic<bool> started{false};
  cowq::work w([&] {
    started = true;
    if (runs.load() == 0) {
      EXPECT_TRUE(wait_until([&] { return release.load(); }));
    }
    runs.fetch_add(1);
  });
  ASSERT_TRUE(cowq::queue_work(rt.system_wq(), w));
  ASSERT_TRUE(wait_until([&] { return started.load(); }));
  // Running, not pending: queueing again succeeds, the run follows this one.
  EXPECT_FALSE(w.pending());
  EXPECT_TRUE(cowq::queue_work(rt.system_wq(), w));
  EXPECT_TRUE(w.pending());
  EXPECT_EQ(runs.load(), 0);
  release = true;
  ASSERT_TRUE(wait_until([&] { return runs.load() == 2; }));
  cowq::flush_work(w);
  EXPECT_EQ(runs.load(), 2);
}

TEST(work, flush_behind_a_running_run_waits_for_the_pending_one) {
  cowq::runtime rt;
  std::atomic<int> gate{0};  // how many runs may finish
  std::atomic<int> started{0};
  cowq::work w([&] {
    const int me = started.fetch_add(1);
    EXPECT_TRUE(wait_until([&] { return gate.load() > me; }));
  });
  ASSERT_TRUE(cowq::queue_work(rt.system_wq(), w));
  ASSERT_TRUE(wait_until([&] { return started.load() == 1; }));
  ASSERT_TRUE(cowq::queue_work(rt.system_wq(), w));  // pending behind the running run

  std::atomic<pid_t> flusher_tid{0};
  std::atomic<bool> flushed{false};
  std::thread flusher([&] {
    flusher_tid = this_tid();
    EXPECT_TRUE(cowq::flush_work(w));
    flushed = true;
  });
  ASSERT_TRUE(wait_until([&] { return flusher_tid.load() != 0 && thread_state(flusher_tid) == 'S'; }));
  const long slept = voluntary_switches(flusher_tid);
  // The first run ends and wakes the flusher; the second one starts. The
  // flusher must go back to sleep still registered for the second run.
  gate = 1;
  ASSERT_TRUE(wait_until([&] { return started.load() == 2; }));
  ASSERT_TRUE(wait_until([&] {
    return voluntary_switches(flusher_tid) > slept && thread_state(flusher_tid) == 'S';
  }));
  EXPECT_FALSE(flushed.load());
  gate = 2;
  if (!wait_until([&] { return flushed.load(); })) {
    // The flusher would sleep forever on a stack that is about to go.
    std::fprintf(stderr, "flush_work missed the end of the run it waited for\n");
    std::_Exit(1);
  }
  flusher.join();
}

TEST(work, exceptions_are_counted_against_the_workqueue) {
  cowq::runtime rt;
  auto& wq = rt.alloc_workqueue("throwing-work");
  cowq::work w([] { throw std::runtime_error("work failed"); });
  cowq::queue_work(wq, w);
  cowq::flush_work(w);
  EXPECT_EQ(rt.stats().find_workqueue("throwing-work")->escaped_exceptions, 1u);
}

TEST(work, flush_work_waits_for_the_running_run_to_finish) {
  cowq::runtime rt;
  std::atomic<bool> release{false};
  std::atomic<int> runs{0};
  cowq::work w([&] {
    EXPECT_TRUE(wait_until([&] { return release.load(); }));
    runs.fetch_add(1);
  });
  cowq::queue_work(rt.system_wq(), w);
  ASSERT_TRUE(wait_until([&] { return !w.pending(); }));  // it is running
  std::atomic<pid_t> flusher_tid{0};
  std::atomic<bool> flushed{false};
  std::thread t([&] {
    flusher_tid = cowq::test::this_tid();
    EXPECT_TRUE(cowq::flush_work(w));
    EXPECT_EQ(runs.load(), 1);
    flushed = true;
  });
  // Asleep in flush_work, waiting for the run.
  ASSERT_TRUE(wait_until([&] {
    return flusher_tid.load() != 0 && cowq::test::thread_state(flusher_tid.load()) == 'S';
  }));
  EXPECT_FALSE(flushed.load());
  release = true;
  t.join();
  EXPECT_TRUE(flushed.load());
}

TEST(work, cancel_work_sync_removes_the_pending_run_and_waits_for_the_running_one) {
  cowq::runtime rt({.cpus = {0}});
  auto& wq = rt.alloc_workqueue("cancel");
  std::atomic<bool> release{false};
  std::atomic<int> runs{0};
  std::atomic<bool> started{false};
  cowq::work w([&] {
    started = true;
    EXPECT_TRUE(wait_until([&] { return release.load(); }));
    runs.fetch_add(1);
  });
  auto active = [&] { return rt.stats().find_workqueue("cancel")->active; };
  cowq::queue_work(wq, w);
  ASSERT_TRUE(wait_until([&] { return started.load(); }));
  ASSERT_TRUE(cowq::queue_work(wq, w));  // pending behind the run
  EXPECT_EQ(active(), 2);
  std::atomic<bool> cancelled{false};
  std::atomic<bool> was_pending{false};
  std::thread t([&] {
    was_pending = cowq::cancel_work_sync(w);
    cancelled = true;
  });
  // The canceller took the pending run off the queue and holds the bit
  // while it waits for the running one.
  ASSERT_TRUE(wait_until([&] { return active() == 1; }));
  EXPECT_TRUE(w.pending());
  EXPECT_FALSE(cowq::queue_work(wq, w));
  EXPECT_FALSE(cancelled.load());
  release = true;
  t.join();
  EXPECT_TRUE(was_pending.load());
  EXPECT_EQ(runs.load(), 1);  // the pending run never happened
  EXPECT_FALSE(w.pending());
  wq.flush();
  EXPECT_EQ(runs.load(), 1);
  EXPECT_EQ(active(), 0);
  EXPECT_FALSE(cowq::cancel_work_sync(w));
}

TEST(work, self_flush_and_self_cancel_are_refused) {
  cowq::runtime rt;
  std::atomic<int> refused{0};
  cowq::work* self = nullptr;
  cowq::work w([&] {
    try {
      cowq::flush_work(*self);
    } catch (const std::logic_error&) {
      refused.fetch_add(1);
    }
    try {
      cowq::cancel_work_sync(*self);
    } catch (const std::logic_error&) {
      refused.fetch_add(1);
    }
  });
  self = &w;
  cowq::queue_work(rt.system_wq(), w);
  cowq::flush_work(w);
  EXPECT_EQ(refused.load(), 2);
}

TEST(delayed_work, fires_after_its_delay) {
  cowq::runtime rt;
  std::atomic<int> runs{0};
  cowq::delayed_work w([&] { runs.fetch_add(1); });
  auto start = std::chrono::steady_clock::now();
  std::atomic<std::chrono::steady_clock::rep> fired_at{0};
  cowq::delayed_work timed([&] {
    fired_at = (std::chrono::steady_clock::now() - start).count();
  });
  ASSERT_TRUE(cowq::queue_delayed_work(rt.system_wq(), timed, 20ms));
  EXPECT_FALSE(cowq::queue_delayed_work(rt.system_wq(), timed, 20ms));
  ASSERT_TRUE(wait_until([&] { return fired_at.load() != 0; }));
  EXPECT_GE(std::chrono::nanoseconds(fired_at.load()), 20ms);
  ASSERT_TRUE(cowq::queue_delayed_work(rt.system_wq(), w, 0ms));
  ASSERT_TRUE(wait_until([&] { return runs.load() == 1; }));
  cowq::flush_work(w);
}

TEST(delayed_work, cancel_before_it_fires) {
  cowq::runtime rt;
  std::atomic<int> runs{0};
  cowq::delayed_work w([&] { runs.fetch_add(1); });
  ASSERT_TRUE(cowq::queue_delayed_work(rt.system_wq(), w, 1h));
  EXPECT_TRUE(w.pending());
  EXPECT_TRUE(cowq::cancel_delayed_work(w));
  EXPECT_FALSE(w.pending());
  EXPECT_FALSE(cowq::cancel_delayed_work(w));
  EXPECT_FALSE(cowq::flush_work(w));
  // It can be queued again after the cancel.
  ASSERT_TRUE(cowq::queue_delayed_work(rt.system_wq(), w, 1h));
  EXPECT_TRUE(cowq::cancel_delayed_work_sync(w));
  rt.system_wq().flush();
  EXPECT_EQ(runs.load(), 0);
}

TEST(delayed_work, mod_delayed_work_rearms) {
  cowq::runtime rt;
  std::atomic<int> runs{0};
  cowq::delayed_work w([&] { runs.fetch_add(1); });
  ASSERT_TRUE(cowq::queue_delayed_work(rt.system_wq(), w, 1h));
  // Brought forward from an hour to now: it fires well within the deadline.
  EXPECT_TRUE(cowq::mod_delayed_work(rt.system_wq(), w, 1ms));
  ASSERT_TRUE(wait_until([&] { return runs.load() == 1; }));
  // Not pending: mod queues it anyway and says it was not pending.
  cowq::flush_work(w);
  EXPECT_FALSE(cowq::mod_delayed_work(rt.system_wq(), w, 0ms));
  ASSERT_TRUE(wait_until([&] { return runs.load() == 2; }));
  cowq::flush_work(w);
}

TEST(delayed_work, flush_delayed_work_runs_it_now) {
  cowq::runtime rt;
  std::atomic<int> runs{0};
  cowq::delayed_work w([&] { runs.fetch_add(1); });
  ASSERT_TRUE(cowq::queue_delayed_work(rt.system_wq(), w, 1h));
  EXPECT_TRUE(cowq::flush_delayed_work(w));
  EXPECT_EQ(runs.load(), 1);
}

TEST(delayed_work, many_timers_fire_in_deadline_order) {
  cowq::runtime rt({.cpus = {0}});
  auto& wq = rt.alloc_workqueue("timers-ordered", cowq::wq::ordered);
  constexpr int kN = 50;
  std::vector<int> order;  // ordered workqueue serialises
  std::vector<std::unique_ptr<cowq::delayed_work>> works;
  for (int i = 0; i < kN; ++i) {
    works.push_back(std::make_unique<cowq::delayed_work>([&order, i] { order.push_back(i); }));
  }
  // Queued in reverse so heap order, not queueing order, decides. Deadlines
  // are fixed against one start time: a delay measured from each call would
  // let a preempted loop swap two neighbours.
  const auto start = std::chrono::steady_clock::now();
  for (int i = kN - 1; i >= 0; --i) {
    const auto deadline = start + std::chrono::milliseconds(100 + 2 * i);
    const auto delay = std::chrono::duration_cast<std::chrono::nanoseconds>(
        deadline - std::chrono::steady_clock::now());
    EXPECT_GT(delay.count(), 0) << "queueing took longer than the first deadline";
    cowq::queue_delayed_work(wq, *works[static_cast<std::size_t>(i)], std::max(delay, 0ns));
  }
  ASSERT_TRUE(wait_until([&] { return !works.back()->pending(); }));
  for (auto& w : works) cowq::flush_work(*w);
  ASSERT_EQ(order.size(), static_cast<std::size_t>(kN));
  for (int i = 0; i < kN; ++i) EXPECT_EQ(order[static_cast<std::size_t>(i)], i);
}

}  // namespace
