// TCP echo load driver: one thread, epoll, independent of cowq.
//
//   echo_load HOST PORT CONNECTIONS MSG_SIZE DEPTH DURATION_S WARMUP_S [SERVER_PID]
//
// Opens CONNECTIONS connections; each keeps DEPTH messages of MSG_SIZE bytes
// outstanding (a new one goes out as soon as one has fully come back).
// Every echoed byte is checked against what was sent: a message's content
// depends on its connection and sequence number (an 8-byte header carrying
// both, then a window into a random pattern whose start is a hash of the
// two), so a lost, duplicated, reordered or crossed byte is caught. A
// mismatch, an early EOF, a socket error or a stall is fatal: a message on
// stderr and exit status 1 (the JSON line still says errors > 0).
//
// After WARMUP_S seconds the counters restart and the measured window lasts
// DURATION_S seconds. Then no new message is sent and the driver waits for
// every outstanding one to come back (bounded), so every byte sent is
// verified. Round-trip latency runs from the write() that carries a
// message's first byte to the read() that brings back its last byte.
//
// If SERVER_PID is given, the server's CPU time (utime+stime from
// /proc/PID/stat, all threads) is read at the start and end of the measured
// window, giving server CPU per message.
//
// Output: one JSON line on stdout.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace {

std::uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(ts.tv_nsec);
}

std::uint64_t splitmix(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

constexpr std::size_t kHeader = 8;  // u32 connection id, u32 sequence (little endian)
constexpr std::size_t kRot = 256;

struct options {
  std::string host;
  std::string port;
  int conns = 0;
  std::size_t size = 0;
  int depth = 0;
  double duration = 0;
  double warmup = 0;
  long server_pid = 0;
};

struct conn {
  int fd = -1;
  std::uint32_t id = 0;
  // Transmit side: messages composed into txbuf, [tx_off, tx_len) unsent.
  std::uint32_t tx_seq = 0;  // next sequence to compose
  int owed = 0;              // messages allowed out but not yet composed
  std::unique_ptr<unsigned char[]> txbuf;
  std::size_t tx_off = 0, tx_len = 0;
  bool want_out = false;     // EPOLLOUT armed
  // Receive side.
  std::uint32_t rx_seq = 0;  // message being received
  std::size_t rx_off = 0;    // bytes of it received
  std::unique_ptr<std::uint64_t[]> sent_at;  // per sequence % depth
  std::uint64_t verified = 0;
};

struct stats {
  std::uint64_t msgs = 0;
  std::vector<std::uint32_t> lat_ns;
};

options g_opt;
std::vector<unsigned char> g_pattern;  // size + kRot random bytes
std::vector<conn> g_conns;
int g_epfd = -1;
bool g_measuring = false;
bool g_stop_sending = false;
stats g_stats;
std::uint64_t g_bytes_verified = 0;
std::uint64_t g_bytes_verified_window = 0;
std::uint64_t g_outstanding = 0;  // messages sent (composed) and not yet fully back
std::uint64_t g_errors = 0;

inline std::size_t rot_of(std::uint32_t c, std::uint32_t m) {
  return splitmix((static_cast<std::uint64_t>(c) << 32) | m) & (kRot - 1);
}

inline void header_of(std::uint32_t c, std::uint32_t m, unsigned char* h) {
  for (int i = 0; i < 4; ++i) h[i] = static_cast<unsigned char>(c >> (8 * i));
  for (int i = 0; i < 4; ++i) h[4 + i] = static_cast<unsigned char>(m >> (8 * i));
}

inline unsigned char expected_byte(std::uint32_t c, std::uint32_t m, std::size_t off) {
  if (off < kHeader) {
    unsigned char h[kHeader];
    header_of(c, m, h);
    return h[off];
  }
  return g_pattern[rot_of(c, m) + off];
}

double cpu_seconds_self() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// utime + stime of a process (every thread), in seconds; < 0 if unreadable.
double cpu_seconds_of(long pid) {
  if (pid <= 0) return -1;
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%ld/stat", pid);
  FILE* f = std::fopen(path, "r");
  if (f == nullptr) return -1;
  char buf[4096];
  const std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[n] = '\0';
  // Fields after the command name, which ends at the last ')'.
  const char* p = std::strrchr(buf, ')');
  if (p == nullptr) return -1;
  ++p;
  unsigned long long utime = 0, stime = 0;
  // state(3) ... utime is field 14, stime 15; after ')' comes field 3.
  int field = 2;
  const char* s = p;
  while (*s != '\0' && field < 15) {
    while (*s == ' ') ++s;
    ++field;
    if (field == 14) utime = std::strtoull(s, nullptr, 10);
    if (field == 15) stime = std::strtoull(s, nullptr, 10);
    while (*s != '\0' && *s != ' ') ++s;
  }
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// Busy and total jiffies of every CPU together, from /proc/stat's first
// line (busy = everything but idle and iowait).
struct cpu_jiffies {
  unsigned long long busy = 0, total = 0;
};
cpu_jiffies machine_jiffies() {
  cpu_jiffies j;
  FILE* f = std::fopen("/proc/stat", "r");
  if (f == nullptr) return j;
  unsigned long long v[10] = {};
  if (std::fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
                  &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]) >= 8) {
    // guest time is already counted in user time.
    for (int i = 0; i < 8; ++i) j.total += v[i];
    j.busy = j.total - v[3] - v[4];
  }
  std::fclose(f);
  return j;
}

[[noreturn]] void fatal_exit(const char* what);

// Whole-machine CPU use over the measured window, in CPUs (2.0 = both busy).
double g_machine_busy_cpus = -1;

void print_json(double window_s, double server_cpu_s, double driver_cpu_s, const char* fatal) {
  auto& v = g_stats.lat_ns;
  auto pct = [&](double q) -> double {
    if (v.empty()) return 0;
    std::size_t k = static_cast<std::size_t>(q * static_cast<double>(v.size() - 1));
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
    return v[k] / 1000.0;
  };
  const double p50 = pct(0.50), p90 = pct(0.90), p99 = pct(0.99), p999 = pct(0.999);
  const double mx = v.empty() ? 0 : *std::max_element(v.begin(), v.end()) / 1000.0;
  const double msgs_s = window_s > 0 ? static_cast<double>(g_stats.msgs) / window_s : 0;
  std::printf(
      "{\"host\":\"%s\",\"port\":%s,\"conns\":%d,\"size\":%zu,\"depth\":%d,"
      "\"window_s\":%.3f,\"msgs\":%" PRIu64 ",\"msgs_per_s\":%.1f,\"mib_per_s\":%.2f,"
      "\"p50_us\":%.2f,\"p90_us\":%.2f,\"p99_us\":%.2f,\"p999_us\":%.2f,\"max_us\":%.2f,"
      "\"bytes_verified\":%" PRIu64 ",\"bytes_verified_window\":%" PRIu64 ",\"errors\":%" PRIu64 ","
      "\"driver_cpu_pct\":%.1f,\"server_cpu_s\":%.4f,\"server_cpu_us_per_msg\":%.4f,"
      "\"machine_busy_pct\":%.1f,\"other_cpu_pct\":%.1f%s%s%s}\n",
      g_opt.host.c_str(), g_opt.port.c_str(), g_opt.conns, g_opt.size, g_opt.depth, window_s,
      g_stats.msgs, msgs_s, msgs_s * static_cast<double>(g_opt.size) / (1024.0 * 1024.0),
      p50, p90, p99, p999, mx, g_bytes_verified, g_bytes_verified_window, g_errors,
      window_s > 0 ? 100.0 * driver_cpu_s / window_s : 0.0, server_cpu_s,
      (server_cpu_s >= 0 && g_stats.msgs > 0) ? server_cpu_s * 1e6 / static_cast<double>(g_stats.msgs) : -1.0,
      g_machine_busy_cpus >= 0 ? 100.0 * g_machine_busy_cpus : -1.0,
      // What else ran on the machine meanwhile (other processes, interrupts).
      window_s > 0 && g_machine_busy_cpus >= 0
          ? 100.0 * (g_machine_busy_cpus - (driver_cpu_s + std::max(server_cpu_s, 0.0)) / window_s)
          : -1.0,
      fatal != nullptr ? ",\"fatal\":\"" : "", fatal != nullptr ? fatal : "",
      fatal != nullptr ? "\"" : "");
  std::fflush(stdout);
}

[[noreturn]] void fatal_exit(const char* what) {
  ++g_errors;
  std::fprintf(stderr, "echo_load: FATAL: %s\n", what);
  print_json(0, -1, 0, what);
  std::exit(1);
}

void set_events(conn& c, bool out) {
  if (c.want_out == out) return;
  epoll_event ev{};
  ev.events = EPOLLIN | (out ? EPOLLOUT : 0u);
  ev.data.u32 = c.id;
  if (epoll_ctl(g_epfd, EPOLL_CTL_MOD, c.fd, &ev) != 0) fatal_exit("epoll_ctl MOD failed");
  c.want_out = out;
}

// Composes owed messages into the transmit buffer and writes what it can.
void pump_tx(conn& c) {
  const std::size_t S = g_opt.size;
  if (c.owed > 0 && !g_stop_sending) {
    if (c.tx_off == c.tx_len) c.tx_off = c.tx_len = 0;
    const std::size_t cap = static_cast<std::size_t>(g_opt.depth) * S;
    if (c.tx_len + static_cast<std::size_t>(c.owed) * S > cap) {
      std::memmove(c.txbuf.get(), c.txbuf.get() + c.tx_off, c.tx_len - c.tx_off);
      c.tx_len -= c.tx_off;
      c.tx_off = 0;
    }
    const std::uint64_t t = now_ns();
    while (c.owed > 0) {
      unsigned char* p = c.txbuf.get() + c.tx_len;
      const std::uint32_t m = c.tx_seq++;
      unsigned char h[kHeader];
      header_of(c.id, m, h);
      const std::size_t hn = std::min(kHeader, S);
      std::memcpy(p, h, hn);
      if (S > kHeader) std::memcpy(p + kHeader, g_pattern.data() + rot_of(c.id, m) + kHeader, S - kHeader);
      c.tx_len += S;
      // Its first byte goes out in the write() below if nothing is queued
      // ahead of it; otherwise when the earlier bytes drain (the wait for
      // the socket is part of the round trip either way).
      c.sent_at[m % static_cast<std::uint32_t>(g_opt.depth)] = t;
      --c.owed;
      ++g_outstanding;
    }
  }
  while (c.tx_off < c.tx_len) {
    const ssize_t n = ::send(c.fd, c.txbuf.get() + c.tx_off, c.tx_len - c.tx_off, MSG_NOSIGNAL);
    if (n > 0) {
      c.tx_off += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      set_events(c, true);
      return;
    }
    char msg[256];
    std::snprintf(msg, sizeof msg, "send on connection %u failed: %s", c.id, std::strerror(errno));
    fatal_exit(msg);
  }
  set_events(c, false);
}

// Verifies received bytes; completes messages.
void on_bytes(conn& c, const unsigned char* p, std::size_t len, std::uint64_t t) {
  const std::size_t S = g_opt.size;
  while (len > 0) {
    if (c.rx_seq == c.tx_seq) {
      char msg[256];
      std::snprintf(msg, sizeof msg,
                    "connection %u: received %zu byte(s) more than were sent (after message %u)",
                    c.id, len, c.rx_seq);
      fatal_exit(msg);
    }
    const std::size_t n = std::min(len, S - c.rx_off);
    const std::uint32_t m = c.rx_seq;
    std::size_t off = c.rx_off;
    std::size_t i = 0;
    bool bad = false;
    for (; i < n && off + i < kHeader; ++i)
      if (p[i] != expected_byte(c.id, m, off + i)) { bad = true; break; }
    if (!bad && i < n) {
      const unsigned char* e = g_pattern.data() + rot_of(c.id, m) + off + i;
      if (std::memcmp(p + i, e, n - i) != 0) {
        while (p[i] == e[0]) { ++i; ++e; }
        bad = true;
      }
    }
    if (bad) {
      char msg[512];
      std::snprintf(msg, sizeof msg,
                    "echo mismatch on connection %u, message %u, byte %zu of %zu: expected 0x%02x, "
                    "got 0x%02x (%" PRIu64 " bytes verified on this connection before it)",
                    c.id, m, off + i, S, expected_byte(c.id, m, off + i), p[i], c.verified + i);
      fatal_exit(msg);
    }
    c.verified += n;
    g_bytes_verified += n;
    if (g_measuring) g_bytes_verified_window += n;
    c.rx_off += n;
    p += n;
    len -= n;
    if (c.rx_off == S) {
      c.rx_off = 0;
      ++c.rx_seq;
      --g_outstanding;
      if (g_measuring) {
        ++g_stats.msgs;
        const std::uint64_t d = t - c.sent_at[m % static_cast<std::uint32_t>(g_opt.depth)];
        g_stats.lat_ns.push_back(d > 0xFFFFFFFFu ? 0xFFFFFFFFu : static_cast<std::uint32_t>(d));
      }
      ++c.owed;
    }
  }
}

int connect_one(const addrinfo* ai) {
  const int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
  if (fd < 0) fatal_exit("socket() failed");
  if (::connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
    char msg[256];
    std::snprintf(msg, sizeof msg, "connect to %s:%s failed: %s", g_opt.host.c_str(),
                  g_opt.port.c_str(), std::strerror(errno));
    fatal_exit(msg);
  }
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

int usage() {
  std::fprintf(stderr,
               "usage: echo_load HOST PORT CONNECTIONS MSG_SIZE DEPTH DURATION_S WARMUP_S [SERVER_PID]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 8 && argc != 9) return usage();
  g_opt.host = argv[1];
  g_opt.port = argv[2];
  g_opt.conns = std::atoi(argv[3]);
  g_opt.size = static_cast<std::size_t>(std::strtoull(argv[4], nullptr, 10));
  g_opt.depth = std::atoi(argv[5]);
  g_opt.duration = std::atof(argv[6]);
  g_opt.warmup = std::atof(argv[7]);
  g_opt.server_pid = argc == 9 ? std::atol(argv[8]) : 0;
  if (g_opt.conns < 1 || g_opt.size < 1 || g_opt.depth < 1 || g_opt.duration <= 0 || g_opt.warmup < 0)
    return usage();

  // The shared pattern: messages are windows into it.
  g_pattern.resize(g_opt.size + kRot);
  std::uint64_t x = 0x1234567;
  for (auto& b : g_pattern) b = static_cast<unsigned char>((x = splitmix(x)) >> 56);

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (const int rc = getaddrinfo(g_opt.host.c_str(), g_opt.port.c_str(), &hints, &res); rc != 0) {
    std::fprintf(stderr, "echo_load: cannot resolve %s:%s: %s\n", g_opt.host.c_str(),
                 g_opt.port.c_str(), gai_strerror(rc));
    return 2;
  }

  g_epfd = epoll_create1(EPOLL_CLOEXEC);
  g_conns.resize(static_cast<std::size_t>(g_opt.conns));
  for (int i = 0; i < g_opt.conns; ++i) {
    conn& c = g_conns[static_cast<std::size_t>(i)];
    c.id = static_cast<std::uint32_t>(i);
    c.fd = connect_one(res);
    c.txbuf = std::make_unique<unsigned char[]>(static_cast<std::size_t>(g_opt.depth) * g_opt.size);
    c.sent_at = std::make_unique<std::uint64_t[]>(static_cast<std::size_t>(g_opt.depth));
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = c.id;
    if (epoll_ctl(g_epfd, EPOLL_CTL_ADD, c.fd, &ev) != 0) fatal_exit("epoll_ctl ADD failed");
  }
  freeaddrinfo(res);

  const double expected_msgs = 2e6 * g_opt.duration;
  g_stats.lat_ns.reserve(static_cast<std::size_t>(std::min(expected_msgs, 64e6)));

  const std::uint64_t t_start = now_ns();
  const std::uint64_t t_measure = t_start + static_cast<std::uint64_t>(g_opt.warmup * 1e9);
  const std::uint64_t t_end = t_measure + static_cast<std::uint64_t>(g_opt.duration * 1e9);
  const std::uint64_t drain_limit_ns = 5'000'000'000ull;
  const std::uint64_t stall_limit_ns = 5'000'000'000ull;
  std::uint64_t t_window_start = 0, t_window_end = 0;
  double server_cpu0 = -1, server_cpu = -1, driver_cpu0 = 0, driver_cpu = 0;
  cpu_jiffies mach0, mach1;
  bool measured = false;
  if (g_opt.warmup <= 0) {
    g_measuring = true;
    t_window_start = now_ns();
    server_cpu0 = cpu_seconds_of(g_opt.server_pid);
    driver_cpu0 = cpu_seconds_self();
    mach0 = machine_jiffies();
  }

  for (auto& c : g_conns) {
    c.owed = g_opt.depth;
    pump_tx(c);
  }

  std::vector<epoll_event> evs(static_cast<std::size_t>(std::min(g_opt.conns, 1024)));
  std::unique_ptr<unsigned char[]> rbuf(new unsigned char[1 << 18]);
  std::uint64_t last_progress = now_ns();
  std::uint64_t last_verified = 0;
  std::uint64_t t_drain = 0;
  for (;;) {
    const int n = epoll_wait(g_epfd, evs.data(), static_cast<int>(evs.size()), 100);
    if (n < 0 && errno != EINTR) fatal_exit("epoll_wait failed");
    for (int k = 0; k < n; ++k) {
      conn& c = g_conns[evs[static_cast<std::size_t>(k)].data.u32];
      const std::uint32_t e = evs[static_cast<std::size_t>(k)].events;
      if (e & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        for (;;) {
          const ssize_t r = ::recv(c.fd, rbuf.get(), 1 << 18, 0);
          if (r > 0) {
            on_bytes(c, rbuf.get(), static_cast<std::size_t>(r), now_ns());
            if (static_cast<std::size_t>(r) < (1u << 18)) break;
            continue;
          }
          if (r < 0 && errno == EINTR) continue;
          if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
          char msg[256];
          std::snprintf(msg, sizeof msg,
                        "connection %u: %s with %u message(s) outstanding (message %u, %zu bytes in)",
                        c.id, r == 0 ? "server closed the connection" : std::strerror(errno),
                        c.tx_seq - c.rx_seq, c.rx_seq, c.rx_off);
          fatal_exit(msg);
        }
      }
      pump_tx(c);
    }
    const std::uint64_t t = now_ns();
    if (g_bytes_verified != last_verified) {
      last_verified = g_bytes_verified;
      last_progress = t;
    } else if (t - last_progress > stall_limit_ns && g_outstanding > 0) {
      char msg[256];
      std::snprintf(msg, sizeof msg,
                    "stalled: no echoed byte for %.1f s with %" PRIu64 " message(s) outstanding",
                    static_cast<double>(t - last_progress) / 1e9, g_outstanding);
      fatal_exit(msg);
    }
    if (!g_measuring && !measured && t >= t_measure) {
      g_measuring = true;
      g_stats.msgs = 0;
      g_stats.lat_ns.clear();
      t_window_start = t;
      server_cpu0 = cpu_seconds_of(g_opt.server_pid);
      driver_cpu0 = cpu_seconds_self();
      mach0 = machine_jiffies();
    }
    if (g_measuring && t >= t_end) {
      g_measuring = false;
      measured = true;
      t_window_end = t;
      server_cpu = cpu_seconds_of(g_opt.server_pid);
      driver_cpu = cpu_seconds_self();
      mach1 = machine_jiffies();
      g_stop_sending = true;
      t_drain = t;
      for (auto& c : g_conns) c.owed = 0;
    }
    if (g_stop_sending) {
      bool unsent = false;
      for (auto& c : g_conns) unsent |= c.tx_off < c.tx_len;
      if (g_outstanding == 0 && !unsent) break;
      if (t - t_drain > drain_limit_ns) {
        char msg[256];
        std::snprintf(msg, sizeof msg,
                      "drain: %" PRIu64 " message(s) still not echoed %.1f s after the window",
                      g_outstanding, static_cast<double>(t - t_drain) / 1e9);
        fatal_exit(msg);
      }
    }
  }
  for (auto& c : g_conns) ::close(c.fd);

  const double window_s = static_cast<double>(t_window_end - t_window_start) / 1e9;
  const double server_cpu_s = (server_cpu0 >= 0 && server_cpu >= 0) ? server_cpu - server_cpu0 : -1;
  if (mach1.total > mach0.total && window_s > 0)
    g_machine_busy_cpus = static_cast<double>(mach1.busy - mach0.busy) /
                          static_cast<double>(sysconf(_SC_CLK_TCK)) / window_s;
  print_json(window_s, server_cpu_s, driver_cpu - driver_cpu0, nullptr);
  return g_errors == 0 ? 0 : 1;
}
