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
#include <cstdint>
#include <span>
#include <string>
#include <sys/socket.h>
#include <sys/uio.h>
#include <utility>
#include <vector>

namespace cowq::detail {
struct accept_state;
struct recv_state;
struct buffer_ring;
struct receiver_access;
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
  stream(stream&& o) noexcept;
  stream& operator=(stream&& o) noexcept;
  ~stream();

  io_awaitable recv(std::span<std::byte> buf, io_options opts = {}) noexcept;
  io_awaitable send(std::span<const std::byte> buf, io_options opts = {}) noexcept;
  // Sends everything, resuming short sends; value is the bytes sent, which
  // is buf.size() unless an error (then error says which) interrupted it.
  task<io_result> send_all(std::span<const std::byte> buf, io_options opts = {});
  io_awaitable readv(std::span<const iovec> iov, io_options opts = {}) noexcept;
  io_awaitable writev(std::span<const iovec> iov, io_options opts = {}) noexcept;
  // SHUT_RD, SHUT_WR or SHUT_RDWR.
  io_awaitable shutdown(int how = SHUT_WR, io_options opts = {}) noexcept;
  // Closes through the ring; the stream no longer owns the descriptor. A
  // receiver of the stream stops receiving (its next recv gives
  // std::errc::bad_file_descriptor).
  io_awaitable close() noexcept;

  int native_handle() const noexcept { return fd_.get(); }
  bool is_open() const noexcept { return fd_.valid(); }
  // Disables Nagle's algorithm (TCP only).
  std::error_code set_nodelay(bool on) noexcept;

 private:
  friend class receiver;
  // Tells the receiver (if any) that the descriptor is going: it must not
  // receive on that number again, which another connection may get next.
  void detach_receiver() noexcept;

  fd_handle fd_;
  // The receiver of this stream, if one lives (it keeps the link both
  // ways, and the stream carries it along when moved).
  detail::recv_state* rx_ = nullptr;
};

// Bytes a receiver received, in one of its pool's shared buffers (or, on
// kernels without provided buffers, in a buffer of its own). Move-only;
// destroying it or calling reset() gives the buffer back, for the kernel to
// fill again: hold it only as long as the bytes are needed, since every
// buffer held is one the pool's other connections cannot use. Must not
// outlive the runtime.
class recv_buffer {
 public:
  recv_buffer() noexcept = default;
  recv_buffer(recv_buffer&& o) noexcept
      : ring_(std::exchange(o.ring_, nullptr)), data_(std::exchange(o.data_, nullptr)),
        size_(std::exchange(o.size_, 0)), bid_(o.bid_) {}
  recv_buffer& operator=(recv_buffer&& o) noexcept {
    if (this != &o) {
      reset();
      ring_ = std::exchange(o.ring_, nullptr);
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
      bid_ = o.bid_;
    }
    return *this;
  }
  ~recv_buffer() { reset(); }

  // The bytes; writable, for decoding in place.
  std::span<std::byte> data() const noexcept { return {data_, size_}; }
  std::size_t size() const noexcept { return size_; }
  // Zero bytes: the peer closed its side (end of stream).
  bool empty() const noexcept { return size_ == 0; }
  void reset() noexcept;

 private:
  friend class recv_awaitable;
  // ring_ null: data_ is the fallback's own (malloc) buffer, or null.
  detail::buffer_ring* ring_ = nullptr;
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  std::uint16_t bid_ = 0;
};

// Awaiting receiver::recv(): the next bytes, an empty buffer at the end of
// the stream, or the error.
class recv_awaitable : public io_awaitable {
 public:
  recv_awaitable(int fd, detail::recv_state* state, io_options opts) noexcept;
  recv_awaitable(const recv_awaitable&) = delete;
  ~recv_awaitable();
  bool await_ready() noexcept { return io_awaitable::await_ready(); }
  bool await_suspend(std::coroutine_handle<> h);
  io_value<recv_buffer> await_resume() noexcept;

 private:
  detail::recv_state* state_;
  std::byte* own_ = nullptr;  // the fallback's buffer, until handed over
};

// Receives from a stream with one multishot request: the kernel picks a
// buffer from the pool's shared set (runtime_options::recv_buffers) for
// each chunk as it arrives, so an idle connection holds no buffer, and
// reading on costs no request per read. Where the kernel lacks this (Linux
// before 6.0, or 5.19 for the shared buffers) each recv is a request of
// its own, with the same results.
//
// A receiver belongs to the pool of its first recv: recv from a coroutine
// on another pool throws std::logic_error. One recv at a time (a second
// one at once gives std::errc::device_or_resource_busy). A stream has one
// receiver at a time (a second throws std::logic_error). Closing,
// destroying or assigning over the stream stops its receiver: bytes
// already received are still taken, then recv gives
// std::errc::bad_file_descriptor. The receiver must not outlive the
// runtime, and receiving directly on the stream meanwhile would take bytes
// out of order.
//
// Bytes that arrived and were not taken yet wait in the receiver; once a
// sixteenth of the pool's buffers wait there it stops receiving until
// they are taken, and TCP holds the peer back. When the pool's buffers run
// out, a receiver with a recv waiting receives into buffers of its own
// (malloc) until some are given back: no connection waits on another's
// reader. See docs/io.md, "Receiving into shared buffers".
class receiver {
 public:
  receiver() noexcept = default;
  explicit receiver(stream& s);
  receiver(receiver&& o) noexcept
      : fd_(std::exchange(o.fd_, -1)), state_(std::exchange(o.state_, nullptr)) {}
  receiver& operator=(receiver&& o) noexcept;
  ~receiver();
  receiver(const receiver&) = delete;
  receiver& operator=(const receiver&) = delete;

  recv_awaitable recv(io_options opts = {}) noexcept { return {fd_, state_, std::move(opts)}; }

 private:
  friend struct detail::receiver_access;  // tests
  void close() noexcept;

  int fd_ = -1;
  detail::recv_state* state_ = nullptr;  // owned; freed once the kernel is done with it
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
