// Sockets on io_uring: TCP, UDP and Unix stream, with Asio's address types.
//
// Including this header pulls in Asio's endpoint and address classes (and
// nothing else of Asio's): they are the vocabulary types for addresses.
#pragma once

#include <cowq/io.hpp>
#include <cowq/task.hpp>

#include <asio/ip/address.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/ip/udp.hpp>
#include <asio/local/stream_protocol.hpp>

#include <cstddef>
#include <span>
#include <string>
#include <sys/socket.h>
#include <sys/uio.h>
#include <utility>
#include <vector>

namespace cowq::detail {
struct accept_state;
}

namespace cowq::net {

using tcp_endpoint = asio::ip::tcp::endpoint;
using udp_endpoint = asio::ip::udp::endpoint;
using unix_endpoint = asio::local::stream_protocol::endpoint;

// A value or the error that prevented it.
template <typename T>
struct io_value {
  std::error_code error;
  T value{};
  explicit operator bool() const noexcept { return !error; }
};

// Owns a file descriptor; closes it (synchronously) on destruction.
class fd_handle {
 public:
  fd_handle() noexcept = default;
  explicit fd_handle(int fd) noexcept : fd_(fd) {}
  fd_handle(fd_handle&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  fd_handle& operator=(fd_handle&& o) noexcept;
  ~fd_handle();
  int get() const noexcept { return fd_; }
  int release() noexcept { return std::exchange(fd_, -1); }
  bool valid() const noexcept { return fd_ >= 0; }
  void reset() noexcept;

 private:
  int fd_ = -1;
};

// A connected stream socket (TCP or Unix).
//
// Thread safety: one coroutine may receive while another sends; two
// concurrent receives (or sends) on one stream interleave unpredictably,
// as with the system calls.
class stream {
 public:
  stream() noexcept = default;
  explicit stream(fd_handle fd) noexcept : fd_(std::move(fd)) {}

  io_awaitable recv(std::span<std::byte> buf, io_options opts = {}) noexcept;
  io_awaitable send(std::span<const std::byte> buf, io_options opts = {}) noexcept;
  // Sends everything, resuming short sends; value is the bytes sent, which
  // is buf.size() unless an error (then error says which) interrupted it.
  task<io_result> send_all(std::span<const std::byte> buf, io_options opts = {});
  io_awaitable readv(std::span<const iovec> iov, io_options opts = {}) noexcept;
  io_awaitable writev(std::span<const iovec> iov, io_options opts = {}) noexcept;
  // SHUT_RD, SHUT_WR or SHUT_RDWR.
  io_awaitable shutdown(int how = SHUT_WR, io_options opts = {}) noexcept;
  // Closes through the ring; the stream no longer owns the descriptor.
  io_awaitable close() noexcept;

  int native_handle() const noexcept { return fd_.get(); }
  bool is_open() const noexcept { return fd_.valid(); }
  // Disables Nagle's algorithm (TCP only).
  std::error_code set_nodelay(bool on) noexcept;

 private:
  fd_handle fd_;
};

struct listen_options {
  int backlog = SOMAXCONN;
  bool reuse_address = true;  // SO_REUSEADDR: rebind while old connections linger
  bool reuse_port = false;    // SO_REUSEPORT: several listeners share the port
};

// Awaiting accept(): a connected stream, or the error (EMFILE under fd
// exhaustion: the listener stays usable and a later accept succeeds).
class accept_awaitable : public io_awaitable {
 public:
  accept_awaitable(int fd, io_options opts, detail::accept_state* multishot = nullptr) noexcept;
  accept_awaitable(const accept_awaitable&) = delete;
  io_value<stream> await_resume() noexcept;
  bool await_suspend(std::coroutine_handle<> h);
  bool await_ready() noexcept { return io_awaitable::await_ready(); }

 private:
  sockaddr_storage peer_{};
  socklen_t peer_len_ = sizeof(sockaddr_storage);
  detail::accept_state* multishot_;
};

class tcp_listener {
 public:
  // socket, bind and listen (plain system calls: none of them waits).
  // Throws std::system_error naming the endpoint on failure.
  static tcp_listener bind(const tcp_endpoint& ep, listen_options opts = {});
  tcp_listener() noexcept = default;
  tcp_listener(tcp_listener&&) noexcept;
  tcp_listener& operator=(tcp_listener&&) noexcept;
  ~tcp_listener();

  // Where the kernel has multishot accept, the listener keeps one request
  // armed on the pool of its first accept, and accepts there take
  // connections from it; elsewhere each accept is a request of its own.
  accept_awaitable accept(io_options opts = {}) noexcept {
    return {fd_.get(), std::move(opts), multishot_};
  }
  tcp_endpoint local_endpoint() const;
  int native_handle() const noexcept { return fd_.get(); }
  void close() noexcept;

 private:
  fd_handle fd_;
  detail::accept_state* multishot_ = nullptr;  // owned; freed by its last completion
};

// Connects to ep through the ring.
task<io_value<stream>> connect(tcp_endpoint ep, io_options opts = {});

class unix_listener {
 public:
  // Binds a Unix stream socket at path (an existing socket file there is
  // replaced only if nothing listens on it).
  static unix_listener bind(const std::string& path, listen_options opts = {});
  accept_awaitable accept(io_options opts = {}) noexcept { return {fd_.get(), std::move(opts)}; }
  int native_handle() const noexcept { return fd_.get(); }

 private:
  fd_handle fd_;
};

task<io_value<stream>> connect_unix(std::string path, io_options opts = {});

class udp_socket;

// send_to / receive_from keep their msghdr in the awaitable.
class udp_send_awaitable : public io_awaitable {
 public:
  udp_send_awaitable(int fd, std::span<const std::byte> buf, const udp_endpoint& to,
                     io_options opts) noexcept;
  udp_send_awaitable(const udp_send_awaitable&) = delete;

 private:
  iovec iov_{};
  msghdr msg_{};
  udp_endpoint to_;
};

class udp_recv_awaitable : public io_awaitable {
 public:
  udp_recv_awaitable(int fd, std::span<std::byte> buf, io_options opts) noexcept;
  udp_recv_awaitable(const udp_recv_awaitable&) = delete;
  bool await_suspend(std::coroutine_handle<> h) { return io_awaitable::await_suspend(h); }
  bool await_ready() noexcept { return io_awaitable::await_ready(); }
  // value: bytes received and the sender.
  io_value<std::pair<std::size_t, udp_endpoint>> await_resume() noexcept;

 private:
  iovec iov_{};
  msghdr msg_{};
  sockaddr_storage from_{};
};

class udp_socket {
 public:
  static udp_socket bind(const udp_endpoint& ep);
  udp_send_awaitable send_to(std::span<const std::byte> buf, const udp_endpoint& to,
                             io_options opts = {}) noexcept {
    return {fd_.get(), buf, to, std::move(opts)};
  }
  udp_recv_awaitable receive_from(std::span<std::byte> buf, io_options opts = {}) noexcept {
    return {fd_.get(), buf, std::move(opts)};
  }
  udp_endpoint local_endpoint() const;
  int native_handle() const noexcept { return fd_.get(); }

 private:
  fd_handle fd_;
};

// Resolves host and service (getaddrinfo through Asio's resolver) on the
// runtime's resolver thread, so no worker ever blocks in it.
task<io_value<std::vector<tcp_endpoint>>> resolve(std::string host, std::string service);

// Views of strings and vectors as byte spans.
inline std::span<const std::byte> as_bytes(std::string_view s) noexcept {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

}  // namespace cowq::net
