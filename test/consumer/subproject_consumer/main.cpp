// A program that uses cowq the way an outside project would: only the
// installed public headers and the library. Built by both consumer tests
// (as a Meson subproject user, and with pkg-config flags alone).
// Exits 0 only if every check passes.
#include <cowq/asio.hpp>
#include <cowq/cowq.hpp>

#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

namespace {

constexpr int kCoroutines = 100;

cowq::task<int> one() { co_return 1; }

// Each spawned coroutine awaits a child task before counting itself.
cowq::task<void> bump(std::atomic<int>& counter) {
  int n = co_await one();
  counter.fetch_add(n, std::memory_order_relaxed);
}

cowq::task<int> sum_to(int n) {
  int s = 0;
  for (int i = 1; i <= n; ++i) s += co_await one() * i;
  co_return s;
}

cowq::task<bool> check(const std::atomic<int>& counter) {
  int seen = counter.load(std::memory_order_relaxed);
  int sum = co_await sum_to(10);
  std::printf("counter %d/%d, sum_to(10) %d/55\n", seen, kCoroutines, sum);
  co_return seen == kCoroutines && sum == 55;
}

// Asio both ways: a timer on Asio's io_context awaited from a cowq task,
// and a function posted through asio_executor onto a cowq workqueue.
cowq::task<bool> asio_both_ways(asio::io_context& io, cowq::workqueue& wq) {
  asio::steady_timer t(io, std::chrono::milliseconds(1));
  co_await t.async_wait(cowq::use_task);
  const bool resumed_here = cowq::asio_executor(wq).running_in_this_thread();
  std::atomic<bool> posted{false};
  asio::post(cowq::asio_executor(wq), [&] { posted = true; });
  while (!posted.load()) co_await cowq::yield();
  std::printf("asio: resumed on its workqueue %d, posted function ran %d\n",
              resumed_here, posted.load());
  co_return resumed_here;
}

}  // namespace

int main() {
  bool ok = false;
  {
    cowq::runtime rt;
    cowq::workqueue& wq = rt.alloc_workqueue("consumer");
    std::atomic<int> counter{0};
    for (int i = 0; i < kCoroutines; ++i) wq.spawn(bump(counter));
    wq.flush();  // every spawned coroutine has run to completion
    ok = cowq::sync_wait(wq, check(counter));

    asio::io_context io;
    auto guard = asio::make_work_guard(io);
    std::thread io_thread([&] { io.run(); });
    ok = cowq::sync_wait(wq, asio_both_ways(io, wq)) && ok;
    guard.reset();
    io_thread.join();
  }  // the runtime shuts down: every worker joined
  std::puts(ok ? "cowq consumer: OK" : "cowq consumer: FAILED");
  return ok ? 0 : 1;
}
