// A point-in-time snapshot of the runtime's pools and workqueues.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace cowq {

struct pool_stats {
  int id = 0;
  std::string name;     // "1" for CPU 1, "1H" for its high-priority pool, "u0" unbound node 0
  int cpu = -1;         // -1 for an unbound pool
  int node = 0;
  bool highpri = false;
  int workers = 0;
  int idle = 0;
  int running = 0;      // nr_running: workers running an item and counted
  std::uint64_t items_executed = 0;
  std::uint64_t workers_created = 0;
  std::uint64_t workers_destroyed = 0;
  int pending = 0;      // items on the worklist
  int timers = 0;       // armed deadlines in the pool's heap (sleeps, delayed work)
  std::int64_t io_in_flight = 0;  // io_uring requests submitted, not yet reaped
  int peak_workers = 0;           // most workers the pool has had at once
  // Concurrency management, counted since start:
  std::uint64_t blocking_regions = 0;  // marked blocking regions entered
  std::uint64_t blocked_detected = 0;  // unmarked blocking found by the watchdog
  std::uint64_t hogs_detected = 0;     // items that ran past cpu_hog_threshold
  std::uint64_t creation_failures = 0; // worker threads that could not be created
  std::uint64_t maydays = 0;           // calls for a rescuer: work waited, no worker possible
  std::uint64_t rescued = 0;           // items run by a rescuer
  // net::receiver buffers (runtime_options::recv_buffers):
  std::int64_t recv_buffers_in_use = 0;      // now: holding bytes not yet given back
  std::uint64_t recv_buffer_shortages = 0;   // receives into a receiver's own buffer, none being free
};

struct workqueue_stats {
  std::string name;
  std::uint32_t flags = 0;
  int max_active = 0;
  std::uint64_t queued = 0;     // total ever queued
  int active = 0;               // now: queued or running, within max_active
  int inactive = 0;             // now: waiting for max_active
  std::uint64_t completed = 0;  // total runs finished
  std::uint64_t escaped_exceptions = 0;
  std::uint64_t rescued = 0;    // runs done by the workqueue's rescuer
};

struct runtime_stats {
  std::vector<pool_stats> pools;
  std::vector<workqueue_stats> workqueues;
  // Detached coroutines spawned and not yet finished.
  std::int64_t live_coroutines = 0;

  const workqueue_stats* find_workqueue(const std::string& name) const {
    for (auto& w : workqueues)
      if (w.name == name) return &w;
    return nullptr;
  }
};

// Renders the snapshot as a table, for demos and logs.
std::string to_string(const runtime_stats& s);

// Renders the snapshot as one line of JSON (no newline): an object with
// "pools", "workqueues" and "live_coroutines", members named as the fields
// above, names escaped (and made valid UTF-8). The stats socket sends this;
// see docs/monitoring.md.
std::string to_json(const runtime_stats& s);

}  // namespace cowq
