// The pool lock: a test-and-test-and-set lock for very short sections.
#pragma once

#include <atomic>
#include <sched.h>

namespace cowq::detail {

// The pause hint of a spin-wait loop.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Critical sections under it are a few list operations and counters, so an
// uncontended acquire is one atomic exchange. A waiter that spins too long
// yields the CPU: with two vCPUs and several workers per pool the holder may
// have been preempted, and spinning against it would only delay it.
class spinlock {
 public:
  void lock() noexcept {
    for (;;) {
      // Acquire pairs with the release in unlock().
      if (!locked_.exchange(true, std::memory_order_acquire)) return;
      int spins = 0;
      while (locked_.load(std::memory_order_relaxed)) {
        if (++spins < kSpinsBeforeYield) {
          cpu_relax();
        } else {
          ::sched_yield();
          spins = 0;
        }
      }
    }
  }
  bool try_lock() noexcept {
    return !locked_.load(std::memory_order_relaxed) &&
           !locked_.exchange(true, std::memory_order_acquire);
  }
  void unlock() noexcept { locked_.store(false, std::memory_order_release); }

 private:
  static constexpr int kSpinsBeforeYield = 128;
  std::atomic<bool> locked_{false};
};

}  // namespace cowq::detail
