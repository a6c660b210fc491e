// The private side of a workqueue.
#pragma once

#include "../pool/pool.hpp"

#include <cowq/workqueue.hpp>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace cowq::detail {

class rescuer;

struct wq_impl {
  wq_impl(runtime_impl* rt, std::string name, wq_flags flags, int max_active);

  workqueue facade_{this};        // I
  runtime_impl* rt_;              // I
  std::string name_;              // I
  wq_flags flags_;                // I
  int max_active_;                // I
  // Bound: one per runtime CPU. Unbound: one per node. Ordered: one.
  std::vector<std::unique_ptr<pwq>> pwqs_;  // I

  // A (relaxed): refusal flags checked on queueing. A queuer racing with
  // the store may still get in; drain() loops until the queues are empty.
  std::atomic<bool> draining_{false};
  std::atomic<bool> destroyed_{false};

  std::atomic<std::uint64_t> escaped_{0};  // A (relaxed): statistics only

  // guaranteed_progress only: its rescuer thread. I; stopped when the
  // workqueue is destroyed or the runtime shuts down.
  std::unique_ptr<rescuer> rescuer_;

  std::mutex flush_mutex_;  // serialises flushers: two colours suffice
  // pwqs whose flush colour still has items in flight. Decremented by the
  // worker that finishes the last such item (release), read by the flusher
  // (acquire) in flush().
  std::atomic<std::uint32_t> pwqs_to_flush_{0};

  pwq* select(int cpu);
  void flush();
  void drain();
  bool idle_now();  // no item in flight on any pwq
};

}  // namespace cowq::detail
