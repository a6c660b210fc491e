// A TCP echo server: one coroutine per connection on the per-CPU pools.
//
//   echo_server [--port N] [--cpus LIST] [--address A]
//
// Prints "listening on ADDRESS:PORT" once ready (port 0 picks a free one),
// and runs until SIGINT or SIGTERM, then shuts down cleanly.
#include <cowq/cowq.hpp>
#include <cowq/net.hpp>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

std::atomic<bool> g_stop{false};
std::stop_source g_stop_source;

cowq::task<void> serve_connection(cowq::net::stream s) {
  s.set_nodelay(true);
  std::vector<std::byte> buf(16384);
  for (;;) {
    auto r = co_await s.recv(buf, g_stop_source.get_token());
    if (!r || r.value == 0) break;  // error, EOF or shutdown
    auto w = co_await s.send_all(std::span(buf).first(r.value));
    if (!w) break;
  }
  co_await s.close();
}

cowq::task<void> accept_loop(cowq::runtime& rt, cowq::net::tcp_listener& l) {
  while (!g_stop.load()) {
    auto c = co_await l.accept(g_stop_source.get_token());
    if (!c) {
      if (c.error == std::errc::operation_canceled) break;
      // EMFILE and friends: report, back off briefly, keep serving.
      std::fprintf(stderr, "accept: %s\n", c.error.message().c_str());
      co_await cowq::sleep_for(std::chrono::milliseconds(10));
      continue;
    }
    rt.system_wq().spawn(serve_connection(std::move(c.value)));
  }
}

int usage(const char* argv0) {
  std::fprintf(stderr, "usage: %s [--port N] [--cpus LIST] [--address A]\n", argv0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  cowq::runtime_options opts;
  int port = 7000;
  std::string address = "127.0.0.1";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) return usage(argv[0]);
    if (a == "--port") {
      char* end = nullptr;
      long p = std::strtol(argv[++i], &end, 10);
      if (*end != '\0' || p < 0 || p > 65535) return usage(argv[0]);
      port = static_cast<int>(p);
    } else if (a == "--cpus") {
      try {
        opts.cpus = cowq::parse_cpu_list(argv[++i]);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 2;
      }
    } else if (a == "--address") {
      address = argv[++i];
    } else {
      return usage(argv[0]);
    }
  }

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  // Blocked before any worker starts, so only the main thread takes them.
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  try {
    cowq::runtime rt(opts);
    asio::error_code ec;
    auto addr = asio::ip::make_address(address, ec);
    if (ec) {
      std::fprintf(stderr, "bad address %s: %s\n", address.c_str(), ec.message().c_str());
      return 2;
    }
    auto listener = cowq::net::tcp_listener::bind({addr, static_cast<unsigned short>(port)});
    auto ep = listener.local_endpoint();
    std::printf("listening on %s:%u\n", ep.address().to_string().c_str(), ep.port());
    std::fflush(stdout);
    rt.system_wq().spawn(accept_loop(rt, listener));

    int sig = 0;
    sigwait(&set, &sig);
    g_stop = true;
    g_stop_source.request_stop();
    rt.shutdown();
    std::printf("stopped\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "echo_server: %s\n", e.what());
    return 1;
  }
  return 0;
}
