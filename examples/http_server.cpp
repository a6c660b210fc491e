// An HTTP/1.1 server: the examples/http component behind a command line.
//
//   http_server [--port N] [--cpus LIST] [--address A]
//               [--idle-timeout-ms N] [--header-timeout-ms N] [--send-timeout-ms N]
//               [--watchdog-tick-us N]
//
// Prints "listening on ADDRESS:PORT" once ready (port 0 picks a free one),
// serves GET / ("Hello, World!"), /block?ms=N and /stats (see
// http/server.hpp) until SIGINT or SIGTERM, then stops accepting, lets the
// open connections finish their answers, prints the counters and exits.
#include "common.hpp"
#include "http/server.hpp"

#include <cowq/cowq.hpp>
#include <cowq/net.hpp>

#include <atomic>
#include <cstdio>
#include <exception>
#include <stop_token>
#include <string>

namespace {

int usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [--port N] [--cpus LIST] [--address A] [--idle-timeout-ms N]"
               " [--header-timeout-ms N] [--send-timeout-ms N] [--watchdog-tick-us N]\n",
               argv0);
  return 2;
}

struct done_flag {
  // The release store pairs with the acquire load in main's wait.
  std::atomic<std::uint32_t> done{0};
  std::exception_ptr error;
};

cowq::task<void> run(cowq::runtime& rt, cowq::net::tcp_listener& l, const http::http_options& opts,
                     http::http_stats& stats, std::stop_token stop, done_flag& f) {
  try {
    co_await http::serve(rt, l, opts, stats, std::move(stop));
  } catch (...) {
    f.error = std::current_exception();
  }
  f.done.store(1, std::memory_order_release);
  f.done.notify_one();
}

}  // namespace

int main(int argc, char** argv) {
  cowq::runtime_options opts;
  http::http_options http_opts;
  examples::server_flags flags(8080);
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) return usage(argv[0]);
    const char* v = argv[++i];
    const auto taken = flags.take(a, v, opts);
    if (taken == examples::server_flags::taken::bad) return 2;
    if (taken == examples::server_flags::taken::yes) continue;
    unsigned long long n = 0;
    if (a == "--idle-timeout-ms") {
      if (!examples::parse_number(v, 1, 86'400'000, n)) return usage(argv[0]);
      http_opts.idle_timeout = std::chrono::milliseconds(n);
    } else if (a == "--header-timeout-ms") {
      if (!examples::parse_number(v, 1, 86'400'000, n)) return usage(argv[0]);
      http_opts.header_timeout = std::chrono::milliseconds(n);
    } else if (a == "--send-timeout-ms") {
      if (!examples::parse_number(v, 1, 86'400'000, n)) return usage(argv[0]);
      http_opts.send_timeout = std::chrono::milliseconds(n);
    } else if (a == "--watchdog-tick-us") {
      // How soon a worker blocked in /block is noticed (about two ticks),
      // against what the watchdog costs while the server is busy.
      if (!examples::parse_number(v, 50, 1'000'000, n)) return usage(argv[0]);
      opts.watchdog.tick = std::chrono::microseconds(n);
    } else {
      return usage(argv[0]);
    }
  }

  examples::stop_signals signals;
  try {
    cowq::runtime rt(opts);
    auto listener = flags.listen();

    http::http_stats stats;
    std::stop_source stop;
    done_flag served;
    rt.system_wq().spawn(run(rt, listener, http_opts, stats, stop.get_token(), served));

    signals.wait();
    stop.request_stop();
    // serve() completes once every connection is closed; only then may the
    // runtime go (it would cancel the answers still being sent).
    while (served.done.load(std::memory_order_acquire) == 0) served.done.wait(0);
    rt.shutdown();
    if (served.error) std::rethrow_exception(served.error);
    std::printf("stopped: %llu responses (200: %llu, 404: %llu), %llu connections\n",
                static_cast<unsigned long long>(stats.responses()),
                static_cast<unsigned long long>(stats.responses(200)),
                static_cast<unsigned long long>(stats.responses(404)),
                static_cast<unsigned long long>(stats.connections_accepted.load()));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "http_server: %s\n", e.what());
    return 1;
  }
  return 0;
}
