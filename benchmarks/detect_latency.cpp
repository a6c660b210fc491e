// How long a pool stays stuck behind a worker that blocks without saying so.
//
// One CPU's pool. A coroutine queues a short item on its own pool, notes the
// time and blocks in read() on an empty pipe. The item can only run once the
// watchdog has found the blocked worker and another worker has taken over;
// it notes the time and writes the byte that releases the blocker. The
// latency is the difference. "warm" runs follow each other closely (the
// watchdog is awake); "cold" runs leave 50 ms between them, so the watchdog
// has gone to sleep and is woken by the queueing. "marked" runs wrap the
// read in co_await cowq::blocking() for comparison.
//
//   detect_latency [--runs N]     (prints one JSON line per kind)
#include <cowq/cowq.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

using clk = std::chrono::steady_clock;

struct probe {
  int fds[2];
  clk::time_point blocked_at;
  clk::time_point ran_at;
};

cowq::task<void> item(probe* p) {
  p->ran_at = clk::now();
  char c = 'x';
  if (::write(p->fds[1], &c, 1) != 1) std::abort();
  co_return;
}

cowq::task<void> blocker(cowq::workqueue* wq, probe* p, bool marked) {
  wq->spawn(item(p));
  char c;
  p->blocked_at = clk::now();
  if (marked) {
    co_await cowq::blocking([&] { return ::read(p->fds[0], &c, 1); });
  } else if (::read(p->fds[0], &c, 1) != 1) {
    std::abort();
  }
}

void report(const char* kind, std::vector<double> us) {
  std::sort(us.begin(), us.end());
  auto pct = [&](double q) { return us[static_cast<std::size_t>(q * static_cast<double>(us.size() - 1))]; };
  std::printf(
      "{\"kind\":\"%s\",\"runs\":%zu,\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,\"max_us\":%.1f}\n",
      kind, us.size(), pct(0.5), pct(0.9), pct(0.99), us.back());
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 300;
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], "--runs") == 0) runs = std::atoi(argv[i + 1]);

  cowq::runtime rt({.cpus = {0}});
  struct kind {
    const char* name;
    bool marked;
    std::chrono::milliseconds gap;
  };
  for (kind k : {kind{"unmarked_warm", false, std::chrono::milliseconds(0)},
                 kind{"unmarked_cold", false, std::chrono::milliseconds(50)},
                 kind{"marked", true, std::chrono::milliseconds(0)}}) {
    std::vector<double> us;
    for (int r = 0; r < runs; ++r) {
      probe p{};
      if (::pipe(p.fds) != 0) return 1;
      cowq::sync_wait(rt, blocker(&rt.system_wq(), &p, k.marked));
      us.push_back(std::chrono::duration<double, std::micro>(p.ran_at - p.blocked_at).count());
      ::close(p.fds[0]);
      ::close(p.fds[1]);
      if (k.gap.count() > 0) std::this_thread::sleep_for(k.gap);
    }
    report(k.name, us);
  }
  auto s = rt.stats();
  std::printf("{\"blocked_detected\":%llu,\"blocking_regions\":%llu,\"peak_workers\":%d}\n",
              static_cast<unsigned long long>(s.pools[0].blocked_detected),
              static_cast<unsigned long long>(s.pools[0].blocking_regions), s.pools[0].peak_workers);
  return 0;
}
