// The flagship demo: an HTTP server on cowq keeps answering while some of
// its handlers block, without a line of code saying so.
//
// It starts examples/http's server on 127.0.0.1, then drives it from a
// second cowq runtime (the load generator, plain coroutines on sockets):
//   1. steady:   keep-alive GET / on many connections;
//   2. blocking: the same, while a few connections call /block?ms=N, whose
//                handler sleeps in a raw nanosleep() on the server's worker;
//   3. quiet:    no load, until the pools have reaped the workers they
//                added while handlers blocked.
// For each phase it prints requests per second, GET / latency percentiles
// and the server's workers, then the server's pool table.
//
//   demo [--cpus LIST] [--seconds N] [--connections N] [--blockers N] [--block-ms N]
#include "common.hpp"
#include "http/server.hpp"

#include <cowq/cowq.hpp>
#include <cowq/net.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

namespace {

struct demo_options {
  std::vector<int> cpus;
  int seconds = 3;       // per loaded phase
  int connections = 32;  // GET / clients
  int blockers = 4;      // /block clients
  int block_ms = 200;
};

// What the load generator's clients report, merged under a mutex once per
// client at the end of a phase.
struct phase_result {
  std::mutex mutex;
  std::vector<std::uint32_t> latencies_us;  // GET / round trips
  std::uint64_t requests = 0;               // every answered request
  std::uint64_t blocked_requests = 0;
  std::uint64_t errors = 0;
  std::string first_error;

  void add(std::vector<std::uint32_t>& lat, std::uint64_t n, std::uint64_t blocked,
           std::uint64_t err, const std::string& what) {
    std::lock_guard g(mutex);
    latencies_us.insert(latencies_us.end(), lat.begin(), lat.end());
    requests += n;
    blocked_requests += blocked;
    errors += err;
    if (first_error.empty()) first_error = what;
  }
};

// Reads one HTTP response (head plus Content-Length body) from s, keeping
// any bytes beyond it in buf for the next one. Returns the status, or -1.
cowq::task<int> read_response(cowq::net::stream& s, std::string& buf) {
  for (;;) {
    const auto head_end = buf.find("\r\n\r\n");
    if (head_end != std::string::npos) {
      int status = std::atoi(buf.c_str() + 9);  // "HTTP/1.1 200"
      std::size_t body = 0;
      const auto cl = buf.find("Content-Length: ");
      if (cl != std::string::npos && cl < head_end) body = std::strtoul(buf.c_str() + cl + 16, nullptr, 10);
      const std::size_t total = head_end + 4 + body;
      if (buf.size() >= total) {
        buf.erase(0, total);
        co_return status;
      }
    }
    char chunk[4096];
    auto r = co_await s.recv(std::as_writable_bytes(std::span(chunk)), 10s);
    if (!r || r.value == 0) co_return -1;
    buf.append(chunk, r.value);
  }
}

// One keep-alive client: sends `request` and waits for its answer, again
// and again, until the deadline.
cowq::task<void> client(cowq::net::tcp_endpoint ep, std::string request, bool is_blocker,
                        clock_type::time_point until, phase_result& out) {
  std::vector<std::uint32_t> lat;
  lat.reserve(1 << 16);
  std::uint64_t n = 0, err = 0;
  std::string what;
  auto c = co_await cowq::net::connect(ep, 5s);
  if (!c) {
    out.add(lat, 0, 0, 1, "connect: " + c.error.message());
    co_return;
  }
  c.value.set_nodelay(true);
  std::string buf;
  while (clock_type::now() < until) {
    const auto t0 = clock_type::now();
    auto w = co_await c.value.send_all(std::as_bytes(std::span(request)), 10s);
    if (!w) {
      ++err;
      what = "send: " + w.error.message();
      break;
    }
    const int status = co_await read_response(c.value, buf);
    if (status != 200) {
      ++err;
      what = "answer status " + std::to_string(status);
      break;
    }
    ++n;
    if (!is_blocker)
      lat.push_back(static_cast<std::uint32_t>(
          std::chrono::duration_cast<std::chrono::microseconds>(clock_type::now() - t0).count()));
  }
  co_await c.value.close();
  out.add(lat, is_blocker ? 0 : n, is_blocker ? n : 0, err, what);
}

// Samples the server's pools while a phase runs: the most workers seen.
struct sampler {
  cowq::runtime& rt;
  std::atomic<bool> stop{false};
  std::atomic<int> peak_workers{0};
  std::thread thread{[this] {
    while (!stop.load()) {
      int w = 0;
      for (auto& p : rt.stats().pools) w += p.workers;
      int seen = peak_workers.load();
      while (w > seen && !peak_workers.compare_exchange_weak(seen, w)) {
      }
      std::this_thread::sleep_for(20ms);
    }
  }};
  ~sampler() {
    stop = true;
    thread.join();
  }
};

int total_workers(const cowq::runtime_stats& s) {
  int w = 0;
  for (auto& p : s.pools) w += p.workers;
  return w;
}

std::uint64_t total_blocked(const cowq::runtime_stats& s) {
  std::uint64_t b = 0;
  for (auto& p : s.pools) b += p.blocked_detected;
  return b;
}

std::uint32_t percentile(std::vector<std::uint32_t>& v, double p) {
  if (v.empty()) return 0;
  const auto k = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

bool run_phase(const char* name, cowq::runtime& load, cowq::runtime& server,
               const cowq::net::tcp_endpoint& ep, const demo_options& o, int blockers) {
  phase_result res;
  const auto before = server.stats();
  sampler s{server};
  const auto start = clock_type::now();
  const auto until = start + std::chrono::seconds(o.seconds);
  std::vector<cowq::task<void>> clients;
  const std::string get = "GET / HTTP/1.1\r\nHost: demo\r\n\r\n";
  const std::string block =
      "GET /block?ms=" + std::to_string(o.block_ms) + " HTTP/1.1\r\nHost: demo\r\n\r\n";
  for (int i = 0; i < o.connections; ++i) clients.push_back(client(ep, get, false, until, res));
  for (int i = 0; i < blockers; ++i) clients.push_back(client(ep, block, true, until, res));
  cowq::sync_wait(load.system_wq(), cowq::when_all(std::move(clients)));
  const double secs = std::chrono::duration<double>(clock_type::now() - start).count();
  const auto after = server.stats();

  const auto slow = std::count_if(res.latencies_us.begin(), res.latencies_us.end(),
                                  [&](std::uint32_t us) { return us >= static_cast<std::uint32_t>(o.block_ms) * 500; });
  std::printf("%-9s %7.0f req/s  GET / p50 %5u us  p99 %6u us  max %6u us  >= %d ms: %ld"
              "  | /block answered %3llu  | workers %d -> peak %d, blocked workers found %llu\n",
              name, static_cast<double>(res.requests) / secs, percentile(res.latencies_us, 0.50),
              percentile(res.latencies_us, 0.99), percentile(res.latencies_us, 1.0), o.block_ms / 2,
              static_cast<long>(slow),
              static_cast<unsigned long long>(res.blocked_requests), total_workers(before),
              s.peak_workers.load(),
              static_cast<unsigned long long>(total_blocked(after) - total_blocked(before)));
  if (res.errors != 0) {
    std::printf("  %llu client errors, first: %s\n", static_cast<unsigned long long>(res.errors),
                res.first_error.c_str());
    return false;
  }
  return true;
}

int usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [--cpus LIST] [--seconds N] [--connections N] [--blockers N] "
               "[--block-ms N]\n",
               argv0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  demo_options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) return usage(argv[0]);
    const char* v = argv[++i];
    unsigned long long n = 0;
    const bool num_ok = examples::parse_number(v, 0, 100000, n);
    if (a == "--cpus") {
      try {
        o.cpus = cowq::parse_cpu_list(v);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 2;
      }
    } else if (a == "--seconds" && num_ok && n > 0) {
      o.seconds = static_cast<int>(n);
    } else if (a == "--connections" && num_ok && n > 0) {
      o.connections = static_cast<int>(n);
    } else if (a == "--blockers" && num_ok) {
      o.blockers = static_cast<int>(n);
    } else if (a == "--block-ms" && num_ok && n <= 10000) {
      o.block_ms = static_cast<int>(n);
    } else {
      return usage(argv[0]);
    }
  }

  try {
    // Workers a pool adds while handlers block are reaped after 2 s idle
    // (300 s by default), so the demo can show it.
    cowq::runtime server({.cpus = o.cpus, .idle_timeout = 2s, .name = "http"});
    cowq::runtime load({.name = "load"});
    http::http_options hopts;
    http::http_stats hstats;
    auto listener = cowq::net::tcp_listener::bind({asio::ip::make_address("127.0.0.1"), 0});
    const auto ep = listener.local_endpoint();
    std::stop_source stop;
    std::atomic<bool> served{false};
    server.system_wq().spawn([](cowq::runtime& rt, cowq::net::tcp_listener& l,
                                const http::http_options& ho, http::http_stats& hs,
                                std::stop_token tok, std::atomic<bool>& done) -> cowq::task<void> {
      co_await http::serve(rt, l, ho, hs, tok);
      done = true;
      done.notify_all();
    }(server, listener, hopts, hstats, stop.get_token(), served));

    std::printf("cowq demo: HTTP server on %s:%u, pools on %zu CPUs; load from a second runtime\n",
                ep.address().to_string().c_str(), ep.port(), server.cpus().size());
    std::printf("%d keep-alive GET / connections; in the blocking phase %d more call /block?ms=%d,\n"
                "whose handler sleeps in nanosleep() on the server's worker, unannotated.\n\n",
                o.connections, o.blockers, o.block_ms);

    bool ok = run_phase("steady", load, server, ep, o, 0);
    const int baseline = total_workers(server.stats());
    ok = run_phase("blocking", load, server, ep, o, o.blockers) && ok;

    // Quiet: the workers added for blocked handlers go once idle 2 s (a
    // pool keeps two idle ones in reserve, as the kernel's do).
    auto destroyed = [&] {
      std::uint64_t d = 0;
      for (auto& p : server.stats().pools) d += p.workers_destroyed;
      return d;
    };
    const int peak = total_workers(server.stats());
    const std::uint64_t destroyed_before = destroyed();
    const auto quiet_start = clock_type::now();
    int now_workers = peak;
    while (clock_type::now() - quiet_start < 20s) {
      now_workers = total_workers(server.stats());
      if (now_workers <= baseline) break;
      std::this_thread::sleep_for(100ms);
    }
    std::printf("quiet     workers %d -> %d: %llu reaped after %.1f s idle (idle_timeout 2 s)\n\n",
                peak, now_workers, static_cast<unsigned long long>(destroyed() - destroyed_before),
                std::chrono::duration<double>(clock_type::now() - quiet_start).count());

    stop.request_stop();
    while (!served.load()) served.wait(false);
    std::printf("server answered %llu requests (%llu with status 200) on %llu connections\n\n",
                static_cast<unsigned long long>(hstats.responses()),
                static_cast<unsigned long long>(hstats.responses(200)),
                static_cast<unsigned long long>(hstats.connections_accepted.load()));
    std::printf("%s", cowq::to_string(server.stats()).c_str());
    load.shutdown();
    server.shutdown();
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "demo: %s\n", e.what());
    return 1;
  }
}
