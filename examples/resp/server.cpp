// resp_server's connections, accept loop and expiry sweep (see server.hpp).
#include "server.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <sys/socket.h>

namespace resp {

namespace {

// One recv asks for at most this much, whatever the buffer's size (the
// ring's length field is 32 bits).
constexpr std::size_t max_recv_bytes = std::size_t{1} << 30;
// Below this much room at the end of the read buffer, unconsumed bytes are
// moved to its front before the next recv.
constexpr std::size_t min_recv_room = 4096;

// A connection's input: [start, end) is read but not yet consumed.
struct read_buffer {
  std::unique_ptr<char[]> data;
  std::size_t cap = 0;
  std::size_t start = 0;
  std::size_t end = 0;

  explicit read_buffer(std::size_t n) : data(std::make_unique_for_overwrite<char[]>(n)), cap(n) {}
  std::size_t unconsumed() const noexcept { return end - start; }

  void reallocate(std::size_t n) {
    auto d = std::make_unique_for_overwrite<char[]>(n);
    if (unconsumed() != 0) std::memcpy(d.get(), data.get() + start, unconsumed());
    end = unconsumed();
    start = 0;
    data = std::move(d);
    cap = n;
  }
  // Makes room to read into, given that the request in progress needs
  // `needed` bytes from its start (never more than `limit`).
  void prepare(std::size_t needed, std::size_t initial, std::size_t limit) {
    if (unconsumed() == 0) {
      start = end = 0;
      // A large request is done: give its memory back.
      if (cap > initial) reallocate(initial);
      return;
    }
    const std::size_t want = std::max(needed, unconsumed() + 1);
    if (want > cap) {
      reallocate(std::max(want, std::min(cap * 2, limit)));
    } else if (start != 0 && (cap - end < min_recv_room || cap - end < want - unconsumed())) {
      std::memmove(data.get(), data.get() + start, unconsumed());
      end = unconsumed();
      start = 0;
    }
  }
};

}  // namespace

server::server(cowq::runtime& rt, server_options opts) : rt_(rt), opts_(opts) {
  registry_.prev = registry_.next = &registry_;
}

bool server::enlist(conn_link& c) {
  std::lock_guard lock(registry_mu_);
  if (stopping_) return false;
  c.next = registry_.next;
  c.prev = &registry_;
  registry_.next->prev = &c;
  registry_.next = &c;
  return true;
}

void server::delist(conn_link& c) {
  // Before the socket is closed: stop() must never shut down a descriptor
  // number that has been closed and reused.
  std::lock_guard lock(registry_mu_);
  c.prev->next = c.next;
  c.next->prev = c.prev;
}

void server::stop() {
  stop_.request_stop();
  std::lock_guard lock(registry_mu_);
  stopping_ = true;
  // A pending recv then completes with end of input, a pending send with
  // EPIPE: every connection coroutine ends on its own. Cheaper on the hot
  // path than a stop token on every recv and send.
  for (conn_link* c = registry_.next; c != &registry_; c = c->next) ::shutdown(c->fd, SHUT_RDWR);
}

cowq::task<void> server::accept_loop(cowq::net::tcp_listener& l) {
  const std::stop_token stop = stop_.get_token();
  while (!stop.stop_requested()) {
    auto c = co_await l.accept(stop);
    if (!c) {
      if (c.error == std::errc::operation_canceled) break;
      // EMFILE and friends: report, back off briefly, keep serving.
      std::fprintf(stderr, "accept: %s\n", c.error.message().c_str());
      co_await cowq::sleep_for(std::chrono::milliseconds(10), stop);
      continue;
    }
    rt_.system_wq().spawn(serve(std::move(c.value)));
  }
}

void server::maybe_start_sweep() {
  if (!db_.claim_sweeper()) return;
  try {
    rt_.system_wq().spawn(sweep());
  } catch (const std::exception&) {
    // The runtime is shutting down: nothing will read the keys again.
  }
}

cowq::task<void> server::sweep() {
  const std::stop_token stop = stop_.get_token();
  for (;;) {
    if (co_await cowq::sleep_for(opts_.sweep_interval, stop)) co_return;
    auto r = db_.sweep_expired(opts_.sweep_budget);
    while (r.budget_hit) {
      co_await cowq::yield();
      r = db_.sweep_expired(opts_.sweep_budget);
    }
    if (r.has_deadlines) continue;
    // No deadline left: stop waking up. A SET that adds one between the
    // sweep above and the release below found the sweep still claimed and
    // relies on this one, so look once more after releasing.
    db_.sweeper_idle();
    if (!db_.sweep_expired(opts_.sweep_budget).has_deadlines || !db_.claim_sweeper()) co_return;
  }
}

cowq::task<void> server::serve(cowq::net::stream s) {
  s.set_nodelay(true);
  conn_link link;
  link.fd = s.native_handle();
  if (!enlist(link)) {
    co_await s.close();
    co_return;
  }
  session sess;
  sess.id = next_id_.fetch_add(1, std::memory_order_relaxed);
  request_parser parser(opts_.limits);
  read_buffer in(opts_.read_buffer);
  reply_buffer out(opts_.read_buffer);
  // No stop token: stop() shuts the socket down instead (see there).
  cowq::io_options io;
  io.timeout = opts_.idle_timeout;

  bool open = true;
  while (open) {
    // Run every complete request already read, cutting the batch once its
    // replies reach flush_bytes.
    bool more = false;
    bool close_after = false;
    for (;;) {
      const auto st = parser.parse(in.data.get() + in.start, in.unconsumed());
      if (st == request_parser::status::need_more) break;
      if (st == request_parser::status::error) {
        // As Redis: the error, then the connection closes; what follows
        // the bad request is not run.
        out.error(parser.error());
        close_after = true;
        break;
      }
      if (st == request_parser::status::command) execute(db_, sess, parser.args(), out);
      in.start += parser.consumed();
      if (sess.close_after_reply) {
        close_after = true;
        break;
      }
      if (out.size() >= opts_.flush_bytes) {
        more = true;
        break;
      }
    }
    if (sess.added_deadline) {
      sess.added_deadline = false;
      maybe_start_sweep();
    }
    // One send per batch. Nothing is read meanwhile, so a client that
    // sends without reading replies stalls here, not the server's memory.
    for (std::size_t off = 0; off < out.size();) {
      auto w = co_await s.send({reinterpret_cast<const std::byte*>(out.data()) + off, out.size() - off}, io);
      if (!w || w.value == 0) {
        open = false;
        break;
      }
      off += w.value;
    }
    out.clear();
    // Not after every large reply: 1 MiB values would reallocate per batch.
    out.shrink_to(opts_.flush_bytes * 16);
    if (close_after || !open) break;
    if (more) continue;

    in.prepare(parser.needed(), opts_.read_buffer, opts_.limits.max_request_len);
    const std::size_t room = std::min(in.cap - in.end, max_recv_bytes);
    auto r = co_await s.recv({reinterpret_cast<std::byte*>(in.data.get()) + in.end, room}, io);
    // Error, end of input (also how stop() ends us) or the idle timeout.
    if (!r || r.value == 0) break;
    in.end += r.value;
  }
  delist(link);
  co_await s.close();
}

}  // namespace resp
