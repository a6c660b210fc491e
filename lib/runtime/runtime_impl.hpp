// The private side of the runtime.
#pragma once

#include "../pool/pool.hpp"
#include "../pool/rescuer.hpp"
#include "../pool/watchdog.hpp"
#include "../wq/wq_impl.hpp"

#include <cowq/runtime.hpp>

#include <asio/execution_context.hpp>

#include <array>
#include <atomic>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace cowq::detail {

struct topology {
  std::vector<int> cpus;          // allowed and selected, ascending
  std::vector<int> node_of_cpu;   // parallel to cpus: index into nodes
  std::vector<std::vector<int>> nodes;  // node index -> its selected CPUs
};
topology discover_topology(const std::vector<int>& requested);

class resolver_thread;
class stats_server;

// An Asio execution context whose services the runtime can shut down.
struct runtime_asio_context : asio::execution_context {
  using asio::execution_context::shutdown;
};

struct runtime_impl {
  explicit runtime_impl(runtime* self, runtime_options opts);
  ~runtime_impl();

  runtime* self_;               // I
  runtime_options opts_;        // I
  topology topo_;               // I
  // CPU number -> index in topo_.cpus, -1 if not ours. I.
  std::array<int, CPU_SETSIZE> cpu_index_{};

  // Bound pools: [cpu index][0 normal, 1 high]. Unbound: [node][prio].
  std::vector<std::unique_ptr<pool>> pools_;  // I after start
  std::vector<std::array<pool*, 2>> bound_;   // I
  std::vector<std::array<pool*, 2>> unbound_; // I


  std::mutex wqs_mutex_;
  std::vector<std::unique_ptr<wq_impl>> wqs_;  // wqs_mutex_; never shrinks

  workqueue* system_wq_ = nullptr;           // I
  workqueue* system_highpri_wq_ = nullptr;   // I
  workqueue* system_unbound_wq_ = nullptr;   // I
  workqueue* system_long_wq_ = nullptr;      // I

  // A: set once by shutdown(); queueing from outside the runtime's workers
  // is refused afterwards (relaxed: a racing queuer is caught by the drain).
  std::atomic<bool> stopping_{false};
  std::mutex shutdown_mutex_;
  bool shut_down_ = false;  // shutdown_mutex_

  // Detached coroutines finished on threads that are not workers.
  std::atomic<std::int64_t> foreign_live_{0};

  // Test hook: thread creation fails while set (A, relaxed).
  std::atomic<bool> fail_thread_creation_{false};

  // Created before the pools start (they poke it), started after.
  std::unique_ptr<watchdog> watchdog_;
  // CPU hogs already named in the log (item and workqueue).
  std::mutex hogs_mutex_;
  std::set<std::string> hogs_reported_;  // hogs_mutex_

  // Logged once if workers could not get the high-priority nice value.
  std::atomic<bool> nice_warned_{false};

  // Started on first use, stopped at shutdown.
  resolver_thread& resolver();
  // Where Asio keeps the services of I/O objects built on a
  // cowq::asio_executor (lib/interop/asio.cpp). Created on first use; its
  // services are shut down with the runtime, after the drain.
  std::mutex asio_mutex_;
  std::unique_ptr<runtime_asio_context> asio_context_;  // asio_mutex_

  std::mutex resolver_mutex_;
  std::unique_ptr<resolver_thread> resolver_;  // resolver_mutex_

  // Publishes stats() on a Unix socket if one is configured; started last
  // in the constructor, stopped by shutdown() once the drain is done (a
  // monitor can watch a slow shutdown). Null when not publishing.
  std::unique_ptr<stats_server> stats_server_;

  int cpu_index_for(int cpu) const noexcept;
  void shutdown();
  runtime_stats stats();
  workqueue& alloc(std::string name, wq_flags flags, int max_active);
};

}  // namespace cowq::detail
