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

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

namespace cowq::detail {

struct runtime_impl;

// Descriptors of /proc/self/task/TID/stat for the workers the watchdog has
// asked about, kept open. A look is then one pread(), not open, read and
// close; and it still works while the application has used up its
// descriptors, where an open() would fail or, worse, take for a moment the
// last free descriptor the application was about to get. Files unused for
// a while are closed, and all of them when the watchdog goes to sleep, so
// an idle runtime holds none. Only the watchdog thread touches this.
class task_stat_files {
 public:
  // Room for the usual few suspects up front: the watchdog looks while the
  // workers run their items, and should allocate nothing beside them.
  task_stat_files() { files_.reserve(kReserved); }
  ~task_stat_files() { close_all(); }
  task_stat_files(const task_stat_files&) = delete;
  task_stat_files& operator=(const task_stat_files&) = delete;

  // The thread's scheduler state: 'R', 'S', 'D', ... or '?' if unknown.
  char state(pid_t tid);
  // One tick passed: closes the files no look used for a while.
  void tick();
  void close_all() noexcept;
  std::size_t open_files() const noexcept { return files_.size(); }

 private:
  static constexpr std::size_t kReserved = 16;
  struct entry {
    pid_t tid;
    int fd;
    std::uint64_t used;  // now_ at the last look
  };
  std::vector<entry> files_;
  std::uint64_t now_ = 0;
};

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

  // The same for a caller that does not hold the pool's lock but has just
  // published, with a relaxed store, what a tick looks at (requests
  // prepared on a ring). The fence pairs with the one after the sleeper's
  // store of asleep_ in main(): either the sleeper's look sees the
  // caller's store, or the caller sees asleep_ set and wakes it.
  void work_waits_unlocked() noexcept {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    work_waits();
  }

  // Ticks since start; for tests and the idle-cost measurement.
  std::uint64_t ticks() const noexcept { return ticks_.load(std::memory_order_relaxed); }
  // Asleep with nothing to watch; for tests.
  bool asleep() const noexcept { return asleep_.load(std::memory_order_relaxed) != 0; }

 private:
  void wake() noexcept;
  void main();
  bool tick();

  runtime_impl& rt_;
  std::thread thread_;
  task_stat_files stat_files_;  // the watchdog thread's own
  // Futex word: 1 while the watchdog sleeps with nothing to watch.
  std::atomic<std::uint32_t> asleep_{0};
  // Futex word of the tick sleep; stop() bumps it to cut the sleep short.
  std::atomic<std::uint32_t> stop_{0};
  std::atomic<std::uint64_t> ticks_{0};
};

}  // namespace cowq::detail
