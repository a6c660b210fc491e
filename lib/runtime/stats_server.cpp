// The stats socket's thread; see stats_server.hpp and docs/monitoring.md.
#include "stats_server.hpp"

#include "../log/log.hpp"
#include "runtime_impl.hpp"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <system_error>
#include <vector>

namespace cowq::detail {

namespace {

// Connections served at once; one more is told so and closed, so a crowd of
// idle connections costs a bounded number of descriptors.
constexpr std::size_t max_clients = 64;
// Requests are short words: a line longer than this, or this much without a
// newline, is not one. The client gets an error line and is closed.
constexpr std::size_t max_request_bytes = 1024;
// A client that takes no byte of its pending answer for this long is
// dropped: one that never reads, or a monitor stopped with ^Z.
constexpr auto write_stall_timeout = std::chrono::seconds(10);
// After accept() fails for want of descriptors or memory the listener stays
// readable; wait this long before trying again rather than spin on it.
constexpr auto accept_retry_delay = std::chrono::milliseconds(500);
constexpr int listen_backlog = 16;

using steady = std::chrono::steady_clock;

std::string errno_text(int e) { return std::system_category().message(e); }

struct unix_address {
  sockaddr_un sun{};
  socklen_t len = 0;
};

// Fills a with path (or, for "@name", the abstract name); an empty result
// says why it cannot be a socket address.
std::string make_address(const std::string& path, unix_address& a) {
  a.sun.sun_family = AF_UNIX;
  constexpr std::size_t room = sizeof(a.sun.sun_path);
  if (path[0] == '@') {
    const std::string_view name = std::string_view(path).substr(1);
    if (name.empty()) return "an abstract socket name after '@' is needed";
    if (name.size() > room - 1)
      return "the abstract name is longer than " + std::to_string(room - 1) + " bytes";
    // Abstract names are the bytes after a NUL, up to the address length.
    std::memcpy(a.sun.sun_path + 1, name.data(), name.size());
    a.len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
    return {};
  }
  if (path.find('\0') != std::string::npos) return "the path holds a NUL byte";
  if (path.size() > room - 1)
    return "the path is longer than " + std::to_string(room - 1) + " bytes";
  std::memcpy(a.sun.sun_path, path.data(), path.size());
  a.len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
  return {};
}

// bind() found path taken. Removes it if it is a socket nobody listens on
// (a dead process's leftover) and returns empty; otherwise says why not.
std::string remove_if_stale(const std::string& path, const unix_address& a) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0)
    return errno == ENOENT ? std::string() : "lstat: " + errno_text(errno);
  if (!S_ISSOCK(st.st_mode)) return "the path exists and is not a socket; it is left alone";
  const int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (probe < 0) return "socket: " + errno_text(errno);
  const int r = ::connect(probe, reinterpret_cast<const sockaddr*>(&a.sun), a.len);
  const int e = errno;
  ::close(probe);
  // EAGAIN: a listener whose backlog is full is still a listener.
  if (r == 0 || e == EAGAIN || e == EINPROGRESS) return "another socket listens on it";
  if (e != ECONNREFUSED) return "cannot tell whether it is in use: connect: " + errno_text(e);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT)
    return "cannot remove the stale socket file: " + errno_text(errno);
  log().info("stats socket {}: replaced a stale socket file", path);
  return {};
}

std::string error_line(std::string_view why) {
  std::string out = "{\"error\":";
  append_json_string(out, why);
  out += "}\n";
  return out;
}

// Length of the valid UTF-8 sequence at s[i] (a byte >= 0x80), 0 if none.
std::size_t utf8_length(std::string_view s, std::size_t i) {
  auto at = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = at(i);
  std::size_t n = 0;
  unsigned char lo = 0x80, hi = 0xbf;  // range of the second byte
  if (c >= 0xc2 && c <= 0xdf) {
    n = 2;
  } else if (c >= 0xe0 && c <= 0xef) {
    n = 3;
    if (c == 0xe0) lo = 0xa0;   // no overlong forms
    if (c == 0xed) hi = 0x9f;   // no UTF-16 surrogates
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4;
    if (c == 0xf0) lo = 0x90;
    if (c == 0xf4) hi = 0x8f;   // nothing above U+10FFFF
  } else {
    return 0;
  }
  if (i + n > s.size() || at(i + 1) < lo || at(i + 1) > hi) return 0;
  for (std::size_t k = 2; k < n; ++k)
    if (at(i + k) < 0x80 || at(i + k) > 0xbf) return 0;
  return n;
}

}  // namespace

void append_json_string(std::string& out, std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  out += '"';
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      const std::size_t n = utf8_length(s, i);
      if (n == 0) {
        out += "\\ufffd";
        ++i;
      } else {
        out.append(s.substr(i, n));
        i += n;
      }
      continue;
    }
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out += "\\u00";
          out += hex[c >> 4];
          out += hex[c & 0xf];
        } else {
          out += static_cast<char>(c);
        }
    }
    ++i;
  }
  out += '"';
}

struct stats_server::client {
  int fd = -1;
  std::string in;        // received, not yet taken as requests
  std::string out;       // the answer being sent
  std::size_t sent = 0;  // bytes of out already sent
  bool eof = false;      // the client shut down its side: answer what is left
  bool closing = false;  // close once out is sent
  steady::time_point last_progress{};
  bool pending() const noexcept { return sent < out.size(); }
};

std::unique_ptr<stats_server> stats_server::start(runtime_impl& rt) {
  std::string path = rt.opts_.stats_socket;
  if (path.empty())
    if (const char* env = std::getenv("COWQ_STATS_SOCKET")) path = env;
  if (path.empty()) return nullptr;

  const bool abstract = path[0] == '@';
  int fd = -1;
  bool bound = false;
  auto fail = [&](const std::string& why) -> std::unique_ptr<stats_server> {
    if (bound) ::unlink(path.c_str());
    if (fd >= 0) ::close(fd);
    log().warn("stats socket {}: {}; the runtime's stats are not published", path, why);
    return nullptr;
  };

  unix_address addr;
  if (auto why = make_address(path, addr); !why.empty()) return fail(why);
  // Absolute, so that shutdown removes the right file whatever the working
  // directory has become by then.
  std::string file_path;
  if (!abstract) {
    file_path = path;
    if (path[0] != '/') {
      char cwd[PATH_MAX];
      if (::getcwd(cwd, sizeof cwd) == nullptr) return fail("getcwd: " + errno_text(errno));
      file_path = std::string(cwd) + "/" + path;
    }
  }

  fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail("socket: " + errno_text(errno));
  // bind() gives the file the socket inode's mode less the umask: set
  // before, the file never exists with more than owner read/write.
  if (!abstract && ::fchmod(fd, 0600) != 0) return fail("fchmod: " + errno_text(errno));
  auto do_bind = [&] {
    return ::bind(fd, reinterpret_cast<const sockaddr*>(&addr.sun), addr.len) == 0;
  };
  if (!do_bind()) {
    const int e = errno;
    if (e != EADDRINUSE) return fail("bind: " + errno_text(e));
    if (abstract) return fail("another socket has this abstract name");
    if (auto why = remove_if_stale(path, addr); !why.empty()) return fail(why);
    if (!do_bind()) return fail("bind: " + errno_text(errno));
  }
  bound = !abstract;
  struct stat st {};
  if (!abstract && ::lstat(path.c_str(), &st) != 0) return fail("lstat: " + errno_text(errno));
  if (::listen(fd, listen_backlog) != 0) return fail("listen: " + errno_text(errno));

  std::unique_ptr<stats_server> s(new stats_server(rt, path, std::move(file_path), fd));
  fd = -1;  // s owns it now
  bound = false;
  s->file_dev_ = st.st_dev;
  s->file_ino_ = st.st_ino;
  s->wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (s->wake_fd_ < 0) {
    const int e = errno;
    s->stop();
    return fail("eventfd: " + errno_text(e));
  }
  // Signals are the application's: it may sigwait() for them in one thread
  // or expect its handlers on its own; this thread takes none. It inherits
  // the mask, so block them around its creation rather than inside it.
  sigset_t all, old;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_BLOCK, &all, &old);
  try {
    s->thread_ = std::thread(&stats_server::main, s.get());
  } catch (const std::system_error& e) {
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    s->stop();
    return fail(std::string("cannot create its thread: ") + e.what());
  }
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  // Named here rather than by the thread itself, so that it has its name
  // by the time the runtime is constructed.
  ::pthread_setname_np(s->thread_.native_handle(),
                       (rt.opts_.name + "/stats").substr(0, 15).c_str());
  log().info("stats published on {}", path);
  return s;
}

stats_server::stats_server(runtime_impl& rt, std::string shown_path, std::string file_path,
                           int listen_fd)
    : rt_(rt),
      shown_path_(std::move(shown_path)),
      file_path_(std::move(file_path)),
      listen_fd_(listen_fd) {}

stats_server::~stats_server() { stop(); }

void stats_server::stop() {
  if (thread_.joinable()) {
    const std::uint64_t one = 1;
    // An eventfd write fails only if its counter would overflow, and then
    // the thread is already woken.
    [[maybe_unused]] auto r = ::write(wake_fd_, &one, sizeof one);
    thread_.join();
  }
  // The thread closes the listener as it ends; it never ran if still open.
  if (listen_fd_ >= 0) {
    ::close(listen_fd_);
    listen_fd_ = -1;
  }
  if (wake_fd_ >= 0) {
    ::close(wake_fd_);
    wake_fd_ = -1;
  }
  remove_socket_file();
}

void stats_server::remove_socket_file() const {
  if (file_path_.empty()) return;
  struct stat st {};
  // Whoever replaced our file (a newer runtime that found it stale, say)
  // keeps theirs.
  if (::lstat(file_path_.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode) ||
      st.st_dev != file_dev_ || st.st_ino != file_ino_)
    return;
  if (::unlink(file_path_.c_str()) != 0 && errno != ENOENT)
    log().warn("stats socket {}: cannot remove it: {}", shown_path_, errno_text(errno));
}

std::string stats_server::snapshot() const {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  const runtime_stats s = rt_.stats();
  std::string out = "{\"version\":1,\"name\":";
  append_json_string(out, rt_.opts_.name);
  out += ",\"pid\":" + std::to_string(::getpid());
  out += ",\"timestamp_ns\":" +
         std::to_string(static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec);
  out += ",\"cpus\":[";
  for (std::size_t i = 0; i < rt_.topo_.cpus.size(); ++i) {
    if (i > 0) out += ',';
    out += std::to_string(rt_.topo_.cpus[i]);
  }
  out += "],\"numa_nodes\":" + std::to_string(rt_.topo_.nodes.size()) + ',';
  // The members of to_json's object follow, after its opening brace.
  const std::string body = to_json(s);
  out.append(body, 1);
  out += '\n';
  return out;
}

void stats_server::answer(client& c, std::string_view request) const {
  if (!request.empty() && request.back() == '\r') request.remove_suffix(1);
  if (request == "stats")
    c.out = snapshot();
  else if (!request.empty())
    c.out = error_line("unknown request; the only one is \"stats\"");
}

// Sends what is pending and answers queued requests, one at a time: the next
// request is taken only once the previous answer is wholly sent, so a client
// holds at most one answer here. Returns false when the client is done.
bool stats_server::serve(client& c) const {
  for (;;) {
    if (c.pending()) {
      const ssize_t n = ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent,
                               MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno == EAGAIN || errno == EWOULDBLOCK;
      }
      c.sent += static_cast<std::size_t>(n);
      c.last_progress = steady::now();
      if (c.pending()) return true;
      c.out.clear();
      c.sent = 0;
    }
    if (c.closing) return false;
    std::size_t nl = c.in.find('\n');
    if (nl == std::string::npos) {
      if (c.in.size() <= max_request_bytes) {
        if (!c.eof) return true;
        if (c.in.empty()) return false;
      }
      // The last request may lack its newline.
      nl = c.in.size();
    }
    if (nl > max_request_bytes) {
      c.out = error_line("request too long");
      c.closing = true;
      c.in.clear();
    } else {
      const std::string request = c.in.substr(0, nl);
      c.in.erase(0, nl + 1);
      answer(c, request);
    }
    c.last_progress = steady::now();
  }
}

void stats_server::main() {
  std::vector<client> clients;
  std::vector<pollfd> fds;
  bool accept_paused = false;
  bool accept_warned = false;
  steady::time_point accept_resume{};
  for (;;) {
    auto now = steady::now();
    if (accept_paused && now >= accept_resume) accept_paused = false;
    fds.clear();
    fds.push_back({wake_fd_, POLLIN, 0});
    // poll() skips a negative descriptor.
    fds.push_back({accept_paused ? -1 : listen_fd_, POLLIN, 0});
    auto deadline = steady::time_point::max();
    if (accept_paused) deadline = accept_resume;
    for (auto& c : clients) {
      // A client is either being answered or being read, never both.
      fds.push_back({c.fd, static_cast<short>(c.pending() ? POLLOUT : POLLIN), 0});
      if (c.pending()) deadline = std::min(deadline, c.last_progress + write_stall_timeout);
    }
    int timeout_ms = -1;
    if (deadline != steady::time_point::max()) {
      // Rounded up, so the wake-up is never early and never spins.
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - now).count();
      timeout_ms = static_cast<int>(std::clamp<decltype(left)>(left, 0, 60'000));
    }
    const int n = ::poll(fds.data(), fds.size(), timeout_ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      log().error("stats socket {}: poll: {}; no longer published", shown_path_,
                  errno_text(errno));
      break;
    }
    if (fds[0].revents != 0) break;  // stop()

    now = steady::now();
    for (std::size_t i = 0; i < clients.size(); ++i) {
      client& c = clients[i];
      const short revents = fds[i + 2].revents;
      bool keep = true;
      if (revents != 0) {
        if (!c.pending()) {
          char buf[4096];
          const ssize_t r = ::recv(c.fd, buf, sizeof buf, MSG_DONTWAIT);
          if (r > 0)
            c.in.append(buf, static_cast<std::size_t>(r));
          else if (r == 0)
            c.eof = true;
          else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            keep = false;
        }
        // Also sends, on POLLOUT; a hung-up peer shows up as a send error.
        keep = keep && serve(c);
      } else if (c.pending() && now - c.last_progress >= write_stall_timeout) {
        log().debug("stats socket {}: dropped a client that reads nothing", shown_path_);
        keep = false;
      }
      if (!keep) {
        ::close(c.fd);
        c.fd = -1;
      }
    }
    std::erase_if(clients, [](const client& c) { return c.fd < 0; });

    if (fds[1].revents == 0) continue;
    for (;;) {
      const int cfd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (cfd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        // EMFILE, ENFILE, ENOBUFS, ENOMEM: said once until an accept works.
        if (!accept_warned)
          log().warn("stats socket {}: accept: {}; retrying", shown_path_, errno_text(errno));
        accept_warned = true;
        accept_paused = true;
        accept_resume = steady::now() + accept_retry_delay;
        break;
      }
      accept_warned = false;
      if (clients.size() >= max_clients) {
        const std::string busy = error_line("too many clients");
        [[maybe_unused]] auto r = ::send(cfd, busy.data(), busy.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        ::close(cfd);
        continue;
      }
      client c;
      c.fd = cfd;
      c.last_progress = now;
      clients.push_back(std::move(c));
    }
  }
  for (auto& c : clients) ::close(c.fd);
  ::close(listen_fd_);
  listen_fd_ = -1;
}

}  // namespace cowq::detail
