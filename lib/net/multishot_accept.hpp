// Multishot accept state shared by a listener and its request in the ring.
#pragma once

#include "shared_request.hpp"

#include <deque>

namespace cowq::detail {

struct accept_state : shared_request {
  explicit accept_state(int listen_fd) noexcept : fd(listen_fd) {}
  int fd;                   // I: the listening socket
  bool armed = false;       // L(home): the request is in the kernel
  bool closed = false;      // L(home): the listener is gone
  std::deque<int> ready;    // L(home): accepted, not yet taken
  int error = 0;            // L(home): an errno to report to the next accept
};

accept_state* make_accept_state(int fd);
// On the calling worker: the op either completed at once (res_ set), or
// waits for the request's next completion, or until timeout (if non-zero)
// passes: then it completes with -ETIMEDOUT, and a connection arriving
// later waits for the next accept; or it needs a request of its own (off
// the listener's pool, or another accept waits already). Which is decided
// under the pool lock and returned: once the op waits, another worker may
// resume its coroutine before this call returns, so the caller must not
// look at op.
shared_start multishot_accept_start(accept_state* s, io_op* op, std::chrono::nanoseconds timeout);
void multishot_accept_complete(pool& p, accept_state* s, int res, unsigned flags);
void multishot_accept_close(accept_state* s);

}  // namespace cowq::detail
