// Semaphore, mutex, event and channel: waiting suspends the coroutine, and
// whoever lets it go queues it back on a worker. Real threads throughout:
// the runtime's per-CPU and unbound pools, and plain threads that release.
#include <cowq/cowq.hpp>
#include <cowq/sync.hpp>

#include "test_util.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <stop_token>
#include <thread>
#include <vector>

using cowq::test::wait_until;

namespace {

// Alternates between the per-CPU and the unbound workqueue, so waiters and
// wakers sit on different pools and threads.
cowq::workqueue& some_wq(cowq::runtime& rt, int i) {
  return i % 2 == 0 ? rt.system_wq() : rt.system_unbound_wq();
}

void store_max(std::atomic<int>& peak, int v) {
  int p = peak.load();
  while (v > p && !peak.compare_exchange_weak(p, v)) {
  }
}

}  // namespace

TEST(semaphore, bounds_how_many_hold_a_permit_and_lets_every_waiter_through) {
  cowq::runtime rt;
  cowq::semaphore sem(3);
  cowq::event go;
  std::atomic<int> inside{0}, peak{0}, done{0};
  constexpr int kCoroutines = 20;
  for (int i = 0; i < kCoroutines; ++i) {
    some_wq(rt, i).spawn(cowq::test::run([&]() -> cowq::task<void> {
      co_await sem.acquire();
      store_max(peak, ++inside);
      // Holds the permit until the test says so: the other 17 must wait.
      co_await go.wait();
      --inside;
      sem.release();
      ++done;
    }));
  }
  ASSERT_TRUE(wait_until([&] { return inside.load() == 3; }));
  EXPECT_EQ(sem.available(), 0u);
  EXPECT_EQ(done.load(), 0);
  go.set();  // from the test's own thread, not a worker
  ASSERT_TRUE(wait_until([&] { return done.load() == kCoroutines; }));
  EXPECT_EQ(peak.load(), 3);
  EXPECT_EQ(sem.available(), 3u);
}

TEST(semaphore, release_of_several_permits_wakes_as_many_waiters) {
  cowq::runtime rt;
  cowq::semaphore sem(0);
  std::atomic<int> through{0}, started{0};
  for (int i = 0; i < 5; ++i) {
    some_wq(rt, i).spawn(cowq::test::run([&]() -> cowq::task<void> {
      ++started;
      co_await sem.acquire();
      ++through;
    }));
  }
  ASSERT_TRUE(wait_until([&] { return started.load() == 5; }));
  EXPECT_FALSE(sem.try_acquire());
  sem.release(3);
  ASSERT_TRUE(wait_until([&] { return through.load() == 3; }));
  sem.release(4);
  ASSERT_TRUE(wait_until([&] { return through.load() == 5; }));
  // Two waiters took two of the four; the rest stay free.
  EXPECT_EQ(sem.available(), 2u);
}

TEST(mutex, excludes_across_workers_and_across_suspensions_inside_it) {
  cowq::runtime rt;
  cowq::mutex m;
  long counter = 0;  // guarded by m alone: TSan checks the hand-overs
  std::atomic<int> done{0};
  constexpr int kCoroutines = 8;
  constexpr int kRounds = 300;
  for (int i = 0; i < kCoroutines; ++i) {
    some_wq(rt, i).spawn(cowq::test::run([&]() -> cowq::task<void> {
      for (int r = 0; r < kRounds; ++r) {
        if (r % 2 == 0) {
          auto g = co_await m.scoped_lock();
          const long v = counter;
          co_await cowq::yield();  // others run meanwhile, and must wait
          counter = v + 1;
        } else {
          co_await m.lock();
          const long v = counter;
          co_await cowq::yield();
          counter = v + 1;
          m.unlock();
        }
      }
      ++done;
    }));
  }
  ASSERT_TRUE(wait_until([&] { return done.load() == kCoroutines; }));
  EXPECT_TRUE(m.try_lock());
  EXPECT_EQ(counter, long{kCoroutines} * kRounds);
  m.unlock();
}

TEST(mutex, a_guard_unlocks_early_and_when_moved_from) {
  cowq::runtime rt;
  cowq::mutex m;
  cowq::sync_wait(rt, cowq::test::run([&]() -> cowq::task<void> {
    {
      auto g = co_await m.scoped_lock();
      EXPECT_FALSE(m.try_lock());
      cowq::mutex_guard moved = std::move(g);
      EXPECT_FALSE(m.try_lock());
      moved.unlock();
      EXPECT_TRUE(m.try_lock());
      m.unlock();
    }  // neither guard unlocks again
    EXPECT_TRUE(m.try_lock());
    m.unlock();
  }));
}

TEST(event, set_from_a_plain_thread_resumes_every_waiter_on_a_worker) {
  cowq::runtime rt;
  cowq::event ev;
  std::atomic<int> waiting{0}, resumed{0}, on_workers{0};
  constexpr int kWaiters = 10;
  for (int i = 0; i < kWaiters; ++i) {
    some_wq(rt, i).spawn(cowq::test::run([&]() -> cowq::task<void> {
      ++waiting;
      co_await ev.wait();
      if (cowq::detail::on_worker_thread()) ++on_workers;
      ++resumed;
    }));
  }
  ASSERT_TRUE(wait_until([&] { return waiting.load() == kWaiters; }));
  EXPECT_FALSE(ev.is_set());
  EXPECT_EQ(resumed.load(), 0);
  std::thread([&] { ev.set(); }).join();
  ASSERT_TRUE(wait_until([&] { return resumed.load() == kWaiters; }));
  EXPECT_EQ(on_workers.load(), kWaiters);

  // Set, it lets waiters through at once; reset, it holds them again.
  cowq::sync_wait(rt, cowq::test::run([&]() -> cowq::task<void> { co_await ev.wait(); }));
  ev.reset();
  std::atomic<bool> late_through{false};
  rt.system_wq().spawn(cowq::test::run([&]() -> cowq::task<void> {
    co_await ev.wait();
    late_through = true;
  }));
  EXPECT_FALSE(late_through.load());
  ev.set();
  ASSERT_TRUE(wait_until([&] { return late_through.load(); }));
}

TEST(channel, carries_every_value_in_order_from_many_producers_to_many_consumers) {
  cowq::runtime rt;
  cowq::channel<std::uint64_t> ch(8);
  constexpr int kProducers = 4;
  constexpr std::uint64_t kEach = 5000;
  constexpr int kConsumers = 3;
  std::atomic<int> producers_left{kProducers}, consumers_done{0};
  std::atomic<std::uint64_t> received{0}, sum{0};
  std::atomic<int> out_of_order{0}, refused{0};

  for (int c = 0; c < kConsumers; ++c) {
    some_wq(rt, c).spawn(cowq::test::run([&]() -> cowq::task<void> {
      std::vector<std::uint64_t> last(kProducers, 0);
      while (auto v = co_await ch.recv()) {
        const auto p = static_cast<std::size_t>(*v >> 32);
        const std::uint64_t i = *v & 0xffffffffu;
        // One producer's values reach each consumer in the order sent.
        if (i <= last[p]) ++out_of_order;
        last[p] = i;
        ++received;
        sum += i;
      }
      ++consumers_done;
    }));
  }
  for (int p = 0; p < kProducers; ++p) {
    some_wq(rt, p + 1).spawn(cowq::test::run([&, p]() -> cowq::task<void> {
      for (std::uint64_t i = 1; i <= kEach; ++i)
        if (!co_await ch.send((std::uint64_t(p) << 32) | i)) ++refused;
      if (--producers_left == 0) ch.close();
    }));
  }
  ASSERT_TRUE(wait_until([&] { return consumers_done.load() == kConsumers; }));
  EXPECT_EQ(received.load(), kProducers * kEach);
  EXPECT_EQ(sum.load(), kProducers * (kEach * (kEach + 1) / 2));
  EXPECT_EQ(out_of_order.load(), 0);
  EXPECT_EQ(refused.load(), 0);
  EXPECT_EQ(ch.size(), 0u);
}

TEST(channel, close_wakes_waiting_receivers_and_senders_and_keeps_what_is_buffered) {
  cowq::runtime rt;
  cowq::channel<int> empty(4);
  std::atomic<bool> receiving{false}, receiver_done{false}, got_nothing{false};
  rt.system_wq().spawn(cowq::test::run([&]() -> cowq::task<void> {
    receiving = true;
    auto v = co_await empty.recv();
    got_nothing = !v.has_value();
    receiver_done = true;
  }));
  ASSERT_TRUE(wait_until([&] { return receiving.load(); }));
  empty.close();
  ASSERT_TRUE(wait_until([&] { return receiver_done.load(); }));
  EXPECT_TRUE(got_nothing.load());

  cowq::channel<int> full(1);
  std::atomic<bool> sending{false}, sender_done{false}, second_sent{true};
  cowq::sync_wait(rt, cowq::test::run([&]() -> cowq::task<void> {
    EXPECT_TRUE(co_await full.send(1));
    EXPECT_EQ(full.size(), 1u);
  }));
  rt.system_unbound_wq().spawn(cowq::test::run([&]() -> cowq::task<void> {
    sending = true;
    second_sent = co_await full.send(2);  // waits: the buffer is full
    sender_done = true;
  }));
  ASSERT_TRUE(wait_until([&] { return sending.load(); }));
  full.close();
  ASSERT_TRUE(wait_until([&] { return sender_done.load(); }));
  EXPECT_FALSE(second_sent.load());
  EXPECT_TRUE(full.closed());
  cowq::sync_wait(rt, cowq::test::run([&]() -> cowq::task<void> {
    EXPECT_FALSE(co_await full.send(3));
    auto a = co_await full.recv();
    EXPECT_EQ(a, std::optional<int>(1));  // buffered before the close
    auto b = co_await full.recv();
    EXPECT_FALSE(b.has_value());
  }));
}

TEST(channel, moves_move_only_values_through_full_and_empty_buffers) {
  cowq::runtime rt;
  cowq::channel<std::unique_ptr<int>> ch(2);
  constexpr int kValues = 200;
  std::atomic<int> wrong{0}, got{0};
  rt.system_unbound_wq().spawn(cowq::test::run([&]() -> cowq::task<void> {
    for (int i = 0; i < kValues; ++i) co_await ch.send(std::make_unique<int>(i));
    ch.close();
  }));
  cowq::sync_wait(rt, cowq::test::run([&]() -> cowq::task<void> {
    int expect = 0;
    while (auto v = co_await ch.recv()) {
      if (*v == nullptr || **v != expect) ++wrong;
      ++expect;
      ++got;
    }
  }));
  EXPECT_EQ(got.load(), kValues);
  EXPECT_EQ(wrong.load(), 0);
}

TEST(channel, refuses_a_capacity_of_zero) {
  EXPECT_THROW(cowq::channel<int>(0), std::invalid_argument);
}

TEST(sync, waiting_off_a_worker_throws_and_leaves_nothing_queued) {
  cowq::semaphore sem(0);
  bool threw = false;
  auto t = [&]() -> cowq::task<void> {
    try {
      co_await sem.acquire();
    } catch (const std::logic_error&) {
      threw = true;
    }
  };
  auto outer = cowq::test::run(t);
  outer.handle().resume();  // on the test's thread, which is no worker
  EXPECT_TRUE(outer.done());
  EXPECT_TRUE(threw);
  sem.release();
  EXPECT_EQ(sem.available(), 1u);  // no waiter took it
}

TEST(sync, a_stop_takes_a_waiting_coroutine_off_each_primitive_having_taken_nothing) {
  cowq::runtime rt;
  cowq::semaphore sem(0);
  cowq::mutex m;
  cowq::event ev;
  cowq::channel<int> empty(1), full(1);
  cowq::sync_wait(rt, cowq::test::run([&]() -> cowq::task<void> {
    EXPECT_TRUE(co_await m.lock());
    EXPECT_TRUE(co_await full.send(7));
  }));

  std::stop_source stop;
  std::atomic<int> waiting{0}, done{0};
  std::atomic<int> not_stopped{0};  // waits that came back with anything but "stopped"
  auto waiter = [&](auto body) {
    rt.system_wq().spawn(cowq::test::run([&, body]() -> cowq::task<void> {
      ++waiting;
      if (co_await body()) ++not_stopped;
      ++done;
    }));
  };
  const std::stop_token t = stop.get_token();
  waiter([&, t]() -> cowq::task<bool> { co_return co_await sem.acquire(t); });
  waiter([&, t]() -> cowq::task<bool> { co_return co_await m.lock(t); });
  waiter([&, t]() -> cowq::task<bool> { co_return static_cast<bool>(co_await m.scoped_lock(t)); });
  waiter([&, t]() -> cowq::task<bool> { co_return co_await ev.wait(t); });
  waiter([&, t]() -> cowq::task<bool> { co_return (co_await empty.recv(t)).has_value(); });
  waiter([&, t]() -> cowq::task<bool> { co_return co_await full.send(8, t); });
  ASSERT_TRUE(wait_until([&] { return waiting.load() == 6; }));
  EXPECT_EQ(done.load(), 0);
  stop.request_stop();
  ASSERT_TRUE(wait_until([&] { return done.load() == 6; }));
  EXPECT_EQ(not_stopped.load(), 0);

  // None of them is still queued or took anything.
  sem.release();
  EXPECT_EQ(sem.available(), 1u);
  m.unlock();
  EXPECT_TRUE(m.try_lock());
  m.unlock();
  cowq::sync_wait(rt, cowq::test::run([&]() -> cowq::task<void> {
    EXPECT_TRUE(co_await empty.send(1));
    EXPECT_EQ(empty.size(), 1u);  // buffered, not handed to the stopped receiver
    EXPECT_EQ(co_await full.recv(), std::optional<int>(7));
    EXPECT_EQ(full.size(), 0u);  // the stopped sender's 8 never went in
  }));
}

TEST(sync, a_stop_requested_before_waiting_only_matters_when_it_would_wait) {
  cowq::runtime rt;
  cowq::sync_wait(rt, cowq::test::run([&]() -> cowq::task<void> {
    std::stop_source stop;
    stop.request_stop();
    cowq::semaphore sem(1);
    EXPECT_TRUE(co_await sem.acquire(stop.get_token()));   // a permit is free
    EXPECT_FALSE(co_await sem.acquire(stop.get_token()));  // none: no wait
    EXPECT_EQ(sem.available(), 0u);
    cowq::channel<int> ch(1);
    EXPECT_FALSE((co_await ch.recv(stop.get_token())).has_value());
    EXPECT_TRUE(co_await ch.send(1, stop.get_token()));   // room: sent
    EXPECT_FALSE(co_await ch.send(2, stop.get_token()));  // full: not
    EXPECT_EQ(co_await ch.recv(stop.get_token()), std::optional<int>(1));
  }));
}

// A stop and a release race from two plain threads: the waiter resumes
// exactly once, and a permit is either taken by it or still there.
TEST(sync, a_stop_racing_a_release_resumes_the_waiter_exactly_once) {
  cowq::runtime rt;
  constexpr int kRounds = 300;
  int taken = 0;
  for (int i = 0; i < kRounds; ++i) {
    cowq::semaphore sem(0);
    std::stop_source stop;
    std::atomic<bool> waiting{false};
    std::atomic<int> resumed{0}, result{-1};
    rt.system_wq().spawn(cowq::test::run([&]() -> cowq::task<void> {
      waiting = true;
      const bool got = co_await sem.acquire(stop.get_token());
      result = got ? 1 : 0;
      ++resumed;
    }));
    ASSERT_TRUE(wait_until([&] { return waiting.load(); }));
    std::atomic<bool> start{false};
    std::thread releaser([&] {
      while (!start.load()) {
      }
      sem.release();
    });
    std::thread stopper([&] {
      while (!start.load()) {
      }
      stop.request_stop();
    });
    start = true;
    releaser.join();
    stopper.join();
    ASSERT_TRUE(wait_until([&] { return resumed.load() == 1; }));
    ASSERT_NE(result.load(), -1);
    EXPECT_EQ(sem.available(), result.load() == 1 ? 0u : 1u);
    taken += result.load();
    EXPECT_EQ(resumed.load(), 1);
  }
  std::printf("permit taken by the waiter in %d of %d races\n", taken, kRounds);
}

TEST(task_group, join_waits_for_every_child_and_the_children_run_in_parallel) {
  cowq::runtime rt;
  cowq::task_group g(rt.system_wq());
  cowq::event go;
  std::atomic<int> started{0}, finished{0};
  std::atomic<bool> joined{false};
  constexpr int kChildren = 40;
  rt.system_unbound_wq().spawn(cowq::test::run([&]() -> cowq::task<void> {
    for (int i = 0; i < kChildren; ++i)
      g.spawn([](cowq::event& go, std::atomic<int>& started,
                 std::atomic<int>& finished) -> cowq::task<int> {
        ++started;
        co_await go.wait();
        ++finished;
        co_return 1;
      }(go, started, finished));
    co_await g.join();
    joined = true;
  }));
  // Every child has started while none could finish: they are items of
  // their own, not run one after the other by the joiner.
  ASSERT_TRUE(wait_until([&] { return started.load() == kChildren; }));
  EXPECT_FALSE(joined.load());
  EXPECT_EQ(g.size(), std::size_t{kChildren});
  go.set();
  ASSERT_TRUE(wait_until([&] { return joined.load(); }));
  EXPECT_EQ(finished.load(), kChildren);
  EXPECT_EQ(g.size(), 0u);
}

TEST(task_group, the_first_exception_stops_the_others_and_join_rethrows_it_once) {
  cowq::runtime rt;
  cowq::task_group g(rt.system_wq());
  cowq::event never;  // set only to clean up if the stop did not work
  std::atomic<int> stopped{0};
  std::atomic<bool> joined{false}, caught{false}, second_join_clean{false};
  constexpr int kWaiters = 10;
  rt.system_unbound_wq().spawn(cowq::test::run([&]() -> cowq::task<void> {
    for (int i = 0; i < kWaiters; ++i)
      g.spawn([](cowq::event& never, std::stop_token t, std::atomic<int>& stopped) -> cowq::task<void> {
        if (!co_await never.wait(t)) ++stopped;
      }(never, g.stop_token(), stopped));
    for (int i = 0; i < 2; ++i)
      g.spawn([](int i) -> cowq::task<void> {
        co_await cowq::yield();
        throw std::runtime_error("boom " + std::to_string(i));
      }(i));
    try {
      co_await g.join();
    } catch (const std::runtime_error& e) {
      caught = std::string(e.what()).rfind("boom ", 0) == 0;
    }
    try {
      co_await g.join();  // nothing left to rethrow
      second_join_clean = true;
    } catch (...) {
    }
    joined = true;
  }));
  const bool in_time = wait_until([&] { return joined.load(); });
  EXPECT_TRUE(in_time) << "the stop did not reach the waiting children";
  if (!in_time) never.set();  // let everything end before the group goes
  ASSERT_TRUE(wait_until([&] { return joined.load(); }));
  EXPECT_TRUE(caught.load());
  EXPECT_TRUE(second_join_clean.load());
  EXPECT_EQ(stopped.load(), kWaiters);
  EXPECT_TRUE(g.stop_token().stop_requested());
}

TEST(task_group, a_join_with_nothing_running_returns_at_once_and_the_group_is_reusable) {
  cowq::runtime rt;
  cowq::task_group g(rt.system_unbound_wq());
  std::atomic<int> ran{0};
  cowq::sync_wait(rt, cowq::test::run([&]() -> cowq::task<void> {
    co_await g.join();
    for (int round = 0; round < 3; ++round) {
      for (int i = 0; i < 5; ++i)
        g.spawn([](std::atomic<int>& ran) -> cowq::task<void> {
          co_await cowq::yield();
          ++ran;
        }(ran));
      co_await g.join();
      EXPECT_EQ(ran.load(), 5 * (round + 1));
    }
  }));
  EXPECT_EQ(g.size(), 0u);
}

// A coroutine destroyed while it waits takes its waiter off the queue: the
// next release must not reach into its freed frame (ASan would say so).
TEST(sync, a_coroutine_destroyed_while_it_waits_leaves_the_queue) {
  cowq::runtime rt;
  cowq::semaphore sem(0);
  cowq::channel<int> ch(1);
  std::stop_source stop;
  cowq::sync_wait(rt, cowq::test::run([&]() -> cowq::task<void> {
    auto wait_sem = [](cowq::semaphore& s, std::stop_token t) -> cowq::task<void> {
      co_await s.acquire(t);
    };
    auto wait_ch = [](cowq::channel<int>& c) -> cowq::task<void> { co_await c.recv(); };
    {
      cowq::task<void> a = wait_sem(sem, stop.get_token());
      cowq::task<void> b = wait_ch(ch);
      a.handle().resume();  // runs here until it waits
      b.handle().resume();
      EXPECT_FALSE(a.done());
      EXPECT_FALSE(b.done());
    }  // both frames destroyed while they wait
    stop.request_stop();  // no callback is left to run
    sem.release();
    EXPECT_EQ(sem.available(), 1u);
    EXPECT_TRUE(co_await ch.send(5));  // buffered: no receiver waits any more
    EXPECT_EQ(ch.size(), 1u);
  }));
}

TEST(sync_death, unlocking_a_mutex_nobody_holds_terminates) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        cowq::mutex m;
        m.unlock();
      },
      "not locked");
}

// Let go by set(), the waiter is queued but has not run; the event is then
// destroyed, and a stop is requested. The stop must not touch the event.
TEST(sync, a_stop_after_the_release_never_touches_the_primitive_again) {
  cowq::runtime rt({.cpus = {cowq::test::first_allowed_cpu()}});
  cowq::sync_wait(rt.system_wq(), cowq::test::run([&]() -> cowq::task<void> {
    auto ev = std::make_unique<cowq::event>();
    std::stop_source stop;
    bool result = true;
    auto wait_ev = [](cowq::event& e, std::stop_token t, bool& result) -> cowq::task<void> {
      result = co_await e.wait(t);
    };
    cowq::task<void> a = wait_ev(*ev, stop.get_token(), result);
    a.handle().resume();  // waits
    EXPECT_FALSE(a.done());
    // This worker keeps its CPU's pool busy: the waiter is queued behind
    // it and cannot run before the next yield.
    ev->set();
    ev.reset();           // freed: ASan reports any touch
    stop.request_stop();  // the waiter was released: nothing to do
    while (!a.done()) co_await cowq::yield();
    EXPECT_TRUE(result);  // resumed by the set, not the stop
  }));
}

TEST(channel, try_send_and_try_recv_never_wait_and_serve_the_waiters) {
  cowq::runtime rt;
  cowq::channel<std::unique_ptr<int>> ch(1);
  // From the test's own thread: no worker needed.
  auto one = std::make_unique<int>(1);
  EXPECT_TRUE(ch.try_send(std::move(one)));
  EXPECT_EQ(one, nullptr);  // moved: it went in
  auto two = std::make_unique<int>(2);
  EXPECT_FALSE(ch.try_send(std::move(two)));  // full
  ASSERT_NE(two, nullptr);                    // refused, so still ours
  auto v = ch.try_recv();
  ASSERT_TRUE(v && *v);
  EXPECT_EQ(**v, 1);
  EXPECT_FALSE(ch.try_recv().has_value());  // empty

  // A waiting receiver gets a try_send straight away.
  std::atomic<bool> receiving{false}, got{false};
  rt.system_wq().spawn(cowq::test::run([&]() -> cowq::task<void> {
    receiving = true;
    auto r = co_await ch.recv();
    got = r && *r && **r == 2;
  }));
  ASSERT_TRUE(wait_until([&] { return receiving.load(); }));
  ASSERT_TRUE(wait_until([&] { return ch.try_send(std::move(two)) || got.load(); }));
  ASSERT_TRUE(wait_until([&] { return got.load(); }));

  // A try_recv makes room for a waiting sender.
  EXPECT_TRUE(ch.try_send(std::make_unique<int>(3)));
  std::atomic<bool> sending{false}, sent{false};
  rt.system_wq().spawn(cowq::test::run([&]() -> cowq::task<void> {
    sending = true;
    sent = co_await ch.send(std::make_unique<int>(4));  // waits: full
  }));
  ASSERT_TRUE(wait_until([&] { return sending.load(); }));
  auto three = ch.try_recv();
  ASSERT_TRUE(three && *three);
  EXPECT_EQ(**three, 3);
  ASSERT_TRUE(wait_until([&] { return sent.load(); }));
  auto four = ch.try_recv();
  ASSERT_TRUE(four && *four);
  EXPECT_EQ(**four, 4);
  ch.close();
  EXPECT_FALSE(ch.try_send(std::make_unique<int>(5)));
}
