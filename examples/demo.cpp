// The flagship demo: pools, workers and workqueues doing real work.
//
// It counts the primes below a bound by fanning coroutines out over the
// per-CPU pools, runs a batch of CPU-heavy jobs on an unbound cpu_intensive
// workqueue limited by max_active, keeps a journal on an ordered workqueue,
// fires delayed work, shows a pool carrying on while coroutines block in a
// raw system call nobody announced, and prints what the runtime did.
//
//   demo [--cpus LIST] [--limit N]
#include <cowq/cowq.hpp>

#include <atomic>
#include <chrono>
#include <thread>
#include <unistd.h>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

bool is_prime(long n) {
  if (n < 2) return false;
  for (long d = 2; d * d <= n; ++d)
    if (n % d == 0) return false;
  return true;
}

cowq::task<long> count_primes(long lo, long hi) {
  long c = 0;
  for (long n = lo; n < hi; ++n) c += is_prime(n) ? 1 : 0;
  co_return c;
}

// Each chunk runs as its own item on whichever CPU's pool the parent hops
// to, so the chunks spread over the machine.
cowq::task<long> chunk_on(cowq::workqueue& wq, int cpu, long lo, long hi) {
  co_await cowq::schedule_on(wq, cpu);
  co_return co_await count_primes(lo, hi);
}

cowq::task<long> primes_below(cowq::runtime& rt, long limit, int chunks) {
  std::vector<cowq::task<long>> parts;
  const long step = (limit + chunks - 1) / chunks;
  auto cpus = rt.cpus();
  for (int i = 0; i < chunks; ++i) {
    const int cpu = cpus[static_cast<std::size_t>(i) % cpus.size()];
    parts.push_back(chunk_on(rt.system_wq(), cpu, i * step, std::min(limit, (i + 1) * step)));
  }
  long total = 0;
  for (long c : co_await cowq::when_all(std::move(parts))) total += c;
  co_return total;
}

// A CPU-heavy job: integrates sin over [0, pi] with many steps.
cowq::task<void> heavy_job(int id, std::vector<double>* out) {
  double sum = 0;
  constexpr int kSteps = 4'000'000;
  const double h = M_PI / kSteps;
  for (int i = 0; i < kSteps; ++i) sum += std::sin((i + 0.5) * h) * h;
  (*out)[static_cast<std::size_t>(id)] = sum;
  co_return;
}

cowq::task<void> journal(std::vector<std::string>* lines, std::string text) {
  lines->push_back(std::move(text));  // the ordered queue serialises this
  co_return;
}

}  // namespace

// Blocks its worker for 50 ms in a raw system call, the way library code
// often does, without telling the runtime.
cowq::task<void> naive_sleeper() {
  ::usleep(50'000);
  co_return;
}

cowq::task<void> short_item(std::atomic<int>* done) {
  done->fetch_add(1);
  co_return;
}

// Four sleepers, then 100 short items, all on one CPU's pool.
cowq::task<void> block_one_pool(cowq::workqueue* wq, int cpu, std::atomic<int>* done) {
  co_await cowq::schedule_on(*wq, cpu);
  for (int i = 0; i < 4; ++i) wq->spawn(naive_sleeper());
  for (int i = 0; i < 100; ++i) wq->spawn(short_item(done));
}

int main(int argc, char** argv) {
  cowq::runtime_options opts;
  long limit = 2'000'000;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--cpus") == 0 && i + 1 < argc) {
      opts.cpus = cowq::parse_cpu_list(argv[++i]);
    } else if (std::strcmp(argv[i], "--limit") == 0 && i + 1 < argc) {
      limit = std::atol(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s [--cpus LIST] [--limit N]\n", argv[0]);
      return 2;
    }
  }

  using clock = std::chrono::steady_clock;
  cowq::runtime rt(opts);
  std::printf("cowq demo: %zu CPUs, %d NUMA node(s)\n", rt.cpus().size(), rt.numa_nodes());

  auto& batch = rt.alloc_workqueue("batch", cowq::wq::unbound | cowq::wq::cpu_intensive, 2);
  auto& strand = rt.alloc_workqueue("journal", cowq::wq::ordered);
  std::vector<std::string> lines;

  const auto t0 = clock::now();
  // CPU-heavy jobs, at most two at a time, the rest on the inactive list.
  std::vector<double> integrals(8);
  for (int i = 0; i < 8; ++i) batch.spawn(heavy_job(i, &integrals));

  // A delayed work item, like the kernel's delayed_work.
  std::atomic<bool> fired{false};
  cowq::delayed_work tick([&] {
    fired = true;
    strand.spawn(journal(&lines, "delayed work fired"));
  });
  cowq::queue_delayed_work(rt.system_wq(), tick, std::chrono::milliseconds(50));

  strand.spawn(journal(&lines, "counting primes"));
  const long primes = cowq::sync_wait(rt, primes_below(rt, limit, 64));
  const auto t1 = clock::now();
  strand.spawn(journal(&lines, "primes counted"));

  batch.flush();
  cowq::flush_delayed_work(tick);
  strand.flush();
  const auto t2 = clock::now();

  // Without the watchdog the short items would wait for four 50 ms sleeps
  // in a row on that pool; with it, the pool gets another worker each time.
  const int cpu = rt.cpus()[0];
  std::atomic<int> shorts_done{0};
  const auto t3 = clock::now();
  cowq::sync_wait(rt, block_one_pool(&rt.system_wq(), cpu, &shorts_done));
  while (shorts_done.load() < 100) std::this_thread::sleep_for(std::chrono::microseconds(200));
  const auto t4 = clock::now();
  rt.system_wq().flush();
  std::uint64_t detected = 0;
  int peak = 0;
  for (auto& p : rt.stats().pools)
    if (p.cpu == cpu && !p.highpri) {
      detected = p.blocked_detected;
      peak = p.peak_workers;
    }

  auto ms = [](auto d) { return std::chrono::duration<double, std::milli>(d).count(); };
  std::printf("primes below %ld: %ld (%.1f ms, 64 items over the per-CPU pools)\n", limit,
              primes, ms(t1 - t0));
  std::printf("8 integrals of sin over [0, pi] on 'batch' (max_active 2): %.6f each, all done after %.1f ms\n",
              integrals[0], ms(t2 - t0));
  std::printf("4 coroutines slept 50 ms in a raw usleep() on CPU %d's pool; the 100 short items\n"
              "queued behind them finished after %.1f ms (watchdog: %llu blocked workers found,\n"
              "pool peaked at %d workers)\n",
              cpu, ms(t4 - t3), static_cast<unsigned long long>(detected), peak);
  std::printf("journal (ordered workqueue):\n");
  for (auto& l : lines) std::printf("  - %s\n", l.c_str());
  std::printf("\n%s", cowq::to_string(rt.stats()).c_str());
  return primes > 0 && fired.load() ? 0 : 1;
}
