// Helpers shared by the suites: waiting on conditions, never on time.
#pragma once

#include <chrono>
#include <functional>
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

}  // namespace cowq::test
