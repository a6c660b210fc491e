// 100,000 sleeping coroutines: how many kernel timers, and what it costs.
//
// Each pool keeps its sleepers in a heap and waits for the earliest
// deadline only, so the count of kernel timeouts stays at zero however many
// coroutines sleep. This program spawns N sleepers on one CPU's pool,
// samples the pool's stats while they all sleep, and reports the cost to
// arm a sleep, the lateness of the wake-ups and the CPU time used.
//
//   sleepers [N] [sleep_ms] [spread_ms]   (defaults 100000, 200 and 200)
//
// Deadlines are spread evenly over spread_ms; lateness measures how far
// behind its deadline each sleeper resumed.
#include <cowq/cowq.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <thread>
#include <vector>

using clk = std::chrono::steady_clock;

namespace {

std::atomic<int> g_woke{0};
std::atomic<long long> g_late_ns_max{0};
std::atomic<long long> g_late_ns_sum{0};

cowq::task<void> sleeper(clk::time_point deadline) {
  co_await cowq::sleep_until(deadline);
  const long long late = std::chrono::duration_cast<std::chrono::nanoseconds>(clk::now() - deadline).count();
  g_late_ns_sum.fetch_add(late, std::memory_order_relaxed);
  long long m = g_late_ns_max.load(std::memory_order_relaxed);
  while (late > m && !g_late_ns_max.compare_exchange_weak(m, late)) {}
  g_woke.fetch_add(1, std::memory_order_relaxed);
}

double cpu_seconds() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

}  // namespace

int main(int argc, char** argv) {
  const int n = argc > 1 ? std::atoi(argv[1]) : 100000;
  const int sleep_ms = argc > 2 ? std::atoi(argv[2]) : 200;
  const int spread_ms = argc > 3 ? std::max(1, std::atoi(argv[3])) : 200;
  cowq::runtime rt({.cpus = {0}});
  auto& wq = rt.system_wq();

  const double cpu0 = cpu_seconds();
  const auto t0 = clk::now();
  // Spawned from a worker, so all land on CPU 0's pool.
  cowq::sync_wait(rt, [&]() -> cowq::task<void> {
    const auto base = clk::now() + std::chrono::milliseconds(sleep_ms);
    for (int i = 0; i < n; ++i)
      wq.spawn(sleeper(base + std::chrono::microseconds(static_cast<long long>(i) * spread_ms * 1000 / n)));
    co_return;
  }());
  // Wait until every sleeper is parked on its timer.
  int timers = 0;
  long long in_flight = 0;
  for (;;) {
    auto s = rt.stats();
    timers = s.pools[0].timers;
    in_flight = s.pools[0].io_in_flight;
    if (timers + g_woke.load() >= n) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  const auto armed = clk::now();
  while (g_woke.load() < n) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const auto done = clk::now();
  const double cpu_done = cpu_seconds();

  auto ms = [](auto d) { return std::chrono::duration<double, std::milli>(d).count(); };
  std::printf(
      "{\"sleepers\": %d, \"spread_ms\": %d, \"heap_entries_while_sleeping\": %d, \"kernel_timeouts_in_flight\": %lld, "
      "\"spawn_and_arm_ns_per_sleeper\": %.0f, \"cpu_ns_per_sleeper\": %.0f, "
      "\"wake_lateness_mean_us\": %.1f, \"wake_lateness_max_us\": %.1f, \"total_ms\": %.1f}\n",
      n, spread_ms, timers, in_flight, ms(armed - t0) * 1e6 / n, (cpu_done - cpu0) * 1e9 / n,
      static_cast<double>(g_late_ns_sum.load()) / n / 1000.0, static_cast<double>(g_late_ns_max.load()) / 1000.0,
      ms(done - t0));
  return timers + g_woke.load() >= n && in_flight == 0 ? 0 : 1;
}
