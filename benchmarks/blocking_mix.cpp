// blocking_mix: short CPU items behind coroutines that block the naive way.
//
// A producer thread (not a worker) queues a stream of short CPU items on a
// fixed schedule, alternating CPUs, at a rate that keeps half of two CPUs
// busy; meanwhile 8 coroutines, spread over both CPUs' pools, each make 50
// blocking calls of 10 ms. What matters is how long the short items wait:
// a worker stuck in a system call holds its pool's other items back unless
// the executor notices (cowq's watchdog) or is told (cowq::blocking).
//
//   blocking_mix --mode M --blocker B [options]
//   blocking_mix --calibrate [--item-us 20]
//
// Modes:
//   unannotated  cowq, default options: the watchdog detects the blocking
//   annotated    cowq, blockers use co_await cowq::blocking(...), watchdog
//                detection off (only the annotation acts)
//   nodetect     cowq, detection off and no annotation (other executors)
//   asio         an asio::io_context run by 2 threads: items are posted,
//                blockers are handlers that block
//   baseline     cowq, default options, the stream alone (no blockers)
// Blockers:
//   nanosleep    a raw nanosleep(10 ms)
//   pipe         a blocking read() of one byte from the blocker's own pipe,
//                which a timer thread fills every 10 ms (50 times)
//   none         no blockers (implied by --mode baseline)
// Options (defaults in brackets):
//   --items N        short items in the stream [20000]
//   --interval-us U  between two scheduled queue times, across all CPUs [20]
//   --batch-us U     the producer wakes this often and queues what is due [100]
//   --item-us U      arithmetic per item, calibrated at start-up [20]
//   --iters N        arithmetic loop iterations per item (skips calibration)
//   --blockers N     blocking coroutines [8]
//   --calls N        blocking calls each [50]
//   --block-ms N     length of one blocking call [10]
//   --dump FILE      also write every item's times (CSV, µs from t0)
//
// Items are cowq::work objects queued with queue_work_on(cpu, system_wq)
// (or asio::post); blockers are spawned on system_wq and move to their CPU
// with schedule_on, then wait for t0 with a cowq sleep.
//
// Prints one JSON line. Queueing latency is the time from an item's
// scheduled queue time (t0 + i * interval) to the item starting, so a late
// producer counts against the executor too; the producer's own lateness is
// reported separately (producer_lag_*). Throughput is items / (end of the
// last item - t0). Wall time runs from t0 to the end of the last item or
// blocker, whichever is later. own_cpus and other_cpus are the CPUs this
// process and every other one kept busy over the run (/proc/stat).
#include <cowq/cowq.hpp>

#include <asio.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/prctl.h>
#include <unistd.h>

using clk = std::chrono::steady_clock;
using std::chrono::nanoseconds;

namespace {

// --- configuration -------------------------------------------------------------

enum class mode { unannotated, annotated, nodetect, asio, baseline };
enum class blocker_kind { nanosleep, pipe, none };

struct config {
  mode m = mode::unannotated;
  blocker_kind b = blocker_kind::nanosleep;
  std::string mode_name = "unannotated";
  std::string blocker_name = "nanosleep";
  int items = 20000;
  long interval_ns = 20'000;
  long batch_ns = 100'000;
  double item_us = 20.0;
  std::uint64_t iters = 0;  // 0: calibrate
  int blockers = 8;
  int calls = 50;
  long block_ns = 10'000'000;
  bool calibrate_only = false;
  bool unbound = false;
  std::string dump;
};

[[noreturn]] void usage(const char* msg) {
  std::fprintf(stderr,
               "blocking_mix: %s\n"
               "usage: blocking_mix --mode unannotated|annotated|nodetect|asio|baseline\n"
               "                    --blocker nanosleep|pipe|none [--items N] [--interval-us U] [--batch-us U]\n"
               "                    [--item-us U] [--iters N] [--blockers N] [--calls N] [--block-ms N]\n"
               "                    [--dump FILE]\n"
               "       blocking_mix --calibrate [--item-us U]\n",
               msg);
  std::exit(2);
}

config parse(int argc, char** argv) {
  config c;
  bool blocker_given = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    auto val = [&]() -> const char* {
      if (i + 1 >= argc) usage(("missing value after " + std::string(a)).c_str());
      return argv[++i];
    };
    if (a == "--mode") {
      c.mode_name = val();
      if (c.mode_name == "unannotated") c.m = mode::unannotated;
      else if (c.mode_name == "annotated") c.m = mode::annotated;
      else if (c.mode_name == "nodetect") c.m = mode::nodetect;
      else if (c.mode_name == "asio") c.m = mode::asio;
      else if (c.mode_name == "baseline") c.m = mode::baseline;
      else usage("unknown mode");
    } else if (a == "--blocker") {
      blocker_given = true;
      c.blocker_name = val();
      if (c.blocker_name == "nanosleep") c.b = blocker_kind::nanosleep;
      else if (c.blocker_name == "pipe") c.b = blocker_kind::pipe;
      else if (c.blocker_name == "none") c.b = blocker_kind::none;
      else usage("unknown blocker");
    } else if (a == "--items") {
      c.items = std::atoi(val());
    } else if (a == "--interval-us") {
      c.interval_ns = std::lround(std::atof(val()) * 1000.0);
    } else if (a == "--batch-us") {
      c.batch_ns = std::lround(std::atof(val()) * 1000.0);
    } else if (a == "--item-us") {
      c.item_us = std::atof(val());
    } else if (a == "--iters") {
      c.iters = std::strtoull(val(), nullptr, 10);
    } else if (a == "--blockers") {
      c.blockers = std::atoi(val());
    } else if (a == "--calls") {
      c.calls = std::atoi(val());
    } else if (a == "--block-ms") {
      c.block_ns = std::lround(std::atof(val()) * 1e6);
    } else if (a == "--unbound") {
      c.unbound = true;
    } else if (a == "--dump") {
      c.dump = val();
    } else if (a == "--calibrate") {
      c.calibrate_only = true;
    } else {
      usage(("unknown argument " + std::string(a)).c_str());
    }
  }
  if (c.m == mode::baseline) {
    if (blocker_given && c.b != blocker_kind::none) usage("--mode baseline runs no blockers");
    c.b = blocker_kind::none;
    c.blocker_name = "none";
  }
  if (c.b == blocker_kind::none) c.blockers = 0;
  if (c.items <= 0 || c.interval_ns <= 0 || c.batch_ns <= 0 || c.item_us <= 0 || c.blockers < 0 || c.calls <= 0 ||
      c.block_ns <= 0)
    usage("bad numeric argument");
  return c;
}

// --- the short item's arithmetic ----------------------------------------------

// A dependent chain the compiler cannot fold; the empty asm keeps the loop.
std::uint64_t crunch(std::uint64_t iters, std::uint64_t x) noexcept {
  for (std::uint64_t i = 0; i < iters; ++i) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    x ^= x >> 29;
    asm volatile("" : "+r"(x));
  }
  return x;
}

// Iterations for item_us of arithmetic: the fastest of many short timings
// (the unpreempted one), so that load at start-up does not shrink items.
std::uint64_t calibrate(double item_us) {
  constexpr std::uint64_t probe = 20'000;
  crunch(probe * 10, 1);  // warm up, let the clock ramp
  double best_ns = 1e18;
  for (int i = 0; i < 200; ++i) {
    const auto a = clk::now();
    crunch(probe, static_cast<std::uint64_t>(i));
    const double ns = static_cast<double>(std::chrono::duration_cast<nanoseconds>(clk::now() - a).count());
    best_ns = std::min(best_ns, ns);
  }
  return std::max<std::uint64_t>(1, static_cast<std::uint64_t>(item_us * 1000.0 / best_ns * probe));
}

// --- CPU accounting ----------------------------------------------------------------

// Machine-wide busy CPU time (/proc/stat, every process) and this process's
// own, so that a run can say how much of the CPUs others took meanwhile.
struct cpu_sample {
  clk::time_point at{};
  double busy_s = 0;  // all CPUs, all processes (user, nice, system, irq, softirq, steal)
  double own_s = 0;   // this process (getrusage)
};

cpu_sample sample_cpu() {
  cpu_sample c;
  c.at = clk::now();
  if (std::FILE* f = std::fopen("/proc/stat", "r")) {
    unsigned long long v[8] = {};
    if (std::fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                    &v[6], &v[7]) == 8)
      c.busy_s = static_cast<double>(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) /
                 static_cast<double>(::sysconf(_SC_CLK_TCK));
    std::fclose(f);
  }
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  c.own_s = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
            static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
  return c;
}

// --- shared run state ------------------------------------------------------------

std::int64_t ns_since(clk::time_point t0, clk::time_point t) {
  return std::chrono::duration_cast<nanoseconds>(t - t0).count();
}

struct run_state {
  const config* cfg = nullptr;
  clk::time_point t0{};
  std::vector<std::int64_t> queued_ns;  // actual queue time of item i, from t0
  std::vector<std::int64_t> start_ns;   // item i started, from t0
  std::vector<std::int64_t> end_ns;     // item i finished, from t0
  std::vector<std::int64_t> call_ns;    // each blocking call's duration
  std::vector<int> pipe_rd, pipe_wr;    // one pipe per blocker (pipe variant)
  std::atomic<int> items_done{0};
  std::atomic<int> blockers_done{0};
  // Set once, by the last item and the last blocker. The main thread waits
  // on these, not on the counters: a counter that moves every 20 µs would
  // keep waking it (libstdc++'s wait spins and yields first), and it would
  // compete with the workers for the CPUs.
  std::atomic<int> all_items{0};
  std::atomic<int> all_blockers{0};
  std::atomic<std::int64_t> blockers_end_ns{0};
  std::atomic<std::uint64_t> sink{0};
  cpu_sample cpu_begin, cpu_end;  // around the measured window

  void run_item(int i) noexcept {
    start_ns[static_cast<std::size_t>(i)] = ns_since(t0, clk::now());
    const std::uint64_t x = crunch(cfg->iters, static_cast<std::uint64_t>(i) + 1);
    end_ns[static_cast<std::size_t>(i)] = ns_since(t0, clk::now());
    sink.fetch_add(x & 1, std::memory_order_relaxed);
    if (items_done.fetch_add(1, std::memory_order_acq_rel) + 1 == cfg->items) {
      all_items.store(1, std::memory_order_release);
      all_items.notify_all();
    }
  }

  // One naive blocking call: the thread sleeps in the kernel for ~10 ms.
  void block_once(int blocker, int call) noexcept {
    const auto a = clk::now();
    if (cfg->b == blocker_kind::nanosleep) {
      timespec ts{cfg->block_ns / 1'000'000'000, cfg->block_ns % 1'000'000'000};
      while (::nanosleep(&ts, &ts) == -1 && errno == EINTR) {
      }
    } else {
      char c;
      ssize_t r;
      do {
        r = ::read(pipe_rd[static_cast<std::size_t>(blocker)], &c, 1);
      } while (r == -1 && errno == EINTR);
      if (r != 1) {
        std::fprintf(stderr, "blocking_mix: pipe read: %s\n", r == 0 ? "EOF" : std::strerror(errno));
        std::abort();
      }
    }
    call_ns[static_cast<std::size_t>(blocker * cfg->calls + call)] = ns_since(a, clk::now());
  }

  void blocker_finished() noexcept {
    const std::int64_t now = ns_since(t0, clk::now());
    std::int64_t prev = blockers_end_ns.load(std::memory_order_relaxed);
    while (now > prev && !blockers_end_ns.compare_exchange_weak(prev, now)) {
    }
    if (blockers_done.fetch_add(1, std::memory_order_acq_rel) + 1 == cfg->blockers) {
      all_blockers.store(1, std::memory_order_release);
      all_blockers.notify_all();
    }
  }

  void wait_all() {
    cpu_begin = sample_cpu();
    while (all_items.load(std::memory_order_acquire) == 0) all_items.wait(0);
    if (cfg->blockers > 0)
      while (all_blockers.load(std::memory_order_acquire) == 0) all_blockers.wait(0);
    cpu_end = sample_cpu();
  }
};

// The producer and the pipe timer stand for events from outside (a NIC, a
// device): they run at nice -20 when allowed, so that a worker busy on the
// same CPU delays them less and their own lateness stays out of what is
// measured. Not SCHED_FIFO: cowq's pool lock spins and then calls
// sched_yield(), which does not let a normal-priority lock holder run on
// that CPU, so a real-time queuer can spin until RT throttling (~1 s).
std::atomic<int> g_producer_nice{99};
void precise_sleeps() {
  // The default 50 µs timer slack would blur a 20 µs schedule.
  ::prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
  const auto tid = static_cast<id_t>(::gettid());
  ::setpriority(PRIO_PROCESS, tid, -20);  // refused without permission: keeps the process's nice
  errno = 0;
  const int nice = ::getpriority(PRIO_PROCESS, tid);
  if (errno == 0) g_producer_nice.store(nice, std::memory_order_relaxed);
}

void sleep_until(clk::time_point t) {
  const auto ns = t.time_since_epoch().count();  // steady_clock is CLOCK_MONOTONIC
  timespec ts{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
  while (::clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
  }
}

// The producer: item i is due at t0 + i * interval. It wakes every
// batch_ns and calls queue(i) for every item due by then: waking for each
// item (every 20 µs) cost about 0.6 CPU on the test VM, more than the
// executors themselves spend, and distorted every mode alike.
template <typename Queue>
std::thread start_producer(run_state& st, Queue queue) {
  return std::thread([&st, queue] {
    precise_sleeps();
    const nanoseconds step(st.cfg->interval_ns);
    const nanoseconds batch(st.cfg->batch_ns);
    int i = 0;
    for (auto wake = st.t0; i < st.cfg->items; wake += batch) {
      // Everything due by now: a due time between two wake-ups waits for
      // the next one (at most batch_ns late, counted in the latency).
      if (clk::now() < wake) sleep_until(wake);
      const auto now = clk::now();
      for (; i < st.cfg->items && st.t0 + step * i <= now; ++i) {
        st.queued_ns[static_cast<std::size_t>(i)] = ns_since(st.t0, clk::now());
        queue(i);
      }
      if (wake < now - batch) wake = now - batch;  // fell behind: no burst of catch-up wake-ups
    }
  });
}

// The pipe variant's timer: one byte into every blocker's pipe every
// block_ns, as many times as each blocker reads.
std::thread start_pipe_timer(run_state& st) {
  return std::thread([&st] {
    precise_sleeps();
    for (int k = 1; k <= st.cfg->calls; ++k) {
      sleep_until(st.t0 + nanoseconds(st.cfg->block_ns) * k);
      for (int fd : st.pipe_wr) {
        const char c = 'x';
        while (::write(fd, &c, 1) == -1 && errno == EINTR) {
        }
      }
    }
  });
}

// --- cowq -----------------------------------------------------------------------

cowq::task<void> cowq_blocker(cowq::workqueue& wq, int cpu, int idx, run_state& st, bool annotated) {
  co_await cowq::schedule_on(wq, cpu);
  co_await cowq::sleep_until(st.t0);  // a cowq sleep: no worker is held
  for (int k = 0; k < st.cfg->calls; ++k) {
    if (annotated) {
      co_await cowq::blocking([&st, idx, k] { st.block_once(idx, k); });
    } else {
      st.block_once(idx, k);  // the naive way
    }
  }
  st.blocker_finished();
}

struct pool_figures {
  std::string name;
  std::uint64_t blocked_detected = 0, blocking_regions = 0, hogs_detected = 0;
  std::uint64_t workers_created = 0, items_executed = 0;
  int peak_workers = 0;
};

std::vector<pool_figures> run_cowq(const config& cfg, run_state& st) {
  cowq::runtime_options opts;
  if (cfg.m == mode::annotated || cfg.m == mode::nodetect) opts.watchdog.detect_blocking = false;
  opts.name = "bmix";
  cowq::runtime rt(std::move(opts));
  auto& wq = cfg.unbound ? rt.system_unbound_wq() : rt.system_wq();
  const std::vector<int> cpus(rt.cpus().begin(), rt.cpus().end());

  std::vector<std::unique_ptr<cowq::work>> works;
  works.reserve(static_cast<std::size_t>(cfg.items));
  for (int i = 0; i < cfg.items; ++i) works.push_back(std::make_unique<cowq::work>([&st, i] { st.run_item(i); }));

  // Let every pool's first worker come up before the clock starts.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  st.t0 = clk::now() + std::chrono::milliseconds(10);

  for (int b = 0; b < cfg.blockers; ++b)
    wq.spawn(cowq_blocker(wq, cpus[static_cast<std::size_t>(b) % cpus.size()], b, st, cfg.m == mode::annotated));
  std::thread timer;
  if (cfg.b == blocker_kind::pipe) timer = start_pipe_timer(st);
  std::thread producer = start_producer(st, [&](int i) {
    cowq::queue_work_on(cpus[static_cast<std::size_t>(i) % cpus.size()], wq, *works[static_cast<std::size_t>(i)]);
  });

  st.wait_all();
  producer.join();
  if (timer.joinable()) timer.join();

  std::vector<pool_figures> out;
  for (const auto& p : rt.stats().pools) {
    if (p.highpri || (p.cpu < 0) != cfg.unbound) continue;  // the normal pools the stream used
    out.push_back({p.name, p.blocked_detected, p.blocking_regions, p.hogs_detected, p.workers_created,
                   p.items_executed, p.peak_workers});
  }
  rt.shutdown();  // every item has run: the works can go
  return out;
}

// --- Asio -----------------------------------------------------------------------

void run_asio(const config& cfg, run_state& st) {
  asio::io_context ioc(2);
  auto guard = asio::make_work_guard(ioc);
  std::vector<std::thread> threads;
  for (int i = 0; i < 2; ++i) threads.emplace_back([&ioc] { ioc.run(); });

  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  st.t0 = clk::now() + std::chrono::milliseconds(10);

  // Blockers start at t0 as handlers that block the thread running them.
  std::vector<std::unique_ptr<asio::steady_timer>> starts;
  for (int b = 0; b < cfg.blockers; ++b) {
    starts.push_back(std::make_unique<asio::steady_timer>(ioc, st.t0));
    starts.back()->async_wait([&st, b](const std::error_code&) {
      for (int k = 0; k < st.cfg->calls; ++k) st.block_once(b, k);
      st.blocker_finished();
    });
  }
  std::thread timer;
  if (cfg.b == blocker_kind::pipe) timer = start_pipe_timer(st);
  std::thread producer = start_producer(st, [&](int i) { asio::post(ioc, [&st, i] { st.run_item(i); }); });

  st.wait_all();
  producer.join();
  if (timer.joinable()) timer.join();
  guard.reset();
  for (auto& t : threads) t.join();
}

// --- figures --------------------------------------------------------------------

double pct(std::vector<std::int64_t> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const auto k = static_cast<std::size_t>(std::min<double>(static_cast<double>(v.size() - 1),
                                                           p / 100.0 * static_cast<double>(v.size())));
  return static_cast<double>(v[k]);
}

}  // namespace

int main(int argc, char** argv) {
  const config cfg_in = parse(argc, argv);
  config cfg = cfg_in;
  if (cfg.calibrate_only) {
    std::printf("%llu\n", static_cast<unsigned long long>(calibrate(cfg.item_us)));
    return 0;
  }
  if (cfg.iters == 0) cfg.iters = calibrate(cfg.item_us);

  run_state st;
  st.cfg = &cfg;
  const auto n = static_cast<std::size_t>(cfg.items);
  st.queued_ns.assign(n, 0);
  st.start_ns.assign(n, 0);
  st.end_ns.assign(n, 0);
  st.call_ns.assign(static_cast<std::size_t>(cfg.blockers * cfg.calls), 0);
  if (cfg.b == blocker_kind::pipe) {
    for (int b = 0; b < cfg.blockers; ++b) {
      int fds[2];
      if (::pipe2(fds, O_CLOEXEC) != 0) {
        std::perror("pipe2");
        return 1;
      }
      st.pipe_rd.push_back(fds[0]);
      st.pipe_wr.push_back(fds[1]);
    }
  }

  std::vector<pool_figures> pools;
  if (cfg.m == mode::asio) {
    run_asio(cfg, st);
  } else {
    pools = run_cowq(cfg, st);
  }
  for (int fd : st.pipe_rd) ::close(fd);
  for (int fd : st.pipe_wr) ::close(fd);

  // Figures.
  std::vector<std::int64_t> lat(n), lag(n), run(n);
  std::int64_t last_end = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const std::int64_t due = static_cast<std::int64_t>(i) * cfg.interval_ns;
    lat[i] = st.start_ns[i] - due;
    lag[i] = st.queued_ns[i] - due;
    run[i] = st.end_ns[i] - st.start_ns[i];
    last_end = std::max(last_end, st.end_ns[i]);
  }
  const std::int64_t wall_ns = std::max(last_end, st.blockers_end_ns.load());
  double call_mean = 0, call_max = 0;
  for (auto c : st.call_ns) {
    call_mean += static_cast<double>(c);
    call_max = std::max(call_max, static_cast<double>(c));
  }
  if (!st.call_ns.empty()) call_mean /= static_cast<double>(st.call_ns.size());

  if (!cfg.dump.empty()) {
    if (std::FILE* f = std::fopen(cfg.dump.c_str(), "w")) {
      std::fprintf(f, "item,due_us,queued_us,start_us,end_us\n");
      auto to_us = [](std::int64_t ns) { return static_cast<double>(ns) / 1000.0; };
      for (std::size_t i = 0; i < n; ++i)
        std::fprintf(f, "%zu,%.1f,%.1f,%.1f,%.1f\n", i, to_us(static_cast<std::int64_t>(i) * cfg.interval_ns),
                     to_us(st.queued_ns[i]), to_us(st.start_ns[i]), to_us(st.end_ns[i]));
      std::fclose(f);
    }
  }

  // CPUs busy over the window: this process's, and everybody else's.
  const double window_s = std::chrono::duration<double>(st.cpu_end.at - st.cpu_begin.at).count();
  const double own_cpus = (st.cpu_end.own_s - st.cpu_begin.own_s) / window_s;
  const double other_cpus =
      std::max(0.0, (st.cpu_end.busy_s - st.cpu_begin.busy_s) - (st.cpu_end.own_s - st.cpu_begin.own_s)) / window_s;

  pool_figures tot;
  std::string per_pool = "[";
  for (const auto& p : pools) {
    tot.blocked_detected += p.blocked_detected;
    tot.blocking_regions += p.blocking_regions;
    tot.hogs_detected += p.hogs_detected;
    tot.workers_created += p.workers_created;
    tot.peak_workers = std::max(tot.peak_workers, p.peak_workers);
    char buf[256];
    std::snprintf(buf, sizeof buf,
                  "%s{\"pool\":\"%s\",\"blocked_detected\":%llu,\"blocking_regions\":%llu,"
                  "\"hogs_detected\":%llu,\"peak_workers\":%d,\"workers_created\":%llu,\"items_executed\":%llu}",
                  per_pool.size() > 1 ? "," : "", p.name.c_str(), static_cast<unsigned long long>(p.blocked_detected),
                  static_cast<unsigned long long>(p.blocking_regions), static_cast<unsigned long long>(p.hogs_detected),
                  p.peak_workers, static_cast<unsigned long long>(p.workers_created),
                  static_cast<unsigned long long>(p.items_executed));
    per_pool += buf;
  }
  per_pool += "]";

  const bool is_cowq = cfg.m != mode::asio;
  auto us = [](double ns) { return ns / 1000.0; };
  std::printf(
      "{\"mode\":\"%s\",\"blocker\":\"%s\",\"items\":%d,\"interval_us\":%.1f,\"batch_us\":%.1f,\"item_iters\":%llu,"
      "\"item_run_us_p50\":%.1f,\"item_run_us_p99\":%.1f,"
      "\"blockers\":%d,\"calls\":%d,\"block_ms\":%.1f,\"block_call_ms_mean\":%.2f,\"block_call_ms_max\":%.2f,"
      "\"wall_ms\":%.1f,\"stream_ms\":%.1f,\"throughput_per_s\":%.0f,"
      "\"lat_p50_us\":%.1f,\"lat_p99_us\":%.1f,\"lat_max_us\":%.1f,"
      "\"producer_lag_p50_us\":%.1f,\"producer_lag_p99_us\":%.1f,\"producer_lag_max_us\":%.1f,"
      "\"producer_nice\":%d,\"own_cpus\":%.2f,\"other_cpus\":%.2f,"
      "\"blocked_detected\":%s,\"blocking_regions\":%s,\"hogs_detected\":%s,\"peak_workers\":%s,"
      "\"workers_created\":%s,\"pools\":%s}\n",
      cfg.mode_name.c_str(), cfg.blocker_name.c_str(), cfg.items, us(static_cast<double>(cfg.interval_ns)), us(static_cast<double>(cfg.batch_ns)),
      static_cast<unsigned long long>(cfg.iters), us(pct(run, 50)), us(pct(run, 99)), cfg.blockers, cfg.calls,
      static_cast<double>(cfg.block_ns) / 1e6, call_mean / 1e6, call_max / 1e6, static_cast<double>(wall_ns) / 1e6,
      static_cast<double>(last_end) / 1e6, static_cast<double>(cfg.items) * 1e9 / static_cast<double>(last_end),
      us(pct(lat, 50)), us(pct(lat, 99)), us(pct(lat, 100)), us(pct(lag, 50)), us(pct(lag, 99)), us(pct(lag, 100)),
      g_producer_nice.load(), own_cpus, other_cpus,
      is_cowq ? std::to_string(tot.blocked_detected).c_str() : "null",
      is_cowq ? std::to_string(tot.blocking_regions).c_str() : "null",
      is_cowq ? std::to_string(tot.hogs_detected).c_str() : "null",
      is_cowq ? std::to_string(tot.peak_workers).c_str() : "null",
      is_cowq ? std::to_string(tot.workers_created).c_str() : "null", is_cowq ? per_pool.c_str() : "null");
  return st.sink.load() == 0xdeadbeef ? 3 : 0;  // keeps the arithmetic observable
}
