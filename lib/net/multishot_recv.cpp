// Multishot receive: one request, many reads, no buffer per connection.
//
// A receiver's state lives on the heap, owned jointly by the receiver and
// by the requests in the kernel (the receive, and our cancel of it): it is
// freed when the receiver is gone and neither request is left. Every field
// is under the home pool's lock except where noted.
//
// The receive stays armed while the receiver's backlog (chunks received,
// not yet taken) is short. Past backlog_limit() it is cancelled, so a
// connection whose data nobody reads stops taking the pool's buffers (the
// kernel may fill more in the burst before the cancel lands); TCP's window
// then holds the peer back, and the next recv that finds the backlog half
// gone arms it again. When the pool runs out of buffers, a receive ends
// with ENOBUFS and its receiver goes on the pool's starved list; once an
// eighth of the buffers are free again, all of them are re-armed together.
// A starved receiver with a recv waiting receives into a malloc'd buffer
// of its own meanwhile, so that no connection waits on another's reader.
#include "multishot_recv.hpp"

#include "../log/log.hpp"
#include "../pool/watchdog.hpp"
#include "../runtime/runtime_impl.hpp"
#include "../util/tsan.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <system_error>
#include <unistd.h>

namespace cowq::detail {

namespace {

std::uint64_t receive_ud(recv_state* s) noexcept {
  return reinterpret_cast<std::uint64_t>(s) | kUdSharedTag | kUdRecvBit;
}

// False when the backlog could not grow (out of memory).
bool push_ready(recv_state* s, recv_chunk c) noexcept {
  if (s->ready_size == s->ready.size()) {
    // Full: unroll into a vector twice the size.
    try {
      std::vector<recv_chunk> grown;
      grown.reserve(std::max<std::size_t>(8, s->ready.size() * 2));
      for (std::size_t i = 0; i < s->ready_size; ++i)
        grown.push_back(s->ready[(s->ready_head + i) % s->ready.size()]);
      grown.resize(grown.capacity());
      s->ready = std::move(grown);
      s->ready_head = 0;
    } catch (const std::bad_alloc&) {
      return false;
    }
  }
  s->ready[(s->ready_head + s->ready_size) % s->ready.size()] = c;
  ++s->ready_size;
  return true;
}

recv_chunk pop_ready(recv_state* s) noexcept {
  const recv_chunk c = s->ready[s->ready_head];
  s->ready_head = (s->ready_head + 1) % s->ready.size();
  --s->ready_size;
  return c;
}

unsigned buffer_flags(std::uint16_t bid) noexcept {
  return IORING_CQE_F_BUFFER | (static_cast<unsigned>(bid) << IORING_CQE_BUFFER_SHIFT);
}

// L(home): an SQE on home's ring for ud's cancel, counted in flight so
// that shutdown waits for its completion too.
void send_cancel_locked(recv_state* s) {
  pool* p = s->home;
  ring& r = *p->ring_;
  {
    std::lock_guard g(r.sq_lock_);
    io_uring_sqe* sqe = r.sqe_locked();
    if (sqe == nullptr) return;
    io_uring_prep_cancel64(sqe, receive_ud(s), 0);
    io_uring_sqe_set_data64(sqe, receive_ud(s) | kUdRecvCancelBit);
    s->cancelling = true;
    s->stop_asked = true;
    p->inflight_.fetch_add(1, std::memory_order_relaxed);
    tsan_release(s);
  }
  p->watchdog_->work_waits();
}

// L(home): hands chunk c to op, completing it.
void complete_with_chunk(recv_state* s, io_op* op, recv_chunk c) noexcept {
  op->res_ = static_cast<std::int32_t>(c.len);
  op->cqe_flags_ = c.own != nullptr ? 0u : buffer_flags(c.bid);
  s->handoff = c.own;
}

// L(home): the waiter (if any) gets chunk c.
bool deliver_locked(recv_state* s, recv_chunk c) noexcept {
  if (s->waiter == nullptr) return false;
  s->handoff = c.own;
  return s->wake_waiter_locked(static_cast<int>(c.len), c.own != nullptr ? 0u : buffer_flags(c.bid));
}

// L(home): arms the receive if it is wanted and may be: into the pool's
// buffers, or, while they are all taken and a recv waits, into one of the
// receiver's own, so that no connection waits on another's reader.
void maybe_arm_locked(recv_state* s) {
  if (s->armed || s->cancelling || s->closed || s->eof || s->error != 0) return;
  if (s->fd_gone) {
    // Never on that descriptor number again; a recv waiting (with the
    // backlog empty) hears why.
    s->wake_waiter_locked(-EBADF, 0);
    return;
  }
  if (s->starved && s->waiter == nullptr) return;
  if (!s->starved && s->ready_size > backlog_limit(s) / 2) return;
  pool* p = s->home;
  if (p->io_closed_.load(std::memory_order_relaxed)) {
    // Shut down: nothing more will come.
    s->wake_waiter_locked(-ECANCELED, 0);
    return;
  }
  std::byte* own = nullptr;
  if (s->starved) {
    own = static_cast<std::byte*>(std::malloc(s->bufs->size_));
    if (own == nullptr) {
      s->wake_waiter_locked(-ENOMEM, 0);
      return;
    }
    ++p->recv_shortages_;
  }
  ring& r = *p->ring_;
  {
    std::lock_guard g(r.sq_lock_);
    io_uring_sqe* sqe = r.sqe_locked();
    if (sqe == nullptr) {
      std::free(own);
      if (!s->wake_waiter_locked(-EAGAIN, 0)) s->error = EAGAIN;
      return;
    }
    if (own != nullptr) {
      io_uring_prep_recv(sqe, s->fd, own, s->bufs->size_, 0);
      s->own_buf = own;
    } else {
      if (ring::features().multishot_recv)
        io_uring_prep_recv_multishot(sqe, s->fd, nullptr, 0, 0);
      else
        io_uring_prep_recv(sqe, s->fd, nullptr, 0, 0);
      sqe->flags |= IOSQE_BUFFER_SELECT;
      sqe->buf_group = buffer_ring::kGroup;
    }
    io_uring_sqe_set_data64(sqe, receive_ud(s));
    s->armed = true;
    p->inflight_.fetch_add(1, std::memory_order_relaxed);
    tsan_release(s);
  }
  // Submitted at the end of this loop turn; should the item block
  // unannounced before that, the watchdog hands the ring to another worker.
  p->watchdog_->work_waits();
}

// L(p): enough buffers came back while receivers starve: every one of
// them that still wants to receive is armed again.
void rearm_starved_locked(pool& p) {
  std::vector<recv_state*> starved;
  starved.swap(p.starved_recv_);
  if (p.bufs_ != nullptr) p.bufs_->starved_.store(false, std::memory_order_seq_cst);
  for (recv_state* s : starved) {
    s->starved = false;
    maybe_arm_locked(s);
  }
  // Kept for the next shortage: no allocation while it lasts.
  starved.clear();
  if (p.starved_recv_.empty()) p.starved_recv_.swap(starved);
}

// L(p): gives a buffer back from under the pool lock.
void give_back_locked(pool& p, std::uint16_t bid) {
  if (p.bufs_->put(bid)) rearm_starved_locked(p);
}

void release_locked(pool& p, const recv_chunk& c) {
  if (c.own != nullptr)
    std::free(c.own);
  else
    give_back_locked(p, c.bid);
}

void unstarve_locked(pool& p, recv_state* s) {
  auto it = std::find(p.starved_recv_.begin(), p.starved_recv_.end(), s);
  if (it != p.starved_recv_.end()) p.starved_recv_.erase(it);
  s->starved = false;
}

void destroy_locked(pool& p, recv_state* s) {
  while (s->ready_size != 0) release_locked(p, pop_ready(s));
  if (s->starved) unstarve_locked(p, s);
  delete s;
}

}  // namespace

buffer_ring::buffer_ring(pool& p, unsigned count, unsigned size)
    : owner_(&p), count_(count), size_(size), mask_(io_uring_buf_ring_mask(count)) {
  const long page = ::sysconf(_SC_PAGESIZE);
  void* r = nullptr;
  if (::posix_memalign(&r, static_cast<std::size_t>(page > 0 ? page : 4096),
                       count * sizeof(io_uring_buf)) != 0)
    throw std::bad_alloc();
  br_ = static_cast<io_uring_buf_ring*>(r);
  mem_ = static_cast<std::byte*>(std::aligned_alloc(64, (std::size_t{count} * size + 63) / 64 * 64));
  if (mem_ == nullptr) {
    std::free(br_);
    throw std::bad_alloc();
  }
  io_uring_buf_ring_init(br_);
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<std::uint64_t>(br_);
  reg.ring_entries = count;
  reg.bgid = kGroup;
  if (const int rc = io_uring_register_buf_ring(p.ring_->raw(), &reg, 0); rc < 0) {
    std::free(mem_);
    std::free(br_);
    throw std::system_error(-rc, std::system_category(), "io_uring_register_buf_ring");
  }
  for (unsigned i = 0; i < count; ++i)
    io_uring_buf_ring_add(br_, data(static_cast<std::uint16_t>(i)), size, static_cast<unsigned short>(i),
                          mask_, static_cast<int>(i));
  io_uring_buf_ring_advance(br_, static_cast<int>(count));
}

buffer_ring::~buffer_ring() {
  std::free(mem_);
  std::free(br_);
}

bool buffer_ring::put(std::uint16_t bid) noexcept {
  {
    std::lock_guard g(lock_);
    // What the last holder wrote into it happens before the next holder,
    // whom the kernel hands it to, reads it.
    tsan_release(data(bid));
    io_uring_buf_ring_add(br_, data(bid), size_, bid, mask_, 0);
    io_uring_buf_ring_advance(br_, 1);
  }
  in_use_.fetch_sub(1, std::memory_order_seq_cst);
  return starved_.load(std::memory_order_seq_cst) && enough_free();
}

buffer_ring* pool::recv_buffers() {
  std::call_once(bufs_once_, [this] {
    const auto& o = rt_->opts_.recv_buffers;
    try {
      bufs_ = std::make_unique<buffer_ring>(*this, o.count, o.size);
      std::lock_guard g(lock_);
      bufs_set_up_ = bufs_.get();
    } catch (const std::system_error& e) {
      bufs_error_ = e.code().value();
    } catch (const std::bad_alloc&) {
      bufs_error_ = ENOMEM;
    }
    if (bufs_error_ != 0)
      log().error("pool {}: cannot set up {} receive buffers of {} bytes: {}; receivers on it fail",
                  name_, o.count, o.size, std::error_code(bufs_error_, std::system_category()).message());
  });
  return bufs_.get();
}

std::size_t fallback_recv_size() noexcept {
  worker* w = current_worker();
  return w != nullptr ? w->pool_->rt_->opts_.recv_buffers.size : 4096;
}

shared_start multishot_recv_start(recv_state* s, io_op* op, std::chrono::nanoseconds timeout) {
  worker* w = current_worker();
  pwq* q = current_pwq();
  // Off a worker, the fallback's submit_op() says what is wrong. Without
  // shared buffers home is never set: only the owner touches the state.
  if (w == nullptr || q == nullptr || !ring::features().buf_ring) {
    if (!s->fd_gone) return shared_start::own_request;
    op->res_ = -EBADF;
    return shared_start::done;
  }
  pool* p = w->pool_;
  buffer_ring* b = p->recv_buffers();
  if (b == nullptr) {
    op->res_ = -p->bufs_error_;
    return shared_start::done;
  }
  std::lock_guard g(p->lock_);
  if (s->home == nullptr) {
    s->home = p;
    s->bufs = b;
  }
  if (s->home != p)
    throw std::logic_error("cowq: a receiver receives on the pool of its first recv only "
                           "(pool " + s->home->name_ + "), not on pool " + p->name_);
  if (s->waiter != nullptr) {
    op->res_ = -EBUSY;  // two recvs at once on one receiver
    return shared_start::done;
  }
  op->pool_ = p;
  op->pwq_ = q;
  op->multishot_ = static_cast<shared_request*>(s);
  // Done at once: the op is not marked submitted, so a canceller leaves
  // it alone (its result is in).
  if (s->ready_size != 0) {
    complete_with_chunk(s, op, pop_ready(s));
    maybe_arm_locked(s);
    return shared_start::done;
  }
  if (s->error != 0) {
    op->res_ = -std::exchange(s->error, 0);
    return shared_start::done;
  }
  if (s->eof) {
    op->res_ = 0;
    return shared_start::done;
  }
  if (s->fd_gone) {
    op->res_ = -EBADF;
    return shared_start::done;
  }
  if (p->io_closed_.load(std::memory_order_relaxed)) {
    op->res_ = -ECANCELED;
    return shared_start::done;
  }
  // A stop requested before we got here was left to us.
  if (op->state_.fetch_or(op_submitted, std::memory_order_acq_rel) & op_cancel_requested) {
    op->res_ = -ECANCELED;
    return shared_start::done;
  }
  s->wait_locked(op, timeout);
  maybe_arm_locked(s);
  return shared_start::waiting;
}

void multishot_recv_complete(pool& p, recv_state* s, int res, unsigned flags, bool cancel) {
  tsan_acquire(s);
  p.inflight_.fetch_sub(cancel || (flags & IORING_CQE_F_MORE) == 0 ? 1 : 0, std::memory_order_relaxed);
  if (cancel) {
    s->cancelling = false;
  } else {
    // The two completions of a cancel come in either order: the request's
    // own (-ECANCELED, its last) tells whether it is ours, stop_asked.
    const bool ours = s->stop_asked;
    if ((flags & IORING_CQE_F_MORE) == 0) {
      s->armed = false;
      s->stop_asked = false;
    }
    const bool has_buffer = (flags & IORING_CQE_F_BUFFER) != 0;
    if (has_buffer) s->bufs->in_use_.fetch_add(1, std::memory_order_seq_cst);
    // A receive into our own buffer is single-shot: this is its completion.
    std::byte* own = std::exchange(s->own_buf, nullptr);
    const recv_chunk c{static_cast<std::uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT),
                       static_cast<std::uint32_t>(res > 0 ? res : 0), own};
    if (res > 0 && (has_buffer || own != nullptr)) {
      if (s->closed) {
        release_locked(p, c);
      } else if (!deliver_locked(s, c)) {
        if (!push_ready(s, c)) {
          // Bytes lost: the stream is broken, and its reader must hear so.
          release_locked(p, c);
          s->error = ENOMEM;
          if (s->armed && !s->cancelling) send_cancel_locked(s);
        } else if (s->ready_size >= backlog_limit(s) && s->armed && !s->cancelling) {
          // A backlog nobody takes: stop taking the pool's buffers for it.
          send_cancel_locked(s);
        }
      }
    } else if (has_buffer || own != nullptr) {
      release_locked(p, c);
    }
    if (res == 0) {
      // End of stream.
      s->eof = true;
      if (s->ready_size == 0) s->wake_waiter_locked(0, 0);
    } else if (res == -ENOBUFS) {
      // Only a receiver that would re-arm waits for a buffer: one with a
      // long backlog re-arms when its recvs have taken it.
      if (!s->closed && !s->starved && s->ready_size <= backlog_limit(s) / 2) {
        s->starved = true;
        p.starved_recv_.push_back(s);
        s->bufs->starved_.store(true, std::memory_order_seq_cst);
        // Buffers given back meanwhile may not have seen the flag: with
        // enough free, try again now rather than wait for the next one.
        // Not with a recv waiting: that one goes on in a buffer of its own
        // (maybe_arm_locked()) until the starved are re-armed together.
        if (s->waiter == nullptr && s->bufs->enough_free()) unstarve_locked(p, s);
      }
    } else if (res == -ECANCELED && ours) {
      // Our own cancel: the backlog is full, or the receiver closed.
    } else if (res < 0 && !s->wake_waiter_locked(res, 0)) {
      // Kept for the next recv: a reset connection must be reported.
      s->error = -res;
    }
  }
  if (s->closed) {
    if (!s->armed && !s->cancelling) destroy_locked(p, s);
    return;
  }
  // A waiter waits only with an empty backlog, and may be served by a new
  // receive; a short backlog re-arms too, so data keeps flowing.
  maybe_arm_locked(s);
}

// Whether the calling thread runs an item of p: then what it queues on p
// is run when the item returns, and what it prepares is submitted then.
bool runs_item_of(const pool& p) noexcept {
  const worker* w = current_worker();
  return w != nullptr && w->pool_ == &p && current_pwq() != nullptr;
}

void give_back_buffer(buffer_ring* b, std::uint16_t bid) noexcept {
  if (!b->put(bid)) return;
  pool& p = *b->owner_;
  {
    std::lock_guard g(p.lock_);
    rearm_starved_locked(p);
  }
  // An item of the pool's own leaves the request to the end of its loop
  // turn, batched with the rest (maybe_arm_locked() woke the watchdog in
  // case it blocks first); any other thread submits now.
  if (!runs_item_of(p)) {
    p.ring_->submit();
    // A waiter woken above (shutdown, no memory) was queued with nobody
    // told.
    p.wake_for_queued();
  }
}

void multishot_recv_fd_gone(recv_state* s) noexcept {
  s->stream = nullptr;
  pool* p = s->home;
  if (p == nullptr) {
    s->fd_gone = true;  // no request yet: nobody else looks
    return;
  }
  bool submit = false;
  {
    std::lock_guard g(p->lock_);
    s->fd_gone = true;
    if (s->starved) unstarve_locked(*p, s);
    if (s->armed && !s->cancelling) {
      send_cancel_locked(s);
      submit = true;
    }
    maybe_arm_locked(s);  // a recv waiting with nothing armed hears EBADF
  }
  if (submit) p->ring_->submit();
  // The stream may be closed from anywhere: a waiter queued above must
  // get a worker. (An item of the pool's own runs it after itself.)
  if (!runs_item_of(*p)) p->wake_for_queued();
}

void multishot_recv_close(recv_state* s) noexcept {
  pool* p = s->home;
  if (p == nullptr) {
    delete s;
    return;
  }
  bool submit = false;
  {
    std::lock_guard g(p->lock_);
    s->closed = true;
    // A waiter would be a recv still running on a receiver being
    // destroyed: the receiver's owner broke that rule, not us; its timer
    // at least must not outlive the state.
    p->timers_.cancel(&s->timer);
    if (io_op* w = std::exchange(s->waiter, nullptr)) w->multishot_waiting_ = false;
    if (s->starved) unstarve_locked(*p, s);
    while (s->ready_size != 0) release_locked(*p, pop_ready(s));
    if (s->armed && !s->cancelling) {
      send_cancel_locked(s);
      submit = true;
    }
    if (!s->armed && !s->cancelling) {
      delete s;
      return;
    }
  }
  if (submit) p->ring_->submit();
}

}  // namespace cowq::detail
