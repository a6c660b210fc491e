// sleep_for / sleep_until on the pool's timer heap.
#include "../pool/pool.hpp"

#include <cowq/timer.hpp>

#include <stdexcept>

namespace cowq::detail {

namespace {

// Runs under the pool lock (fire_locked_): the poll that found it due
// queues it without taking the lock again.
void sleep_fired(timer_node* t) {
  io_op* op = static_cast<sleep_timer*>(t)->op_;
  op->res_ = 0;
  op->pool_->enqueue_locked(op->pwq_, op);
}

}  // namespace

bool start_sleep(io_op* op, sleep_timer* t, std::chrono::steady_clock::time_point deadline) {
  worker* w = current_worker();
  pwq* q = current_pwq();
  if (w == nullptr || q == nullptr)
    throw std::logic_error("cowq: sleep_for must be awaited by a coroutine running on a cowq worker");
  if (deadline <= std::chrono::steady_clock::now()) {
    op->res_ = 0;
    return false;
  }
  if (w->pool_->io_closed_.load(std::memory_order_relaxed)) {
    op->res_ = -ECANCELED;
    return false;
  }
  pool* p = w->pool_;
  op->pool_ = p;
  op->pwq_ = q;
  t->fire_ = &sleep_fired;
  t->fire_locked_ = true;
  std::lock_guard g(p->lock_);
  // Again under the lock, which cancel_all_sleeps() takes after the flag is
  // stored: a sleep armed after that would never be cancelled.
  if (p->io_closed_.load(std::memory_order_relaxed)) {
    op->res_ = -ECANCELED;
    return false;
  }
  // A stop that came before the timer was armed left the cancel to us
  // (acq_rel pairs with the fetch_or in cancel_sleep()).
  if (op->state_.fetch_or(op_submitted, std::memory_order_acq_rel) & op_cancel_requested) {
    op->res_ = -ECANCELED;
    return false;
  }
  p->arm_timer_locked(t, deadline);
  return true;
}

void cancel_sleep(io_op* op, sleep_timer* t) noexcept {
  if ((op->state_.fetch_or(op_cancel_requested, std::memory_order_acq_rel) & op_submitted) == 0)
    return;  // start_sleep will see the request
  pool* p = op->pool_;
  {
    std::lock_guard g(p->lock_);
    // Already fired (or firing): the timer path resumes it, not us.
    if (!p->timers_.cancel(t)) return;
  }
  p->complete_from_outside(op, -ECANCELED);
}

void cancel_all_sleeps(pool& p) {
  worker* wake = nullptr;
  {
    std::lock_guard g(p.lock_);
    for (timer_node* t : p.timers_.take_all(&sleep_fired)) {
      io_op* op = static_cast<sleep_timer*>(t)->op_;
      op->res_ = -ECANCELED;
      p.enqueue_locked(op->pwq_, op);
    }
    if (p.need_more_worker()) wake = p.wake_one_idle();
  }
  if (wake != nullptr) signal_worker(wake);
}

}  // namespace cowq::detail
