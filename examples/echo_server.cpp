// A TCP echo server: one coroutine per connection on the per-CPU pools.
//
//   echo_server [--port N] [--cpus LIST] [--address A] [--recv shared|own]
//
// --recv own (the default) gives each connection a 16 KiB buffer of its
// own and a recv request per read. --recv shared receives through a
// cowq::net::receiver instead: one multishot request per connection, bytes
// in the pool's shared buffers, so an idle connection holds no buffer (a
// ninth of the memory per idle connection), at more CPU per message once
// more bytes are in flight than those buffers hold (docs/benchmarks.md).
//
// Prints "listening on ADDRESS:PORT" once ready (port 0 picks a free one),
// and runs until SIGINT or SIGTERM, then shuts down cleanly.
#include "common.hpp"

#include <cowq/cowq.hpp>
#include <cowq/net.hpp>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

std::atomic<bool> g_stop{false};
std::stop_source g_stop_source;

bool g_shared_buffers = false;

cowq::task<void> serve_connection(cowq::net::stream s) {
  s.set_nodelay(true);
  if (g_shared_buffers) {
    cowq::net::receiver rx(s);
    for (;;) {
      auto r = co_await rx.recv(g_stop_source.get_token());
      if (!r || r.value.empty()) break;  // error, EOF or shutdown
      auto w = co_await s.send_all(r.value.data());
      if (!w) break;
    }
  } else {
    std::vector<std::byte> buf(16384);
    for (;;) {
      auto r = co_await s.recv(buf, g_stop_source.get_token());
      if (!r || r.value == 0) break;
      auto w = co_await s.send_all(std::span(buf).first(r.value));
      if (!w) break;
    }
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
  std::fprintf(stderr, "usage: %s [--port N] [--cpus LIST] [--address A] [--recv shared|own]\n",
               argv0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  cowq::runtime_options opts;
  examples::server_flags flags(7000);
  for (int i = 1; i < argc; ++i) {
    if (i + 1 >= argc) return usage(argv[0]);
    if (std::strcmp(argv[i], "--recv") == 0) {
      const std::string v = argv[++i];
      if (v != "shared" && v != "own") {
        std::fprintf(stderr, "--recv: '%s' is neither shared nor own\n", v.c_str());
        return 2;
      }
      g_shared_buffers = v == "shared";
      continue;
    }
    switch (flags.take(argv[i], argv[i + 1], opts)) {
      case examples::server_flags::taken::yes: ++i; break;
      case examples::server_flags::taken::bad: return 2;
      case examples::server_flags::taken::no: return usage(argv[0]);
    }
  }

  examples::stop_signals signals;
  try {
    cowq::runtime rt(opts);
    auto listener = flags.listen();
    rt.system_wq().spawn(accept_loop(rt, listener));

    signals.wait();
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
