// An echo server on standalone Asio with C++20 coroutines: one io_context
// run by one thread, pinned to the given CPU. A comparison point for the
// TCP echo benchmark. Asio 1.22 on Linux uses its epoll reactor here (the
// default; its io_uring back end is opt-in and not enabled).
//
//   echo_asio [--port N] [--cpu C] [--address A]
//
// Same protocol as examples/echo_server: per connection, read_some into a
// 16 KiB buffer, write all of it, read again. Errors come back as codes
// (redirect_error), not exceptions. Prints "listening on ADDRESS:PORT" once
// ready; SIGINT/SIGTERM stop it.
#include <asio.hpp>

#include <sched.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

using asio::ip::tcp;

asio::awaitable<void> serve(tcp::socket s) {
  asio::error_code ec;
  s.set_option(tcp::no_delay(true), ec);
  std::vector<char> buf(16384);
  for (;;) {
    const std::size_t n =
        co_await s.async_read_some(asio::buffer(buf), asio::redirect_error(asio::use_awaitable, ec));
    if (ec) break;
    co_await asio::async_write(s, asio::buffer(buf.data(), n),
                               asio::redirect_error(asio::use_awaitable, ec));
    if (ec) break;
  }
}

asio::awaitable<void> accept_loop(tcp::acceptor& a) {
  auto ex = co_await asio::this_coro::executor;
  for (;;) {
    asio::error_code ec;
    tcp::socket s = co_await a.async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (ec == asio::error::operation_aborted) co_return;
      std::fprintf(stderr, "accept: %s\n", ec.message().c_str());
      continue;
    }
    asio::co_spawn(ex, serve(std::move(s)), asio::detached);
  }
}

int usage(const char* a0) {
  std::fprintf(stderr, "usage: %s [--port N] [--cpu C] [--address A]\n", a0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  int port = 7002;
  int cpu = -1;
  std::string address = "127.0.0.1";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) return usage(argv[0]);
    if (a == "--port") port = std::atoi(argv[++i]);
    else if (a == "--cpu") cpu = std::atoi(argv[++i]);
    else if (a == "--address") address = argv[++i];
    else return usage(argv[0]);
  }
  if (cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
      std::perror("sched_setaffinity");
      return 1;
    }
  }
  try {
    // Concurrency hint 1: one thread, so Asio drops its internal locking.
    asio::io_context io(1);
    tcp::acceptor acceptor(io);
    const tcp::endpoint ep(asio::ip::make_address(address), static_cast<unsigned short>(port));
    acceptor.open(ep.protocol());
    acceptor.set_option(tcp::acceptor::reuse_address(true));
    acceptor.bind(ep);
    acceptor.listen(asio::socket_base::max_listen_connections);
    const auto local = acceptor.local_endpoint();
    std::printf("listening on %s:%u\n", local.address().to_string().c_str(), local.port());
    std::fflush(stdout);
    asio::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&](const asio::error_code&, int) { io.stop(); });
    asio::co_spawn(io, accept_loop(acceptor), asio::detached);
    io.run();
    std::printf("stopped\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "echo_asio: %s\n", e.what());
    return 1;
  }
  return 0;
}
