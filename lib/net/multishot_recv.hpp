// Multishot receive into a pool's provided buffers (cowq::net::receiver).
#pragma once

#include "shared_request.hpp"

#include <algorithm>
#include <vector>

namespace cowq::net {
class receiver;
class stream;
}

namespace cowq::detail {

// A pool's provided buffers: a buffer ring registered with the pool's
// io_uring. The kernel takes a buffer for each completion of a receive
// that selects one; cowq::net::recv_buffer gives it back.
struct buffer_ring {
  static constexpr std::uint16_t kGroup = 0;

  // Registers count buffers of size bytes (count a power of two) with p's
  // ring. Throws std::system_error when the kernel refuses, std::bad_alloc.
  buffer_ring(pool& p, unsigned count, unsigned size);
  // Only once the pool's ring is gone: the kernel may write to the buffers
  // until then.
  ~buffer_ring();
  buffer_ring(const buffer_ring&) = delete;
  buffer_ring& operator=(const buffer_ring&) = delete;

  std::byte* data(std::uint16_t bid) const noexcept {
    return mem_ + static_cast<std::size_t>(bid) * size_;
  }
  // Hands buffer bid back to the kernel, from any thread. Returns whether
  // receivers of the pool starve for buffers and enough are free again to
  // re-arm them (rearm_starved_locked()).
  bool put(std::uint16_t bid) noexcept;
  // Whether an eighth of the buffers (at least one) is free. Re-arming the
  // starved only then, not at every buffer given back, keeps them from
  // racing each other for single buffers while the pool is short.
  bool enough_free() const noexcept {
    const auto used = in_use_.load(std::memory_order_seq_cst);
    return static_cast<std::int64_t>(count_) - used >= std::max<std::int64_t>(1, count_ / 8);
  }

  pool* owner_ = nullptr;            // I
  io_uring_buf_ring* br_ = nullptr;  // I (its entries and tail: lock_)
  std::byte* mem_ = nullptr;         // I
  unsigned count_ = 0;               // I
  unsigned size_ = 0;                // I
  int mask_ = 0;                     // I
  // Serialises giving back: the ring's tail has one writer at a time. The
  // tail's release store (io_uring_buf_ring_advance) pairs with the
  // kernel's acquire load when it selects a buffer.
  spinlock lock_;
  // Buffers holding bytes not yet given back (counted up by the reaper for
  // each completion with a buffer, down by put(); those the kernel filled
  // and nobody reaped yet count as free), and whether receivers starve:
  // the two sides of a store-then-load pair (seq_cst on both). put()
  // lowers in_use_ then reads starved_; a receiver that gets ENOBUFS sets
  // starved_ then reads in_use_. At least one sees the other, so the give-
  // back that makes enough_free() true re-arms the starved.
  std::atomic<std::int64_t> in_use_{0};
  std::atomic<bool> starved_{false};
};

// Received bytes: in the pool's buffer bid, or (own non-null) in a buffer
// of the receiver's own, from malloc, taken while the pool had none.
struct recv_chunk {
  std::uint16_t bid = 0;
  std::uint32_t len = 0;
  std::byte* own = nullptr;
};

struct recv_state : shared_request {
  explicit recv_state(int socket) noexcept : fd(socket) {}
  int fd;                       // I: the stream's socket
  buffer_ring* bufs = nullptr;  // set with home, under its lock
  bool armed = false;           // L(home): the receive is in the kernel
  bool cancelling = false;      // L(home): our cancel request is in the kernel
  bool stop_asked = false;      // L(home): the armed receive is the one we cancel
  bool closed = false;          // L(home): the receiver is gone
  bool starved = false;         // L(home): on home's starved list
  // L(home): the buffer of the armed receive when it is one into a buffer
  // of our own (the pool's were all taken and a recv waits).
  std::byte* own_buf = nullptr;
  // The own buffer of the chunk the last recv completed with, for its
  // await_resume to take. Written under L(home) before the op is queued
  // or returns done; read by the awaiting coroutine after that, before
  // its next recv can complete another.
  std::byte* handoff = nullptr;
  bool eof = false;             // L(home): the peer closed its side
  // L(home), or the owner's alone before the first recv set home: the
  // stream closed its descriptor, whose number another connection may get
  // next. Nothing is received on it again.
  bool fd_gone = false;
  // The stream this receiver reads, null once it is gone. Only its owner
  // touches it (the stream's and the receiver's, one coroutine at a time).
  net::stream* stream = nullptr;
  int error = 0;                // L(home): an errno for the next recv
  // L(home): received and not yet taken, in order: a circular buffer over
  // the vector, which grows only when a backlog is deeper than ever before
  // (bounded: a receive is cancelled once backlog_limit() chunks wait).
  std::vector<recv_chunk> ready;
  std::size_t ready_head = 0;
  std::size_t ready_size = 0;
};

// Chunks a receiver may hold before its receive is cancelled: a sixteenth
// of the pool's buffers, and at least 4.
inline std::size_t backlog_limit(const recv_state* s) noexcept {
  return std::max<std::size_t>(4, s->bufs->count_ / 16);
}

// On the calling worker. done: op's result (and cqe_flags_, for a buffer)
// is in. waiting: op waits for the next completion (or its timeout); it
// may already be resuming on another worker, so the caller must not look
// at it. own_request: the kernel has no provided buffers, or this is not a
// worker; the caller makes a request of its own. Throws std::logic_error
// when awaited on another pool than the receiver's first recv was.
shared_start multishot_recv_start(recv_state* s, io_op* op, std::chrono::nanoseconds timeout);
// L(p) held, from the reaper: a completion of s's receive (cancel false)
// or of our cancel of it (cancel true).
void multishot_recv_complete(pool& p, recv_state* s, int res, unsigned flags, bool cancel);
// The receiver is gone: buffers taken back, the receive cancelled, the
// state freed once the kernel is done with it.
void multishot_recv_close(recv_state* s) noexcept;
// The stream's descriptor is going (close, destruction, assignment): s
// stops receiving; what it received already is still taken.
void multishot_recv_fd_gone(recv_state* s) noexcept;
// Gives buffer bid back to b (from any thread, no pool lock held).
void give_back_buffer(buffer_ring* b, std::uint16_t bid) noexcept;
// Bytes the fallback receives into, per call.
std::size_t fallback_recv_size() noexcept;

// For tests: a receiver's state.
struct receiver_access {
  static recv_state* state(const net::receiver& r) noexcept;
};

}  // namespace cowq::detail
