// Multishot accept: one request, many connections.
//
// The state lives on the heap, owned jointly by the listener and by the
// request in the kernel: it is freed when both are done with it (the
// listener closed, and the request's last completion, the one without
// IORING_CQE_F_MORE, reaped). Every field is under the home pool's lock
// except where noted.
#include "multishot_accept.hpp"

#include "../log/log.hpp"
#include "../pool/watchdog.hpp"
#include "../util/tsan.hpp"

#include <cowq/net.hpp>

#include <cerrno>
#include <utility>
#include <sys/socket.h>
#include <unistd.h>

namespace cowq::detail {

namespace {

// Under the home pool's lock.
void arm_locked(accept_state* s) {
  ring& r = *s->home->ring_;
  {
    std::lock_guard g(r.sq_lock_);
    io_uring_sqe* sqe = r.sqe_locked();
    if (sqe == nullptr) return;
    io_uring_prep_multishot_accept(sqe, s->fd, nullptr, nullptr, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, reinterpret_cast<std::uint64_t>(s) | kUdSharedTag);
    s->armed = true;
    s->home->inflight_.fetch_add(1, std::memory_order_relaxed);
    tsan_release(s);
  }
  // The request waits for the end of this loop turn; should the item block
  // unannounced before that, the watchdog must be awake to hand the ring to
  // another worker. The caller holds the pool lock, as work_waits() needs;
  // the submission lock is dropped first, as the wake-up may be a system
  // call and other threads spin on that lock.
  s->home->watchdog_->work_waits();
}

void destroy(accept_state* s) {
  for (int fd : s->ready) ::close(fd);
  delete s;
}

}  // namespace

accept_state* make_accept_state(int fd) { return new accept_state(fd); }

shared_start multishot_accept_start(accept_state* s, io_op* op, std::chrono::nanoseconds timeout) {
  worker* w = current_worker();
  pwq* q = current_pwq();
  if (w == nullptr || q == nullptr) return shared_start::own_request;
  pool* p = w->pool_;
  if (p->io_closed_.load(std::memory_order_relaxed)) return shared_start::own_request;
  std::lock_guard g(p->lock_);
  // Shutdown stores the flag before it takes this lock (cancel_all_io()
  // through cancel_all_sleeps()); the single-shot path then reports it.
  if (p->io_closed_.load(std::memory_order_relaxed)) return shared_start::own_request;
  if (s->home == nullptr) s->home = p;
  if (s->home != p || s->waiter != nullptr) return shared_start::own_request;
  op->pool_ = p;
  op->pwq_ = q;
  op->multishot_ = static_cast<shared_request*>(s);
  // Done at once: the op is not marked submitted, so a canceller leaves
  // it alone (its result is in).
  if (!s->ready.empty()) {
    op->res_ = s->ready.front();
    s->ready.pop_front();
    return shared_start::done;
  }
  if (s->error != 0) {
    op->res_ = -std::exchange(s->error, 0);
    return shared_start::done;
  }
  // A stop requested before we got here was left to us.
  if (op->state_.fetch_or(op_submitted, std::memory_order_acq_rel) & op_cancel_requested) {
    op->res_ = -ECANCELED;
    return shared_start::done;
  }
  s->wait_locked(op, timeout);
  if (!s->armed) arm_locked(s);
  return shared_start::waiting;
}

void multishot_accept_complete(pool& p, accept_state* s, int res, unsigned flags) {
  tsan_acquire(s);
  if ((flags & IORING_CQE_F_MORE) == 0) {
    s->armed = false;
    p.inflight_.fetch_sub(1, std::memory_order_relaxed);
  }
  if (!s->wake_waiter_locked(res, 0)) {
    if (res >= 0) {
      if (s->closed) ::close(res);
      else s->ready.push_back(res);
    } else if (res != -ECANCELED) {
      // Kept for the next accept: EMFILE must reach the server loop.
      s->error = -res;
    }
  }
  if (!s->armed && s->closed) destroy(s);
}

void multishot_accept_close(accept_state* s) {
  pool* p = s->home;
  if (p == nullptr) {
    destroy(s);
    return;
  }
  bool destroy_now = false;
  {
    std::lock_guard g(p->lock_);
    s->closed = true;
    // A waiter is completed by the cancel below; its timeout must not
    // outlive the state.
    p->timers_.cancel(&s->timer);
    if (!s->armed) {
      destroy_now = true;
    } else {
      ring& r = *p->ring_;
      std::lock_guard sg(r.sq_lock_);
      if (io_uring_sqe* sqe = r.sqe_locked()) {
        io_uring_prep_cancel64(sqe, reinterpret_cast<std::uint64_t>(s) | kUdSharedTag, 0);
        io_uring_sqe_set_data64(sqe, kUdIgnore);
      }
      r.submit_locked();
    }
  }
  if (destroy_now) destroy(s);
}

}  // namespace cowq::detail
