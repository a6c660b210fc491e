// The HTTP/1.1 server (see server.hpp).
//
// Each connection is one coroutine that loops: answer every complete
// request in the read buffer into the write buffer, send the write buffer,
// read. Reading only after the send completes is the back-pressure: what
// one connection holds is its two fixed buffers. Requests are answered in
// the order they came, on the connection's own coroutine, so pipelined
// answers cannot overtake each other.
//
// Timeouts and the server's stop cost nothing per operation. A linked
// timeout on every read and send (io_options' timeout) arms and cancels
// an hrtimer and adds a completion each time (about 8 % of the server's
// CPU in a profile of this loop), and a stop token registers a callback
// on shared state each time. Instead each operation in flight publishes a
// coarse deadline, and one sweeper coroutine per server looks at the open
// connections every sweep period (as nginx's timer tree does, at the
// period's granularity): a read past its deadline is woken by
// shutdown(SHUT_RD) on its socket (the read returns 0), a send past its
// deadline by shutdown(SHUT_RDWR) (the send fails). serve() stops the
// connections the same way.
#include "server.hpp"

#include "parser.hpp"

#include <cowq/cowq.hpp>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <exception>
#include <memory>
#include <mutex>
#include <sched.h>
#include <string_view>
#include <sys/socket.h>
#include <utility>
#include <vector>

namespace http {

namespace {

using namespace std::chrono_literals;
using cowq::net::stream;

// The largest answer other than /stats: a status line, five fields and a
// short body. The write buffer is flushed before it has less room.
constexpr std::size_t kMaxSmallAnswer = 512;

constexpr std::string_view kHello = "Hello, World!";
constexpr std::size_t kDateLength = 29;  // "Sun, 06 Nov 1994 08:49:37 GMT"

std::string_view status_line(int status) noexcept {
  switch (status) {
    case 200: return "HTTP/1.1 200 OK\r\n";
    case 400: return "HTTP/1.1 400 Bad Request\r\n";
    case 404: return "HTTP/1.1 404 Not Found\r\n";
    case 405: return "HTTP/1.1 405 Method Not Allowed\r\n";
    case 408: return "HTTP/1.1 408 Request Timeout\r\n";
    case 413: return "HTTP/1.1 413 Content Too Large\r\n";
    case 431: return "HTTP/1.1 431 Request Header Fields Too Large\r\n";
    case 501: return "HTTP/1.1 501 Not Implemented\r\n";
    case 505: return "HTTP/1.1 505 HTTP Version Not Supported\r\n";
    default: return "HTTP/1.1 500 Internal Server Error\r\n";
  }
}

// The body of an error answer: the reason, for a human with curl.
std::string_view error_body(int status) noexcept {
  switch (status) {
    case 400: return "bad request\n";
    case 404: return "not found\n";
    case 405: return "method not allowed\n";
    case 408: return "request timeout\n";
    case 413: return "content too large\n";
    case 431: return "request header fields too large\n";
    case 501: return "not implemented\n";
    case 505: return "HTTP version not supported\n";
    default: return "internal server error\n";
  }
}

// The Date field (RFC 9110 5.6.7, IMF-fixdate), formatted when the second
// changes rather than per answer. Per thread, so no worker waits on
// another; the coarse clock is a vDSO read of the last tick, a few ns.
// The whole keep-alive "Hello, World!" answer is rebuilt with it, so the
// common answer is one copy.
struct date_cache {
  std::time_t second = -1;
  char date[32] = {};
  char hello[256] = {};
  std::size_t hello_len = 0;
};
thread_local date_cache tls_date;

date_cache& current_date() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME_COARSE, &ts);
  date_cache& d = tls_date;
  if (ts.tv_sec != d.second) {
    static constexpr const char* kDays[7] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static constexpr const char* kMonths[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    std::tm tm{};
    gmtime_r(&ts.tv_sec, &tm);
    std::snprintf(d.date, sizeof d.date, "%s, %02d %s %04d %02d:%02d:%02d GMT", kDays[tm.tm_wday % 7],
                  tm.tm_mday, kMonths[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    const int n = std::snprintf(d.hello, sizeof d.hello,
                                "HTTP/1.1 200 OK\r\nServer: cowq\r\nDate: %s\r\n"
                                "Content-Type: text/plain\r\nContent-Length: %zu\r\n\r\n%s",
                                d.date, kHello.size(), kHello.data());
    d.hello_len = static_cast<std::size_t>(n);
    d.second = ts.tv_sec;
  }
  return d;
}

// The answers of one read, gathered for one send.
class out_buffer {
 public:
  explicit out_buffer(std::size_t cap) : data_(std::make_unique<char[]>(cap)), cap_(cap) {}
  std::size_t size() const noexcept { return len_; }
  std::size_t room() const noexcept { return cap_ - len_; }
  bool empty() const noexcept { return len_ == 0; }
  const char* data() const noexcept { return data_.get(); }
  void clear() noexcept { len_ = 0; }
  void put(std::string_view s) noexcept {
    if (s.empty()) return;  // an empty view's data() may be null, which memcpy may not take
    std::memcpy(data_.get() + len_, s.data(), s.size());
    len_ += s.size();
  }
  void put_number(std::uint64_t v) noexcept {
    auto r = std::to_chars(data_.get() + len_, data_.get() + cap_, v);
    len_ = static_cast<std::size_t>(r.ptr - data_.get());
  }

 private:
  std::unique_ptr<char[]> data_;
  std::size_t cap_;
  std::size_t len_ = 0;
};

struct answer {
  int status = 200;
  std::string_view content_type = "text/plain";
  std::string_view body;
  std::string_view extra_fields;  // whole lines, each ending in CRLF
};

// At most the status line, fields and framing around a body (the longest
// status line is 47 bytes, the fixed fields 155).
std::size_t head_size(const answer& a) noexcept {
  return 256 + a.content_type.size() + a.extra_fields.size();
}

void write_answer(out_buffer& o, const answer& a, bool head_only, int minor, bool keep_alive) noexcept {
  o.put(status_line(a.status));
  o.put("Server: cowq\r\nDate: ");
  o.put({current_date().date, kDateLength});
  o.put("\r\n");
  if (!a.content_type.empty()) {
    o.put("Content-Type: ");
    o.put(a.content_type);
    o.put("\r\n");
  }
  o.put("Content-Length: ");
  o.put_number(a.body.size());
  o.put("\r\n");
  o.put(a.extra_fields);
  if (!keep_alive) o.put("Connection: close\r\n");
  else if (minor == 0) o.put("Connection: keep-alive\r\n");
  o.put("\r\n");
  if (!head_only) o.put(a.body);
}

// ms=N in a query string, 0 <= N <= max; -1 if absent or malformed.
int parse_ms(std::string_view query, int max) noexcept {
  while (!query.empty()) {
    const std::size_t amp = query.find('&');
    const std::string_view param = query.substr(0, amp);
    if (param.substr(0, 3) == "ms=") {
      const std::string_view v = param.substr(3);
      int n = 0;
      auto r = std::from_chars(v.data(), v.data() + v.size(), n);
      if (v.empty() || r.ec != std::errc{} || r.ptr != v.data() + v.size() || n < 0 || n > max) return -1;
      return n;
    }
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return -1;
}

// The deliberate mistake /block exists for: a plain blocking call on a
// worker thread, no cowq::blocking, no annotation of any kind.
void sleep_blocking(int ms) noexcept {
  timespec ts{ms / 1000, static_cast<long>(ms % 1000) * 1'000'000L};
  while (::nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

// Milliseconds of CLOCK_MONOTONIC_COARSE: a vDSO read of the last tick,
// a few ns, as precise as a timeout checked every sweep period needs.
std::int64_t coarse_now_ms() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return std::int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1'000'000;
}
constexpr std::int64_t kNoDeadline = INT64_MAX;

std::int64_t to_ms(std::chrono::milliseconds d) noexcept { return d.count(); }

class connection;

struct server_state {
  server_state(cowq::runtime& r, const http_options& o, http_stats& s, std::stop_token t)
      : rt(r), opts(o), stats(s), stop(std::move(t)) {
    // A quarter of the shortest timeout: a timeout fires between 1 and
    // 1.25 times its length.
    const auto shortest = std::min({o.idle_timeout, o.header_timeout, o.send_timeout});
    sweep_period = std::clamp<std::chrono::milliseconds>(shortest / 4, std::chrono::milliseconds(10),
                                                         std::chrono::milliseconds(1000));
  }
  cowq::runtime& rt;
  const http_options& opts;
  http_stats& stats;
  std::stop_token stop;
  std::chrono::milliseconds sweep_period;
  // Connection coroutines (and the sweeper) started and not finished. The
  // release decrement at their end pairs with the acquire load in serve()'s
  // wait.
  std::atomic<std::int64_t> live{0};

  // The open connections, for the sweeper and for serve()'s stop.
  std::mutex mu;
  connection* head = nullptr;    // M: mu
  bool sweeper_running = false;  // M: mu
  bool stopping = false;         // M: mu; set once, by serve() when it stops
};

cowq::task<void> sweep(server_state& st);

enum class close_mode {
  quiet,     // nothing unread is expected: close
  graceful,  // shut our side, drain the client's input briefly, close
  abort,     // the peer is gone or misbehaved: close now
};

class connection {
 public:
  connection(server_state& st, stream s)
      : st_(st),
        opts_(st.opts),
        s_(std::move(s)),
        rcap_(std::max(opts_.read_buffer_bytes, opts_.max_head_bytes + 1)),
        rbuf_(std::make_unique<char[]>(rcap_)),
        out_(std::max(opts_.write_buffer_bytes, 2 * kMaxSmallAnswer)),
        parser_(opts_.max_head_bytes) {
    std::lock_guard g(st_.mu);
    next_ = st_.head;
    if (next_ != nullptr) next_->prev_ = this;
    st_.head = this;
    registered_ = true;
    if (st_.stopping) shut_locked(SHUT_RD);  // came in after serve() stopped everyone else
    if (!st_.sweeper_running) {
      st_.sweeper_running = true;
      st_.live.fetch_add(1, std::memory_order_relaxed);
      st_.rt.system_wq().spawn(sweep(st_));
    }
  }
  ~connection() { leave_registry(); }
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;

  cowq::task<void> run();

  // The sweeper's look, under st_.mu: wakes the operation in flight if its
  // deadline has passed. The release store pairs with the acquire load in
  // expired() (the kernel orders the two anyway: the shutdown is what
  // makes the operation return).
  void expire_if_due(std::int64_t now) noexcept {
    if (recv_deadline_ms_.load(std::memory_order_relaxed) <= now && (shut_ & 1) == 0) {
      expired_.store(true, std::memory_order_release);
      shut_locked(SHUT_RD);
    }
    if (send_deadline_ms_.load(std::memory_order_relaxed) <= now && (shut_ & 2) == 0) {
      expired_.store(true, std::memory_order_release);
      shut_locked(SHUT_RDWR);
    }
  }
  // serve()'s stop, under st_.mu: reads end, sends finish (or time out).
  void stop() noexcept {
    if ((shut_ & 1) == 0) shut_locked(SHUT_RD);
  }
  connection* next() const noexcept { return next_; }

 private:
  using clock = std::chrono::steady_clock;

  // Writes a whole answer into out_ (or, too large for it, into big_).
  void put_answer(const answer& a, bool head_only, int minor, bool keep_alive);
  void put_error(int status) { put_answer({status, "text/plain", error_body(status), {}}, false, 1, false); }
  // Answers one parsed request; false if the connection must close after it.
  bool handle(const request& req, const char* base);
  void count(int status) noexcept {
    ++counts_[static_cast<std::size_t>(http_stats::status_index(status))];
    counted_ = true;
  }
  void publish_counts() noexcept {
    if (!counted_) return;
    st_.stats.add_responses(counts_);
    counts_ = {};
    counted_ = false;
  }
  cowq::task<bool> send_all(const char* p, std::size_t n);
  cowq::task<bool> flush();
  cowq::task<void> close(close_mode how);
  // Under st_.mu. The descriptor is still this connection's: it leaves the
  // registry (leave_registry(), under st_.mu) before closing it.
  void shut_locked(int how) noexcept {
    ::shutdown(s_.native_handle(), how);
    shut_ |= how == SHUT_RD ? 1 : 3;
  }
  void leave_registry() noexcept {
    std::lock_guard g(st_.mu);
    if (!std::exchange(registered_, false)) return;
    if (prev_ != nullptr) prev_->next_ = next_;
    else st_.head = next_;
    if (next_ != nullptr) next_->prev_ = prev_;
  }
  bool expired() const noexcept { return expired_.load(std::memory_order_acquire); }

  server_state& st_;
  const http_options& opts_;
  stream s_;
  std::size_t rcap_;
  std::unique_ptr<char[]> rbuf_;
  std::size_t len_ = 0;  // bytes in rbuf_
  std::size_t pos_ = 0;  // start of the first request not yet answered
  std::uint64_t discard_ = 0;  // body bytes still to read and drop
  out_buffer out_;
  std::string big_;      // an answer larger than out_, sent after it
  request_parser parser_;
  std::int64_t head_deadline_ = 0;  // coarse ms
  bool head_started_ = false;
  std::array<std::uint32_t, http_stats::statuses.size()> counts_{};
  bool counted_ = false;

  // Deadlines (coarse ms) of the read and the send in flight, kNoDeadline
  // when there is none. Relaxed: a sweeper that reads a stale value looks
  // again a period later, or expires a read whose deadline had just moved
  // on; then a request that came as the connection's idle time ran out is
  // answered and the connection closes after it, as idle.
  std::atomic<std::int64_t> recv_deadline_ms_{kNoDeadline};
  std::atomic<std::int64_t> send_deadline_ms_{kNoDeadline};
  // Set by the sweeper before it shuts the socket for a deadline.
  std::atomic<bool> expired_{false};
  int shut_ = 0;                // M: st_.mu; 1: read side shut, 3: both
  bool registered_ = false;     // M: st_.mu
  connection* prev_ = nullptr;  // M: st_.mu
  connection* next_ = nullptr;  // M: st_.mu
};

void connection::put_answer(const answer& a, bool head_only, int minor, bool keep_alive) {
  count(a.status);
  // The plaintext answer (its body is kHello itself, not a copy) in its
  // common form is prebuilt with the date: one copy.
  if (a.status == 200 && a.body.data() == kHello.data() && !head_only && minor == 1 && keep_alive) {
    const date_cache& d = current_date();
    out_.put({d.hello, d.hello_len});
    return;
  }
  const std::size_t need = head_size(a) + (head_only ? 0 : a.body.size());
  if (need <= out_.room()) {
    write_answer(out_, a, head_only, minor, keep_alive);
    return;
  }
  // Only /stats gets here (out_ is flushed before it has less room than
  // any other answer needs): it goes out on its own, right after out_.
  out_buffer tmp(need);
  write_answer(tmp, a, head_only, minor, keep_alive);
  big_.assign(tmp.data(), tmp.size());
}

bool connection::handle(const request& req, const char* base) {
  if (req.method != method::get && req.method != method::head) {
    put_answer({405, "text/plain", error_body(405), "Allow: GET, HEAD\r\n"}, req.method == method::head,
               req.minor_version, false);
    return false;
  }
  const bool head_only = req.method == method::head;
  const std::string_view path = req.path(base);
  if (path == "/") {
    put_answer({200, "text/plain", kHello, {}}, head_only, req.minor_version, req.keep_alive);
    return req.keep_alive;
  }
  if (path == "/block") {
    const int ms = parse_ms(req.query(base), opts_.max_block_ms);
    if (ms < 0) {
      put_answer({400, "text/plain", "/block wants ?ms=N, 0 <= N <= max_block_ms\n", {}}, head_only,
                 req.minor_version, false);
      return false;
    }
    st_.stats.blocking_now.fetch_add(1, std::memory_order_relaxed);
    sleep_blocking(ms);
    st_.stats.blocking_now.fetch_sub(1, std::memory_order_relaxed);
    char body[48];
    const int n = std::snprintf(body, sizeof body, "blocked %d ms\n", ms);
    put_answer({200, "text/plain", {body, static_cast<std::size_t>(n)}, {}}, head_only, req.minor_version,
               req.keep_alive);
    return req.keep_alive;
  }
  if (path == "/stats") {
    const std::string body = st_.stats.to_text() + "\n" + cowq::to_string(st_.rt.stats());
    put_answer({200, "text/plain", body, {}}, head_only, req.minor_version, req.keep_alive);
    return req.keep_alive;
  }
  if (path == "*") {  // only OPTIONS may ask for "*", and it got its 405 above
    put_answer({400, "text/plain", error_body(400), {}}, head_only, req.minor_version, false);
    return false;
  }
  put_answer({404, "text/plain", error_body(404), {}}, head_only, req.minor_version, req.keep_alive);
  return req.keep_alive;
}

cowq::task<bool> connection::send_all(const char* p, std::size_t n) {
  send_deadline_ms_.store(coarse_now_ms() + to_ms(opts_.send_timeout), std::memory_order_relaxed);
  bool ok = true;
  while (n > 0) {
    // At the server's stop, answers already made still go out (or time out).
    const cowq::io_result r = co_await s_.send(cowq::net::as_bytes({p, n}));
    if (!r || r.value == 0) {
      if (expired()) st_.stats.timed_out.fetch_add(1, std::memory_order_relaxed);
      ok = false;
      break;
    }
    p += r.value;
    n -= r.value;
  }
  send_deadline_ms_.store(kNoDeadline, std::memory_order_relaxed);
  co_return ok;
}

cowq::task<bool> connection::flush() {
  publish_counts();
  bool ok = true;
  if (!out_.empty()) ok = co_await send_all(out_.data(), out_.size());
  out_.clear();
  if (!big_.empty()) {
    if (ok) ok = co_await send_all(big_.data(), big_.size());
    big_ = std::string();
  }
  co_return ok;
}

cowq::task<void> connection::close(close_mode how) {
  publish_counts();
  leave_registry();
  if (how == close_mode::graceful) {
    // Our answer is queued ahead of the FIN; what the client still sends
    // is read and dropped until it closes too or the linger time is up,
    // so that close() finds nothing unread and sends no reset.
    co_await s_.shutdown(SHUT_WR);
    const clock::time_point until = clock::now() + opts_.linger_timeout;
    for (;;) {
      const auto left = until - clock::now();
      if (left <= clock::duration::zero()) break;
      cowq::io_result r = co_await s_.recv({reinterpret_cast<std::byte*>(rbuf_.get()), rcap_},
                                           cowq::io_options(left, st_.stop));
      if (!r || r.value == 0) break;
    }
  }
  co_await s_.close();
}

cowq::task<void> connection::run() {
  s_.set_nodelay(true);
  close_mode how = close_mode::quiet;
  for (;;) {
    // Answer everything complete in the buffer, in order.
    bool closing = false;
    while (pos_ < len_ && !closing) {
      const char* base = rbuf_.get() + pos_;
      const parse_result r = parser_.parse(base, len_ - pos_);
      if (r.status == parse_status::incomplete) break;
      if (r.status == parse_status::error) {
        put_error(r.error_status);
        closing = true;
        break;
      }
      const request req = parser_.get();
      parser_.reset();
      head_started_ = false;
      pos_ += r.head_bytes;
      if (req.content_length > opts_.max_body_bytes) {
        put_answer({413, "text/plain", error_body(413), {}}, req.method == method::head, req.minor_version,
                   false);
        closing = true;
        break;
      }
      // Answered before its body is in: the answer depends on the head
      // alone, and the body's bytes may overwrite the head's below.
      if (out_.room() < kMaxSmallAnswer && !co_await flush()) co_return co_await close(close_mode::abort);
      closing = !handle(req, base);
      if (!big_.empty() && !co_await flush()) co_return co_await close(close_mode::abort);
      const std::uint64_t here = std::min<std::uint64_t>(len_ - pos_, req.content_length);
      pos_ += here;
      discard_ = req.content_length - here;
      if (discard_ > 0) break;
    }
    if (!co_await flush()) co_return co_await close(close_mode::abort);
    if (closing) co_return co_await close(close_mode::graceful);

    // Make room: the unanswered rest of the buffer moves to its start
    // (the parser keeps offsets, not pointers).
    if (pos_ == len_) {
      pos_ = len_ = 0;
    } else if (pos_ > 0) {
      std::memmove(rbuf_.get(), rbuf_.get() + pos_, len_ - pos_);
      len_ -= pos_;
      pos_ = 0;
    }

    const std::int64_t now = coarse_now_ms();
    std::int64_t deadline = now + to_ms(opts_.idle_timeout);
    if (discard_ > 0) {
      deadline = now + to_ms(opts_.send_timeout);
    } else if (len_ > 0) {
      // Part of a head: its deadline runs from the read that brought its
      // first bytes (about now, when it is first seen here).
      if (!head_started_) {
        head_started_ = true;
        head_deadline_ = now + to_ms(opts_.header_timeout);
      }
      deadline = head_deadline_;
    }
    recv_deadline_ms_.store(deadline, std::memory_order_relaxed);
    const cowq::io_result r =
        co_await s_.recv({reinterpret_cast<std::byte*>(rbuf_.get()) + len_, rcap_ - len_});
    recv_deadline_ms_.store(kNoDeadline, std::memory_order_relaxed);
    if (!r || r.value == 0) {
      if (expired()) {
        // Past its deadline: the sweeper shut the read side.
        if (discard_ == 0 && len_ == 0) {
          st_.stats.idle_closed.fetch_add(1, std::memory_order_relaxed);
          how = close_mode::quiet;
        } else if (discard_ == 0) {
          st_.stats.timed_out.fetch_add(1, std::memory_order_relaxed);
          put_error(408);
          if (!co_await flush()) co_return co_await close(close_mode::abort);
          how = close_mode::graceful;
        } else {
          st_.stats.timed_out.fetch_add(1, std::memory_order_relaxed);
          how = close_mode::abort;
        }
      } else {
        // The client closed its side, or reset, or the server stops:
        // nothing to say.
        how = r ? close_mode::quiet : close_mode::abort;
      }
      break;
    }
    if (discard_ > 0) {
      // Buffer was empty: this read holds body bytes, then maybe the next request.
      const std::uint64_t drop = std::min<std::uint64_t>(r.value, discard_);
      discard_ -= drop;
      pos_ = static_cast<std::size_t>(drop);
    }
    len_ += r.value;
  }
  co_await close(how);
}

cowq::task<void> sweep(server_state& st) {
  for (;;) {
    // After the stop the sweeper goes on, more often, while sends finish
    // or time out; the stopped token would end every sleep at once.
    if (!st.stop.stop_requested()) co_await cowq::sleep_for(st.sweep_period, st.stop);
    else co_await cowq::sleep_for(std::min(st.sweep_period, std::chrono::milliseconds(10)));
    std::lock_guard g(st.mu);
    // With no connection left the sweeper ends, so an idle server does not
    // wake; the next connection starts another.
    if (st.head == nullptr) {
      st.sweeper_running = false;
      break;
    }
    const std::int64_t now = coarse_now_ms();
    for (connection* c = st.head; c != nullptr; c = c->next()) c->expire_if_due(now);
  }
  st.live.fetch_sub(1, std::memory_order_release);
}

cowq::task<void> run_connection(server_state& st, stream s, int cpu) {
  try {
    if (cpu >= 0 && cpu != ::sched_getcpu()) co_await cowq::schedule_on(st.rt.system_wq(), cpu);
    connection c(st, std::move(s));
    co_await c.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "http: connection: %s\n", e.what());
  }
  st.stats.connections_open.fetch_sub(1, std::memory_order_relaxed);
  // Last: once live is 0, serve() may complete and st go with its frame.
  st.live.fetch_sub(1, std::memory_order_release);
}

}  // namespace

std::uint64_t http_stats::responses(int status) const noexcept {
  const auto i = static_cast<std::size_t>(status_index(status));
  std::uint64_t n = 0;
  for (const shard& s : shards_) n += s.by_status[i].load(std::memory_order_relaxed);
  return n;
}

std::uint64_t http_stats::responses() const noexcept {
  std::uint64_t n = 0;
  for (const shard& s : shards_)
    for (const auto& c : s.by_status) n += c.load(std::memory_order_relaxed);
  return n;
}

void http_stats::add_responses(const std::array<std::uint32_t, statuses.size()>& counts) noexcept {
  const int cpu = ::sched_getcpu();
  shard& s = shards_[static_cast<std::size_t>(cpu < 0 ? 0 : cpu) % kShards];
  for (std::size_t i = 0; i < counts.size(); ++i)
    if (counts[i] != 0) s.by_status[i].fetch_add(counts[i], std::memory_order_relaxed);
}

std::string http_stats::to_text() const {
  std::string t;
  auto line = [&](std::string_view name, long long v) {
    t += name;
    t += ' ';
    t += std::to_string(v);
    t += '\n';
  };
  line("responses", static_cast<long long>(responses()));
  for (int s : statuses) {
    const std::uint64_t n = responses(s);
    if (n != 0) line("responses_" + std::to_string(s), static_cast<long long>(n));
  }
  line("connections_accepted", static_cast<long long>(connections_accepted.load()));
  line("connections_open", connections_open.load());
  line("idle_closed", static_cast<long long>(idle_closed.load()));
  line("timed_out", static_cast<long long>(timed_out.load()));
  line("blocking_now", blocking_now.load());
  line("accept_errors", static_cast<long long>(accept_errors.load()));
  return t;
}

cowq::task<void> serve(cowq::runtime& rt, cowq::net::tcp_listener& listener, const http_options& opts,
                       http_stats& stats, std::stop_token stop) {
  server_state st{rt, opts, stats, stop};
  const std::vector<int> cpus(rt.cpus().begin(), rt.cpus().end());
  std::size_t next_cpu = 0;
  while (!stop.stop_requested()) {
    auto c = co_await listener.accept(stop);
    if (!c) {
      if (c.error == std::errc::operation_canceled) break;
      // EMFILE and friends: the listener stays usable; back off, go on.
      stats.accept_errors.fetch_add(1, std::memory_order_relaxed);
      std::fprintf(stderr, "http: accept: %s\n", c.error.message().c_str());
      co_await cowq::sleep_for(10ms, stop);
      continue;
    }
    stats.connections_accepted.fetch_add(1, std::memory_order_relaxed);
    stats.connections_open.fetch_add(1, std::memory_order_relaxed);
    const int cpu = opts.spread_connections && cpus.size() > 1 ? cpus[next_cpu++ % cpus.size()] : -1;
    st.live.fetch_add(1, std::memory_order_relaxed);
    rt.system_wq().spawn(run_connection(st, std::move(c.value), cpu));
  }
  {
    // Ends every connection's read (sends finish or time out); one still
    // starting sees stopping when it registers.
    std::lock_guard g(st.mu);
    st.stopping = true;
    for (connection* c = st.head; c != nullptr; c = c->next()) c->stop();
  }
  // cowq has no awaitable latch (yet): poll, which only ever happens here,
  // at shutdown.
  while (st.live.load(std::memory_order_acquire) != 0) co_await cowq::sleep_for(2ms);
}

}  // namespace http
