// What the example servers' main()s share: the options each of them takes
// (--port, --cpus, --address), numbers read strictly, the stop signals,
// and the listening socket announced on stdout.
#pragma once

#include <cowq/cowq.hpp>
#include <cowq/net.hpp>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

namespace examples {

// A whole decimal number within [min, max]: no sign, no space, nothing after.
inline bool parse_number(const char* s, unsigned long long min, unsigned long long max,
                         unsigned long long& out) {
  if (*s < '0' || *s > '9') return false;
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(s, &end, 10);
  if (errno != 0 || *end != '\0' || v < min || v > max) return false;
  out = v;
  return true;
}

// --port, --cpus and --address.
struct server_flags {
  explicit server_flags(unsigned short default_port) : port(default_port) {}

  enum class taken { no, yes, bad };
  // Whether flag is one of these, given its value; bad says it is but the
  // value is not valid, and why on stderr.
  taken take(const std::string& flag, const char* value, cowq::runtime_options& opts) {
    if (flag == "--port") {
      unsigned long long n = 0;
      if (!parse_number(value, 0, 65535, n)) {
        std::fprintf(stderr, "--port: %s is not a port number\n", value);
        return taken::bad;
      }
      port = static_cast<unsigned short>(n);
    } else if (flag == "--cpus") {
      try {
        opts.cpus = cowq::parse_cpu_list(value);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "--cpus: %s\n", e.what());
        return taken::bad;
      }
    } else if (flag == "--address") {
      asio::error_code ec;
      address = asio::ip::make_address(value, ec);
      if (ec) {
        std::fprintf(stderr, "--address: bad address %s: %s\n", value, ec.message().c_str());
        return taken::bad;
      }
    } else {
      return taken::no;
    }
    return taken::yes;
  }

  // Binds and prints "listening on ADDRESS:PORT", the line the tests and
  // benchmark scripts wait for (port 0 picks a free one).
  cowq::net::tcp_listener listen() const {
    auto listener = cowq::net::tcp_listener::bind({address, port});
    const auto ep = listener.local_endpoint();
    std::printf("listening on %s:%u\n", ep.address().to_string().c_str(), ep.port());
    std::fflush(stdout);
    return listener;
  }

  unsigned short port;
  asio::ip::address address = asio::ip::make_address_v4("127.0.0.1");
};

// SIGINT and SIGTERM, blocked from construction on in this thread and in
// every thread it starts later: made before the runtime, so that no worker
// takes them and wait() on the main thread does.
class stop_signals {
 public:
  stop_signals() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGINT);
    sigaddset(&set_, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set_, nullptr);
  }
  int wait() {
    int sig = 0;
    sigwait(&set_, &sig);
    return sig;
  }

 private:
  sigset_t set_;
};

}  // namespace examples
