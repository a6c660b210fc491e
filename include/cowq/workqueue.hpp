// Workqueues: what users queue coroutines and work items to.
#pragma once

#include <cowq/task.hpp>
#include <cowq/work_node.hpp>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace cowq {

// Workqueue flags, as in the kernel (WQ_UNBOUND, WQ_HIGHPRI, ...).
enum class wq_flags : std::uint32_t {
  none = 0,
  // Items run on the node's unbound pool instead of the queueing CPU's.
  unbound = 1u << 0,
  // Items run on the high-priority pools (workers at a negative nice).
  highpri = 1u << 1,
  // Items do not count as running for concurrency management: a long CPU
  // burst does not hold back the pool's other items.
  cpu_intensive = 1u << 2,
  // Unbound, max_active 1, one pool: items run one at a time, in queueing
  // order (a strand).
  ordered = 1u << 3,
  // A rescuer guarantees forward progress when no worker can be created.
  guaranteed_progress = 1u << 4,
};
constexpr wq_flags operator|(wq_flags a, wq_flags b) noexcept {
  return wq_flags(std::uint32_t(a) | std::uint32_t(b));
}
constexpr bool has(wq_flags set, wq_flags f) noexcept {
  return (std::uint32_t(set) & std::uint32_t(f)) != 0;
}
namespace wq {
inline constexpr wq_flags unbound = wq_flags::unbound;
inline constexpr wq_flags highpri = wq_flags::highpri;
inline constexpr wq_flags cpu_intensive = wq_flags::cpu_intensive;
inline constexpr wq_flags ordered = wq_flags::ordered;
inline constexpr wq_flags guaranteed_progress = wq_flags::guaranteed_progress;
}  // namespace wq

// The kernel's default and limit for max_active.
inline constexpr int wq_dfl_active = 256;
inline constexpr int wq_max_active = 2048;

class runtime;
namespace detail {
struct wq_impl;
// Queues a node on wq; cpu < 0 picks the caller's CPU. Throws
// std::logic_error if the workqueue no longer accepts work.
void queue_node(workqueue& wq, work_node* n, int cpu);
void detached_started(workqueue& wq) noexcept;
}  // namespace detail

// A workqueue: a name, flags, and a max_active limit per pool.
//
// Created by runtime::alloc_workqueue and owned by the runtime.
// Thread safety: every member function may be called from any thread.
class workqueue {
 public:
  workqueue(const workqueue&) = delete;
  workqueue& operator=(const workqueue&) = delete;

  const std::string& name() const noexcept;
  wq_flags flags() const noexcept;
  int max_active() const noexcept;
  runtime& owner() const noexcept;

  // Queues the start of a detached coroutine (queue_work for a coroutine).
  // The task's result is discarded; an exception escaping it is logged and
  // counted in this workqueue's stats. Allocates nothing.
  template <typename T>
  void spawn(task<T> t) {
    spawn_on(-1, std::move(t));
  }

  // spawn() on the pool of a given CPU (queue_work_on): how work queued
  // from one worker is spread over several CPUs, since spawn() from a
  // worker stays on its CPU. cpu is a CPU number the runtime uses (-1: as
  // spawn()); for an unbound workqueue it picks that CPU's NUMA node.
  // Throws std::invalid_argument for a CPU the runtime does not use.
  template <typename T>
  void spawn_on(int cpu, task<T> t) {
    auto h = t.release();
    if (!h) return;
    auto& p = h.promise();
    p.detached_wq_ = this;
    p.start_node_.handle_ = h;
    try {
      detail::queue_node(*this, &p.start_node_, cpu);
    } catch (...) {
      h.destroy();
      throw;
    }
    detail::detached_started(*this);
  }

  // Waits until every item queued before the call has finished
  // (flush_workqueue). Items queued meanwhile are not waited for.
  void flush();
  // Waits until the workqueue is empty, refusing work queued from outside
  // its own items meanwhile (drain_workqueue).
  void drain();

  detail::wq_impl& impl() const noexcept { return *impl_; }

 private:
  friend struct detail::wq_impl;
  explicit workqueue(detail::wq_impl* impl) noexcept : impl_(impl) {}
  detail::wq_impl* impl_;
};

}  // namespace cowq
