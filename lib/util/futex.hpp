// Thin futex wrappers: the park/wake primitive of workers and waiters.
#pragma once

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <ctime>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace cowq::detail {

// Sleeps while *word == expected, or until timeout (null: forever). Spurious
// returns are allowed; callers re-check their condition.
inline void futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t expected,
                       const timespec* relative_timeout = nullptr) noexcept {
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word),
            FUTEX_WAIT_PRIVATE, expected, relative_timeout, nullptr, 0);
}

// Sleeps while *word == expected, or until the CLOCK_MONOTONIC time
// deadline: a periodic sleeper keeps its period whatever its work took.
inline void futex_wait_until(std::atomic<std::uint32_t>* word, std::uint32_t expected,
                             const timespec& deadline) noexcept {
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word),
            FUTEX_WAIT_BITSET_PRIVATE, expected, &deadline, nullptr, FUTEX_BITSET_MATCH_ANY);
}

// Safe on memory that the woken side may already have released: the kernel
// only hashes the address, user space never dereferences it here.
inline void futex_wake(std::atomic<std::uint32_t>* word, int count = INT_MAX) noexcept {
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word),
            FUTEX_WAKE_PRIVATE, count, nullptr, nullptr, 0);
}

}  // namespace cowq::detail
