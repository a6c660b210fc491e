// The watchdog: finds workers that block or hog a CPU in code nobody marked.
//
// User space gets no wq_worker_sleeping() call from the scheduler, so a
// worker stuck in a system call still counts as running and its pool wakes
// nobody for the items behind it. While work waits somewhere, the watchdog
// looks at every pool each tick: a worker whose item sequence has not moved
// since the last tick is asked about in /proc/self/task/TID/stat. Sleeping
// (S, D) means blocked: it leaves nr_running as if the kernel had told us.
// Running past cpu_hog_threshold means a CPU hog: it stops counting too, and
// the item is named once in the log.
//
// The same tick is the pools' mayday timer: a pool with work waiting, none
// running and no idle worker retries worker creation, and calls the rescuers
// of guaranteed_progress workqueues while creation fails or the cap holds.
//
// With no work waiting anywhere the watchdog sleeps on a futex until a pool's
// worklist turns non-empty with no worker free to take it (work_waits()).
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>

namespace cowq::detail {

struct runtime_impl;

class watchdog {
 public:
  explicit watchdog(runtime_impl& rt);
  ~watchdog();
  watchdog(const watchdog&) = delete;
  watchdog& operator=(const watchdog&) = delete;

  void start();
  void stop();

  // Called with a pool's lock held when work starts waiting there. While the
  // watchdog is awake this is one relaxed load of a line nobody writes.
  void work_waits() noexcept {
    // Relaxed is enough: the sleeper stored 1 before it looked at this
    // pool under the pool lock, which the caller holds now; see main().
    if (asleep_.load(std::memory_order_relaxed) != 0) [[unlikely]] wake();
  }

  // Ticks since start; for tests and the idle-cost measurement.
  std::uint64_t ticks() const noexcept { return ticks_.load(std::memory_order_relaxed); }

 private:
  void wake() noexcept;
  void main();
  bool tick();

  runtime_impl& rt_;
  std::thread thread_;
  // Futex word: 1 while the watchdog sleeps with nothing to watch.
  std::atomic<std::uint32_t> asleep_{0};
  // Futex word of the tick sleep; stop() bumps it to cut the sleep short.
  std::atomic<std::uint32_t> stop_{0};
  std::atomic<std::uint64_t> ticks_{0};
};

}  // namespace cowq::detail
