// Starting, cancelling and finishing io_uring operations.
#include "../log/log.hpp"
#include "../pool/pool.hpp"
#include "../pool/watchdog.hpp"
#include "../util/tsan.hpp"
#include "ring.hpp"
#include "../net/shared_request.hpp"

#include <cowq/io.hpp>

#include <cerrno>
#include <fcntl.h>
#include <stdexcept>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>

namespace cowq::detail {

namespace {

void prep(io_uring_sqe* sqe, const op_args& a) {
  switch (a.code) {
    case op_code::nop:
      io_uring_prep_nop(sqe);
      break;
    case op_code::read:
      io_uring_prep_read(sqe, a.fd, a.buf, a.len, a.offset);
      break;
    case op_code::write:
      io_uring_prep_write(sqe, a.fd, a.buf, a.len, a.offset);
      break;
    case op_code::readv:
      io_uring_prep_readv(sqe, a.fd, static_cast<const iovec*>(a.buf), a.len, a.offset);
      break;
    case op_code::writev:
      io_uring_prep_writev(sqe, a.fd, static_cast<const iovec*>(a.buf), a.len, a.offset);
      break;
    case op_code::recv:
      io_uring_prep_recv(sqe, a.fd, a.buf, a.len, a.flags);
      break;
    case op_code::send:
      // MSG_NOSIGNAL: a peer that went away is an EPIPE result, not SIGPIPE.
      io_uring_prep_send(sqe, a.fd, a.buf, a.len, a.flags | MSG_NOSIGNAL);
      break;
    case op_code::sendmsg:
      io_uring_prep_sendmsg(sqe, a.fd, static_cast<const msghdr*>(a.buf), static_cast<unsigned>(a.flags) | MSG_NOSIGNAL);
      break;
    case op_code::recvmsg:
      io_uring_prep_recvmsg(sqe, a.fd, static_cast<msghdr*>(a.buf), static_cast<unsigned>(a.flags));
      break;
    case op_code::accept:
      io_uring_prep_accept(sqe, a.fd, static_cast<sockaddr*>(const_cast<void*>(a.addr)),
                           static_cast<socklen_t*>(a.addrlen_out), a.flags | SOCK_CLOEXEC);
      break;
    case op_code::connect:
      io_uring_prep_connect(sqe, a.fd, static_cast<const sockaddr*>(a.addr), a.addrlen);
      break;
    case op_code::close:
      io_uring_prep_close(sqe, a.fd);
      break;
    case op_code::shutdown:
      io_uring_prep_shutdown(sqe, a.fd, a.flags);
      break;
    case op_code::fsync:
      io_uring_prep_fsync(sqe, a.fd, static_cast<unsigned>(a.flags));
      break;
    case op_code::openat:
      io_uring_prep_openat(sqe, a.fd, a.path, a.flags | O_CLOEXEC, a.mode);
      break;
    case op_code::statx:
      io_uring_prep_statx(sqe, a.fd, a.path, a.flags, a.mask, static_cast<struct statx*>(a.buf));
      break;
  }
}

void prep_cancel(ring& r, io_op* op) {
  if (io_uring_sqe* sqe = r.sqe_locked()) {
    io_uring_prep_cancel64(sqe, reinterpret_cast<std::uint64_t>(op), 0);
    io_uring_sqe_set_data64(sqe, kUdIgnore);
  }
}

}  // namespace

bool submit_op(io_op* op, const op_args& args, std::chrono::nanoseconds timeout) {
  worker* w = current_worker();
  pwq* q = current_pwq();
  if (w == nullptr || q == nullptr)
    throw std::logic_error("cowq: I/O must be awaited by a coroutine running on a cowq worker");
  pool* p = w->pool_;
  if (p->io_closed_.load(std::memory_order_relaxed)) {
    op->res_ = -ECANCELED;
    return false;
  }
  op->pool_ = p;
  op->pwq_ = q;
  op->has_timeout_ = timeout.count() > 0;
  if (op->has_timeout_) {
    op->timeout_.tv_sec = timeout.count() / 1'000'000'000;
    op->timeout_.tv_nsec = timeout.count() % 1'000'000'000;
  }
  ring& r = *p->ring_;
  std::unique_lock g(r.sq_lock_);
  // Acquire pairs with the canceller's fetch_or in cancel_op(). Shutdown
  // is checked again under the lock: cancel_all_io() stores the flag and
  // then takes this lock to cancel everything, so a request prepared after
  // that would be missed by the cancel and wait for ever.
  if ((op->state_.load(std::memory_order_acquire) & op_cancel_requested) ||
      p->io_closed_.load(std::memory_order_relaxed)) {
    op->res_ = -ECANCELED;
    return false;
  }
  // The first request of a batch: it waits for the end of the running
  // item to be submitted, and if the item blocks unannounced (a when_all
  // child after this one, say), only the watchdog can see to it.
  const bool first_of_batch = !r.has_unsubmitted();
  // Room for one more: should a cancel come in below, its request must
  // join this one unsubmitted. Making room for it then would submit this
  // one alone, and it could complete and its frame be reused before the
  // cancel went out, to hit whatever op lived there next.
  io_uring_sqe* sqe = r.sqe_locked(op->has_timeout_ ? 3 : 2);
  if (sqe == nullptr) {
    op->res_ = -EAGAIN;
    return false;
  }
  prep(sqe, args);
  io_uring_sqe_set_data(sqe, op);
  if (op->has_timeout_) {
    // The linked timeout cancels the operation when it fires: one kernel
    // timer for this operation only, gone when the operation completes.
    sqe->flags |= IOSQE_IO_LINK;
    io_uring_sqe* t = io_uring_get_sqe(r.raw());
    io_uring_prep_link_timeout(t, reinterpret_cast<__kernel_timespec*>(&op->timeout_), 0);
    io_uring_sqe_set_data64(t, kUdIgnore);
  }
  p->inflight_.fetch_add(1, std::memory_order_relaxed);
  tsan_release(op);
  // A canceller that came in after the check above found the op not yet
  // submitted and left the cancel to us.
  if (op->state_.fetch_or(op_submitted, std::memory_order_acq_rel) & op_cancel_requested)
    prep_cancel(r, op);
  g.unlock();
  if (first_of_batch) p->watchdog_->work_waits_unlocked();
  return true;
}

void cancel_op(io_op* op) noexcept {
  // acq_rel pairs with the fetch_or of op_submitted in submit_op(): exactly
  // one of the two sees the other's bit and sends the cancel.
  if ((op->state_.fetch_or(op_cancel_requested, std::memory_order_acq_rel) & op_submitted) == 0)
    return;
  if (op->multishot_ != nullptr) {
    // Waiting on a shared request: leave it armed, just stop waiting.
    shared_request_cancel(op);
    return;
  }
  ring& r = *op->pool_->ring_;
  std::lock_guard g(r.sq_lock_);
  prep_cancel(r, op);
  // The canceller may be any thread: submit now rather than at an item's end.
  r.submit_locked();
}

io_result to_result(const io_op& op) noexcept {
  io_result r;
  if (op.res_ >= 0) {
    r.value = static_cast<std::size_t>(op.res_);
    return r;
  }
  const int err = -op.res_;
  if (err == ECANCELED && op.has_timeout_ &&
      (op.state_.load(std::memory_order_relaxed) & op_cancel_requested) == 0)
    r.error = std::make_error_code(std::errc::timed_out);
  else
    r.error = std::error_code(err, std::system_category());
  return r;
}

}  // namespace cowq::detail

namespace cowq::detail {

void cancel_all_sleeps(pool& p);

void cancel_all_io(pool& p) {
  p.io_closed_.store(true, std::memory_order_relaxed);
  cancel_all_sleeps(p);
  ring& r = *p.ring_;
  std::lock_guard g(r.sq_lock_);
  if (ring::features().async_cancel_any) {
    if (io_uring_sqe* sqe = r.sqe_locked()) {
      io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
      io_uring_sqe_set_data64(sqe, kUdIgnore);
    }
  } else {
    log().warn("pool {}: this kernel cannot cancel all requests at once; "
               "operations still in flight at shutdown are left", p.name_);
    p.inflight_.store(0, std::memory_order_relaxed);
  }
  r.submit_locked();
}

}  // namespace cowq::detail
