// Helpers shared by the suites: waiting on conditions, never on time.
#pragma once

#include <chrono>
#include <fstream>
#include <functional>
#include <string>
#include <sys/syscall.h>
#include <unistd.h>
#include <thread>

#include <cowq/task.hpp>

namespace cowq::test {

// Runs a capturing coroutine lambda with its closure kept alive in this
// frame: spawning `[&]() -> task<void> {...}()` directly would leave the
// coroutine pointing at a destroyed temporary closure.
template <typename F>
cowq::task<void> run(F f) {
  co_await f();
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

}  // namespace cowq::test
