// sleep_for / sleep_until on the pools' timer heaps.
#include <cowq/cowq.hpp>

#include "pool/pool.hpp"
#include "runtime/runtime_impl.hpp"
#include "test_util.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <stop_token>
#include <thread>

using namespace std::chrono_literals;
using cowq::test::wait_until;

namespace {

TEST(timer, sleep_for_resumes_after_the_delay) {
  cowq::runtime rt;
  auto t = []() -> cowq::task<std::chrono::nanoseconds> {
    auto start = std::chrono::steady_clock::now();
    auto ec = co_await cowq::sleep_for(20ms);
    EXPECT_FALSE(ec);
    co_return std::chrono::steady_clock::now() - start;
  };
  EXPECT_GE(cowq::sync_wait(rt, t()), 20ms);
}

TEST(timer, sleep_until_the_past_does_not_suspend) {
  cowq::runtime rt;
  auto t = []() -> cowq::task<bool> {
    auto ec = co_await cowq::sleep_until(std::chrono::steady_clock::now() - 1s);
    co_return !ec;
  };
  EXPECT_TRUE(cowq::sync_wait(rt, t()));
}

TEST(timer, stop_token_cancels_a_sleep) {
  cowq::runtime rt;
  std::stop_source src;
  std::atomic<bool> sleeping{false};
  auto t = [&]() -> cowq::task<std::error_code> {
    sleeping = true;
    co_return co_await cowq::sleep_for(1h, src.get_token());
  };
  std::thread stopper([&] {
    ASSERT_TRUE(wait_until([&] { return sleeping.load(); }));
    src.request_stop();
  });
  auto ec = cowq::sync_wait(rt, t());
  stopper.join();
  EXPECT_EQ(ec, std::errc::operation_canceled);
}

TEST(timer, a_stop_racing_the_deadline_resumes_exactly_once) {
  cowq::runtime rt;
  std::atomic<int> resumed{0};
  constexpr int kRounds = 300;
  for (int i = 0; i < kRounds; ++i) {
    std::stop_source src;
    std::atomic<bool> started{false};
    auto t = [&]() -> cowq::task<void> {
      started = true;
      co_await cowq::sleep_for(std::chrono::microseconds(50 + i % 100), src.get_token());
      resumed.fetch_add(1);
    };
    std::thread stopper([&] {
      while (!started.load()) std::this_thread::yield();
      src.request_stop();
    });
    cowq::sync_wait(rt, t());
    stopper.join();
  }
  EXPECT_EQ(resumed.load(), kRounds);
}

cowq::task<void> sleeper(std::atomic<int>* woke, std::chrono::milliseconds d) {
  co_await cowq::sleep_for(d);
  woke->fetch_add(1);
}

TEST(timer, many_sleepers_share_one_wait_per_pool) {
  cowq::runtime rt({.cpus = {0}});
  constexpr int kSleepers = 10000;
  std::atomic<int> woke{0};
  for (int i = 0; i < kSleepers; ++i)
    rt.system_wq().spawn(sleeper(&woke, std::chrono::milliseconds(200 + i % 50)));
  auto& p = *rt.impl().bound_[0][0];
  // All of them sit in the pool's heap, not in the kernel.
  ASSERT_TRUE(wait_until([&] {
    std::lock_guard g(p.lock_);
    return p.timers_.size() >= static_cast<std::size_t>(kSleepers) || woke.load() > 0;
  }));
  EXPECT_EQ(p.inflight_.load(), 0);
  ASSERT_TRUE(wait_until([&] { return woke.load() == kSleepers; }));
}

cowq::task<void> long_sleeper(std::atomic<int>* cancelled) {
  auto ec = co_await cowq::sleep_for(1h);
  if (ec == std::errc::operation_canceled) cancelled->fetch_add(1);
}

TEST(timer, shutdown_cancels_sleepers_so_they_can_clean_up) {
  std::atomic<int> cancelled{0};
  std::int64_t live = -1;
  {
    cowq::runtime rt;
    for (int i = 0; i < 100; ++i) rt.system_wq().spawn(long_sleeper(&cancelled));
    rt.system_wq().flush();
    rt.shutdown();  // returns without waiting an hour
    live = rt.stats().live_coroutines;
  }
  EXPECT_EQ(cancelled.load(), 100);
  EXPECT_EQ(live, 0);
}

}  // namespace
