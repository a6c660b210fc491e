// The runtime: CPU discovery, worker pools and the default workqueues.
#pragma once

#include <cowq/stats.hpp>
#include <cowq/workqueue.hpp>

#include <chrono>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace cowq {

namespace detail {
struct runtime_impl;
}

// The watchdog: one thread per runtime that finds workers blocked or
// hogging a CPU in code nobody marked (see cowq/blocking.hpp), and retries
// worker creation (calling the rescuers) when a pool cannot grow. It sleeps
// while no pool has work waiting.
struct watchdog_options {
  // Detect unmarked blocking and CPU hogs. Off, a worker stuck in a system
  // call holds its pool's other items back, as in other executors.
  bool detect_blocking = true;
  // How often the watchdog looks while work waits somewhere. A blocked
  // worker is found within about two ticks.
  std::chrono::microseconds tick{500};
  // A worker running one item this long without sleeping is a CPU hog: it
  // stops counting as running, and the item is named once in the log (the
  // kernel's wq_cpu_intensive_thresh_us).
  std::chrono::microseconds cpu_hog_threshold{10'000};
};

// The buffers cowq::net::receiver receives into: one set per pool, set up
// by the first receive on that pool, shared by all its receivers.
struct recv_buffer_options {
  // How many; a power of two, at most 32768.
  unsigned count = 512;
  // Bytes each; one receive completion fills at most one, so this is also
  // the most one recv can gather (a per-connection buffer's usual size).
  unsigned size = 16384;
};

struct runtime_options {
  // CPUs the pools use; empty means every CPU the process may run on
  // (sched_getaffinity, so taskset and cpusets are respected). CPUs outside
  // the allowed set are rejected with std::invalid_argument.
  std::vector<int> cpus{};
  // Idle workers beyond the reserve are destroyed after this long idle
  // (the kernel's IDLE_WORKER_TIMEOUT).
  std::chrono::milliseconds idle_timeout = std::chrono::seconds(300);
  // How long a worker that goes idle keeps spinning for a hand-off before
  // it sleeps. Only a worker whose last wake-up came from a worker of
  // another CPU's pool, soon after it went idle, spins; one spin that finds
  // nothing stops it until that happens again. So a pipeline or ping-pong
  // between CPUs trades a little CPU for hand-offs of about a microsecond,
  // where waking a sleeping thread on an idle CPU costs tens of
  // microseconds (on virtual machines most). Zero turns spinning off;
  // negative is refused.
  std::chrono::microseconds idle_spin = std::chrono::microseconds(50);
  // Hard cap on workers in one pool; at the cap items wait (logged once per
  // pool) and guaranteed_progress workqueues fall back on their rescuers.
  int max_workers_per_pool = 256;
  // Nice value of the high-priority pools' workers (the kernel's
  // HIGHPRI_NICE_LEVEL). Without permission they run at nice 0, logged once.
  int highpri_nice = -20;
  // Prefix of worker thread names ("cowq" gives "cowq/1:0H").
  std::string name = "cowq";
  // Publishes live stats on this Unix socket while the runtime runs, for
  // cowq-monitor (docs/monitoring.md); a leading '@' names a Linux abstract
  // socket. Empty means the path in the environment variable
  // COWQ_STATS_SOCKET, if set. A path that cannot be used is logged and the
  // runtime runs without publishing.
  std::string stats_socket{};
  watchdog_options watchdog{};
  recv_buffer_options recv_buffers{};
};

// Parses a CPU list like "0-3,6" (the kernel's cpulist format).
std::vector<int> parse_cpu_list(const std::string& text);

// The runtime owns the pools, their workers and every workqueue.
//
// Construction discovers CPUs and NUMA nodes, creates one normal and one
// high-priority pool per CPU and per node an unbound pool of each priority,
// starts one worker per pool, and creates the default workqueues.
// Destruction shuts down: every queued item runs, every thread is joined.
//
// Thread safety: every member function may be called from any thread except
// shutdown() and the destructor, which must not be called from a worker.
class runtime {
 public:
  explicit runtime(runtime_options opts = {});
  ~runtime();
  runtime(const runtime&) = delete;
  runtime& operator=(const runtime&) = delete;

  // alloc_workqueue: max_active 0 means wq_dfl_active; ordered forces 1.
  workqueue& alloc_workqueue(std::string name, wq_flags flags = wq_flags::none,
                             int max_active = 0);
  // Drains the workqueue and frees it; queueing to it afterwards throws.
  void destroy_workqueue(workqueue& wq);

  workqueue& system_wq() noexcept;
  workqueue& system_highpri_wq() noexcept;
  workqueue& system_unbound_wq() noexcept;
  workqueue& system_long_wq() noexcept;

  // Runs every queued item and delayed work to completion, joins every
  // thread. Idempotent. Afterwards queueing throws std::logic_error.
  void shutdown();

  runtime_stats stats() const;
  std::span<const int> cpus() const noexcept;
  int numa_nodes() const noexcept;

  // The most recently constructed runtime that is still alive, or null.
  static runtime* current() noexcept;

  detail::runtime_impl& impl() const noexcept { return *impl_; }

 private:
  std::unique_ptr<detail::runtime_impl> impl_;
};

}  // namespace cowq
