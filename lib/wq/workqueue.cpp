// Workqueues: pool selection, queueing, flush and drain.
#include "wq_impl.hpp"

#include "../log/log.hpp"
#include "../runtime/runtime_impl.hpp"
#include "../util/futex.hpp"

#include <sched.h>
#include <stdexcept>

namespace cowq::detail {

wq_impl::wq_impl(runtime_impl* rt, std::string name, wq_flags flags, int max_active)
    : rt_(rt), name_(std::move(name)), flags_(flags), max_active_(max_active) {
  const bool high = has(flags_, wq_flags::highpri);
  auto add = [&](pool* p) {
    auto q = std::make_unique<pwq>();
    q->wq_ = this;
    q->pool_ = p;
    q->max_active_ = max_active_;
    pwqs_.push_back(std::move(q));
  };
  if (has(flags_, wq_flags::ordered)) {
    add(rt_->unbound_[0][high ? 1 : 0]);
  } else if (has(flags_, wq_flags::unbound)) {
    for (auto& node_pools : rt_->unbound_) add(node_pools[high ? 1 : 0]);
  } else {
    for (auto& cpu_pools : rt_->bound_) add(cpu_pools[high ? 1 : 0]);
  }
}

pwq* wq_impl::select(int cpu) {
  if (pwqs_.size() == 1) return pwqs_[0].get();
  worker* self = current_worker();
  int index;
  if (cpu >= 0) {
    index = rt_->cpu_index_for(cpu);
    if (index < 0)
      throw std::invalid_argument("cowq: CPU " + std::to_string(cpu) +
                                  " is not one of the runtime's CPUs");
  } else if (self != nullptr && self->pool_->rt_ == rt_ && self->pool_->cpu_index_ >= 0) {
    // Work queued from a worker stays on its CPU: no cache line moves.
    index = self->pool_->cpu_index_;
  } else {
    index = rt_->cpu_index_for(::sched_getcpu());
    if (index < 0) index = 0;  // a caller outside the runtime's CPUs
  }
  if (has(flags_, wq_flags::unbound))
    return pwqs_[static_cast<std::size_t>(rt_->topo_.node_of_cpu[static_cast<std::size_t>(index)])].get();
  return pwqs_[static_cast<std::size_t>(index)].get();
}

namespace {

void check_accepting(wq_impl& w) {
  if (w.destroyed_.load(std::memory_order_relaxed))
    throw std::logic_error("cowq: workqueue '" + w.name_ + "' was destroyed");
  pwq* cur = current_pwq();
  if (w.draining_.load(std::memory_order_relaxed) && (cur == nullptr || cur->wq_ != &w))
    throw std::logic_error("cowq: workqueue '" + w.name_ +
                           "' is draining; only its own items may queue to it");
  if (w.rt_->stopping_.load(std::memory_order_relaxed)) {
    worker* self = current_worker();
    if (self == nullptr || self->pool_->rt_ != w.rt_)
      throw std::logic_error("cowq: the runtime is shutting down");
  }
}

}  // namespace

void queue_checked(wq_impl& w, work_node* n, int cpu) {
  check_accepting(w);
  pwq* q = w.select(cpu);
  // A coroutine spawned by an item of the same pwq of an unbound pool: the
  // worker links it when the item returns, under the lock it takes anyway.
  if (q->pool_->concurrency_ > 1 && q == current_pwq() && (n->flags_ & node_callable) == 0 &&
      q->pool_->outbox_push(current_worker(), q, n))
    return;
  if (!q->pool_->insert(q, n))
    throw std::logic_error("cowq: the runtime has stopped");
}

void queue_node(workqueue& wq, work_node* n, int cpu) { queue_checked(wq.impl(), n, cpu); }

bool on_worker_thread() noexcept { return current_worker() != nullptr; }

void wq_impl::flush() {
  pwq* cur = current_pwq();
  if (cur != nullptr && cur->wq_ == this)
    throw std::logic_error("cowq: an item of '" + name_ + "' flushed its own workqueue");
  std::lock_guard fg(flush_mutex_);
  for (auto& q : pwqs_) {
    std::lock_guard g(q->pool_->lock_);
    const int c = q->work_color_;
    q->work_color_ = c ^ 1;
    q->outbox_color_.v.store(c ^ 1, std::memory_order_relaxed);
    if (q->nr_in_flight_[c] > 0) {
      q->flush_color_ = c;
      // A worker running yields back to back must go round the worklist,
      // where the next one gets the new colour.
      q->pool_->bump_work_gen();
      pwqs_to_flush_.fetch_add(1, std::memory_order_relaxed);
    }
  }
  // Acquire pairs with the release decrement in finish_flush_of().
  for (std::uint32_t v; (v = pwqs_to_flush_.load(std::memory_order_acquire)) != 0;)
    futex_wait(&pwqs_to_flush_, v);
}

bool wq_impl::idle_now() {
  for (auto& q : pwqs_) {
    std::lock_guard g(q->pool_->lock_);
    if (q->nr_in_flight_[0] + q->nr_in_flight_[1] != 0) return false;
  }
  return true;
}

void wq_impl::drain() {
  draining_.store(true, std::memory_order_relaxed);
  unsigned rounds = 0;
  while (true) {
    flush();
    if (idle_now()) break;
    if (++rounds % 100 == 0)
      log().warn("draining workqueue '{}' isn't complete after {} flushes", name_, rounds);
  }
  draining_.store(false, std::memory_order_relaxed);
}

}  // namespace cowq::detail

namespace cowq {

const std::string& workqueue::name() const noexcept { return impl_->name_; }
wq_flags workqueue::flags() const noexcept { return impl_->flags_; }
int workqueue::max_active() const noexcept { return impl_->max_active_; }
runtime& workqueue::owner() const noexcept { return *impl_->rt_->self_; }
void workqueue::flush() { impl_->flush(); }
void workqueue::drain() { impl_->drain(); }

}  // namespace cowq
