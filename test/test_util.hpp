// Helpers shared by the suites: waiting on conditions, never on time.
#pragma once

#include <atomic>
#include <chrono>
#include <dirent.h>
#include <sched.h>
#include <fstream>
#include <functional>
#include <string>
#include <sys/syscall.h>
#include <unistd.h>
#include <algorithm>
#include <span>
#include <thread>
#include <utility>
#include <vector>

#include <cowq/net.hpp>
#include <cowq/task.hpp>

#include <gtest/gtest.h>
#include <liburing.h>

#include <cstring>

namespace cowq::test {

// Runs a capturing coroutine lambda with its closure kept alive in this
// frame: spawning `[&]() -> task<void> {...}()` directly would leave the
// coroutine pointing at a destroyed temporary closure.
template <typename F>
cowq::task<void> run(F f) {
  co_await f();
}

// A recv on fd (taken over, closed at the end) that sets *got once it has
// returned exactly one byte: a request in flight that the test completes
// by writing one byte to the other end.
inline cowq::task<void> recv_one_byte(int fd, std::atomic<bool>& got) {
  cowq::net::stream s{cowq::net::fd_handle(fd)};
  std::byte buf[16];
  auto r = co_await s.recv(buf);
  got = r && r.value == 1;
}

// 127.0.0.1, a port the kernel picks.
inline const cowq::net::tcp_endpoint loopback{asio::ip::make_address("127.0.0.1"), 0};

// n bytes that differ with seed and position: an echo that drops,
// reorders or mixes up bytes between connections shows.
inline std::vector<std::byte> pattern(std::size_t n, unsigned seed) {
  std::vector<std::byte> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = std::byte((i * 131 + seed) & 0xff);
  return v;
}

// Connects to ep, sends data in 8 KiB steps, reads the echo of each step
// back and checks every byte; closes at the end.
inline cowq::task<bool> echo_client(cowq::net::tcp_endpoint ep, std::vector<std::byte> data) {
  auto c = co_await cowq::net::connect(ep);
  if (!c) co_return false;
  cowq::net::stream s = std::move(c.value);
  std::vector<std::byte> back(data.size());
  std::size_t sent = 0, got = 0;
  while (got < data.size()) {
    if (sent < data.size()) {
      const auto n = std::min<std::size_t>(8192, data.size() - sent);
      if (!co_await s.send_all(std::span(data).subspan(sent, n))) co_return false;
      sent += n;
    }
    while (got < sent) {
      auto r = co_await s.recv(std::span(back).subspan(got, sent - got));
      if (!r || r.value == 0) co_return false;
      got += r.value;
    }
  }
  co_return back == data;
}

// A connection through l: {the connecting end, the accepted end}.
inline cowq::task<std::pair<cowq::net::stream, cowq::net::stream>> connected_pair(
    cowq::net::tcp_listener& l) {
  auto c = co_await cowq::net::connect(l.local_endpoint());
  auto a = co_await l.accept();
  EXPECT_TRUE(c && a) << c.error.message() << " / " << a.error.message();
  co_return std::pair{std::move(c.value), std::move(a.value)};
}

// Generous: the machine is shared and the sanitizers slow everything down.
inline constexpr std::chrono::seconds kDeadline{30};

// Polls pred until it holds or the deadline passes; returns whether it held.
// The poll interval only bounds how soon a met condition is noticed.
inline bool wait_until(const std::function<bool()>& pred,
                       std::chrono::milliseconds deadline = kDeadline) {
  const auto end = std::chrono::steady_clock::now() + deadline;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) return pred();
    std::this_thread::yield();
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return true;
}

// Every runtime owns io_uring instances; where the kernel refuses them
// (ENOSYS, seccomp, kernel.io_uring_disabled) the suites skip, saying why.
class uring_environment : public ::testing::Environment {
 public:
  void SetUp() override {
    io_uring ring;
    const int rc = io_uring_queue_init(8, &ring, 0);
    if (rc < 0) GTEST_SKIP() << "io_uring unavailable: " << std::strerror(-rc);
    io_uring_queue_exit(&ring);
  }
};
inline ::testing::Environment* const uring_env =
    ::testing::AddGlobalTestEnvironment(new uring_environment);

inline pid_t this_tid() { return static_cast<pid_t>(::syscall(SYS_gettid)); }

// The scheduler state of one of this process's threads: 'R' running,
// 'S' sleeping (blocked in a syscall such as a futex wait), ...
inline char thread_state(pid_t tid) {
  std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/stat");
  std::string line;
  std::getline(f, line);
  auto close = line.rfind(')');
  return close == std::string::npos || close + 2 >= line.size() ? '?' : line[close + 2];
}

// The lowest CPU this process may run on.
inline int first_allowed_cpu() {
  cpu_set_t set;
  ::sched_getaffinity(0, sizeof set, &set);
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) return c;
  return 0;
}

// Descriptors this process has open (the directory's own is not counted).
inline int open_fds() {
  int n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  if (d == nullptr) return -1;
  while (dirent* e = ::readdir(d))
    if (e->d_name[0] != '.') ++n;
  ::closedir(d);
  return n - 1;
}

// How many times a thread of this process has given up its CPU of its own
// accord (each sleep counts one): tells a thread that slept again apart from
// one that never woke.
inline long voluntary_switches(pid_t tid) {
  std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/status");
  std::string line;
  const std::string key = "voluntary_ctxt_switches:";
  while (std::getline(f, line))
    if (line.compare(0, key.size(), key) == 0) return std::stol(line.substr(key.size()));
  return -1;
}

}  // namespace cowq::test
