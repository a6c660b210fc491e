// A request in a pool's ring that serves many operations in turn: the
// multishot accept of a listener, the multishot receive of a receiver.
#pragma once

#include "../pool/pool.hpp"

namespace cowq::detail {

// Tags such a request's user_data (states are 8-byte aligned): the state's
// address | kUdSharedTag, plus kUdRecvBit for a receive, plus
// kUdRecvCancelBit for our cancel of that receive.
inline constexpr std::uint64_t kUdSharedTag = 4;
inline constexpr std::uint64_t kUdRecvBit = 1;
inline constexpr std::uint64_t kUdRecvCancelBit = 2;
inline constexpr std::uint64_t kUdSharedMask = 7;

struct shared_request;

// The waiting operation's timeout: one waiter at a time, so one timer.
struct shared_timer : timer_node {
  shared_request* owner = nullptr;
};

// Every field is under the home pool's lock (L(home)) unless noted.
struct shared_request {
  shared_request() noexcept;
  shared_request(const shared_request&) = delete;
  shared_request& operator=(const shared_request&) = delete;

  // Set once, on the first operation, under that pool's lock; read without
  // it only by the thread that set it or after taking it.
  pool* home = nullptr;
  io_op* waiter = nullptr;  // L(home): the operation waiting for a completion
  shared_timer timer;       // L(home): armed while a waiter has a timeout

  // L(home): the waiter (if any) completes with res and flags as its CQE's,
  // and is queued on home. Returns whether there was one.
  bool wake_waiter_locked(int res, unsigned flags) noexcept;
  // L(home): op becomes the waiter, with its timeout if non-zero (arming it
  // may throw; then op is not the waiter).
  void wait_locked(io_op* op, std::chrono::nanoseconds timeout);
};

// cancel_op() of an op that waits on a shared request: it stops waiting,
// and the request stays armed for the next one.
void shared_request_cancel(io_op* op) noexcept;

}  // namespace cowq::detail
