// The hot path allocates nothing: queueing a coroutine or a work item,
// dequeueing, resuming and completing.
#include <cowq/cowq.hpp>
#include <cowq/net.hpp>

#include "test_util.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <execinfo.h>
#include <new>
#include <vector>

// malloc/free behind a replaced operator new/delete pair is correct; GCC's
// heuristic cannot see that they are paired.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

namespace {
std::atomic<bool> g_counting{false};
std::atomic<long> g_allocations{0};
}  // namespace

// Counts every allocation in the process while g_counting is set.
void* operator new(std::size_t n) {
  if (g_counting.load(std::memory_order_relaxed)) {
    g_allocations.fetch_add(1);
    // Says who allocated, so a failure points at its cause. Counting is
    // off meanwhile (backtrace() may allocate the first time): the test
    // fails anyway.
    g_counting = false;
    void* bt[32];
    int k = backtrace(bt, 32);
    backtrace_symbols_fd(bt, k, 2);
    g_counting = true;
  }
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace {

using cowq::test::wait_until;

struct counting_scope {
  counting_scope() {
    g_allocations = 0;
    g_counting = true;
  }
  ~counting_scope() { g_counting = false; }
  long count() const { return g_allocations.load(); }
};

TEST(hot_path, yield_allocates_nothing) {
  cowq::runtime rt({.cpus = {0}});
  auto t = []() -> cowq::task<long> {
    co_await cowq::yield();  // warm up: workers and spares exist
    counting_scope scope;
    for (int i = 0; i < 10000; ++i) co_await cowq::yield();
    co_return scope.count();
  };
  EXPECT_EQ(cowq::sync_wait(rt, t()), 0);
}

TEST(hot_path, queueing_spawned_coroutines_allocates_nothing) {
  cowq::runtime rt({.cpus = {0}});
  auto& wq = rt.alloc_workqueue("noalloc", cowq::wq_flags::none, 8);
  cowq::sync_wait(rt, []() -> cowq::task<void> { co_return; }());
  std::atomic<int> done{0};
  auto body = [](std::atomic<int>* d) -> cowq::task<void> {
    co_await cowq::yield();
    d->fetch_add(1);
  };
  constexpr int kN = 2000;
  // Frames are allocated when the tasks are created, before counting.
  std::vector<cowq::task<void>> tasks;
  for (int i = 0; i < kN; ++i) tasks.push_back(body(&done));
  long allocations;
  {
    counting_scope scope;
    // Beyond max_active they go through the inactive list too.
    for (auto& t : tasks) wq.spawn(std::move(t));
    ASSERT_TRUE(wait_until([&] { return done.load() == kN; }));
    allocations = scope.count();
  }
  EXPECT_EQ(allocations, 0);
}

// when_all over tasks needs their frames (from the per-thread frame cache
// once it is warm) and nothing else.
TEST(hot_path, when_all_allocates_nothing_beyond_cached_frames) {
  cowq::runtime rt({.cpus = {0}});
  auto leaf = [](int v) -> cowq::task<int> {
    co_await cowq::yield();
    co_return v;
  };
  auto three = [&]() -> cowq::task<int> {
    auto [a, b, c] = co_await cowq::when_all(leaf(1), leaf(2), leaf(3));
    co_return a + b + c;
  };
  auto t = [&]() -> cowq::task<long> {
    for (int i = 0; i < 100; ++i) co_await three();  // the cache holds every frame size
    counting_scope scope;
    for (int i = 0; i < 1000; ++i)
      if (co_await three() != 6) co_return -1;
    co_return scope.count();
  };
  EXPECT_EQ(cowq::sync_wait(rt, t()), 0);
}

TEST(hot_path, queueing_work_items_allocates_nothing) {
  cowq::runtime rt({.cpus = {0}});
  std::atomic<int> runs{0};
  cowq::work w([&] { runs.fetch_add(1); });
  cowq::queue_work(rt.system_wq(), w);
  cowq::flush_work(w);
  long allocations;
  {
    counting_scope scope;
    for (int i = 0; i < 1000; ++i) {
      cowq::queue_work(rt.system_wq(), w);
      cowq::flush_work(w);
    }
    allocations = scope.count();
  }
  EXPECT_EQ(allocations, 0);
  EXPECT_EQ(runs.load(), 1001);
}

// A round trip through two channels and a semaphore, each side waiting
// on the other in turn: waiters live in the coroutine frames.
TEST(hot_path, waiting_on_channels_and_semaphores_allocates_nothing) {
  cowq::runtime rt({.cpus = {0}});
  cowq::channel<int> to(1), back(1);
  cowq::semaphore go(0);
  auto echo = [&]() -> cowq::task<void> {
    for (;;) {
      co_await go.acquire();
      auto v = co_await to.recv();
      if (!v) co_return;
      co_await back.send(*v + 1);
    }
  };
  rt.system_unbound_wq().spawn(cowq::test::run(echo));
  auto t = [&]() -> cowq::task<long> {
    long wrong = 0;
    auto round = [&](int i) -> cowq::task<void> {
      co_await to.send(i);
      go.release();
      auto v = co_await back.recv();
      if (!v || *v != i + 1) ++wrong;
    };
    for (int i = 0; i < 100; ++i) co_await round(i);  // frames cached, workers up
    long n;
    {
      counting_scope scope;
      for (int i = 0; i < 2000; ++i) co_await round(i);
      n = scope.count();
    }
    to.close();
    go.release();
    co_return wrong == 0 ? n : -1;
  };
  EXPECT_EQ(cowq::sync_wait(rt, t()), 0);
}

TEST(hot_path, receiving_through_a_receiver_allocates_nothing) {
  cowq::runtime rt({.cpus = {0}});
  using namespace cowq::net;
  auto l = tcp_listener::bind({asio::ip::make_address("127.0.0.1"), 0});
  auto t = [&]() -> cowq::task<long> {
    auto c = co_await connect(l.local_endpoint());
    auto a = co_await l.accept();
    if (!c || !a) co_return -1;
    receiver rx(a.value);
    std::byte msg[64] = {};
    std::byte back[64];
    long wrong = 0;
    auto round = [&]() -> cowq::task<void> {
      if (!co_await c.value.send_all(msg)) ++wrong;
      std::size_t echoed = 0;
      while (echoed < sizeof msg) {
        auto r = co_await rx.recv();
        if (!r || r.value.empty()) {
          ++wrong;
          co_return;
        }
        if (!co_await a.value.send_all(r.value.data())) ++wrong;
        echoed += r.value.size();
      }
      std::size_t got = 0;
      while (got < sizeof back) {
        auto r = co_await c.value.recv(std::span(back).subspan(got));
        if (!r || r.value == 0) {
          ++wrong;
          co_return;
        }
        got += r.value;
      }
    };
    for (int i = 0; i < 100; ++i) co_await round();  // buffers set up, frames cached
    long n;
    {
      counting_scope scope;
      for (int i = 0; i < 2000; ++i) co_await round();
      n = scope.count();
    }
    co_return wrong == 0 ? n : -1;
  };
  EXPECT_EQ(cowq::sync_wait(rt, t()), 0);
}

}  // namespace
