// Waiting on a request that serves many operations in turn.
#include "shared_request.hpp"

#include <cerrno>
#include <utility>

namespace cowq::detail {

namespace {

// Under the home pool's lock (fire_locked_), from its timer heap: the
// operation completes with a timeout, and what the request produces later
// waits for the next one.
void waiter_timed_out(timer_node* t) {
  static_cast<shared_timer*>(t)->owner->wake_waiter_locked(-ETIMEDOUT, 0);
}

}  // namespace

shared_request::shared_request() noexcept {
  timer.owner = this;
  timer.fire_ = &waiter_timed_out;
  timer.fire_locked_ = true;
}

bool shared_request::wake_waiter_locked(int res, unsigned flags) noexcept {
  io_op* w = std::exchange(waiter, nullptr);
  if (w == nullptr) return false;
  w->multishot_waiting_ = false;
  home->timers_.cancel(&timer);
  w->res_ = res;
  w->cqe_flags_ = flags;
  home->enqueue_locked(w->pwq_, w);
  return true;
}

void shared_request::wait_locked(io_op* op, std::chrono::nanoseconds timeout) {
  // The timer first: if arming it throws, op must not be left as the
  // waiter of a coroutine that did not suspend.
  if (timeout.count() > 0) home->arm_timer_locked(&timer, clock::now() + timeout);
  waiter = op;
  op->multishot_waiting_ = true;
}

void shared_request_cancel(io_op* op) noexcept {
  // The op lives until its coroutine's await_resume, which waits for this
  // canceller; the request's state may be gone once the op stopped waiting
  // on it (its owner closed and the request's last completion reaped).
  pool* p = op->pool_;
  {
    std::lock_guard g(p->lock_);
    if (!op->multishot_waiting_) return;  // already completed
    auto* s = static_cast<shared_request*>(op->multishot_);
    op->multishot_waiting_ = false;
    s->waiter = nullptr;
    p->timers_.cancel(&s->timer);
  }
  // No longer the waiter, so no completion can queue it: we do.
  p->complete_from_outside(op, -ECANCELED);
}

}  // namespace cowq::detail
