// Sockets: the synchronous set-up calls and the ring operations.
#include "../pool/pool.hpp"
#include "../runtime/runtime_impl.hpp"
#include "multishot_accept.hpp"
#include "multishot_recv.hpp"
#include "resolver.hpp"
#include "../util/tsan.hpp"
#include "../uring/ring.hpp"

#include <cowq/net.hpp>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <new>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdexcept>
#include <sys/stat.h>
#include <sys/un.h>
#include <system_error>
#include <unistd.h>

namespace cowq::net {

namespace {

using detail::op_args;
using detail::op_code;

[[noreturn]] void fail(const std::string& what) {
  throw std::system_error(errno, std::system_category(), "cowq: " + what);
}

std::string describe(const tcp_endpoint& ep) {
  return ep.address().to_string() + ":" + std::to_string(ep.port());
}

int make_socket(int family, int type) {
  const int fd = ::socket(family, type | SOCK_CLOEXEC, 0);
  if (fd < 0) fail("socket");
  return fd;
}

void listen_on(int fd, const sockaddr* addr, socklen_t len, const listen_options& o,
               const std::string& name) {
  const int one = 1;
  if (o.reuse_address && ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0)
    fail("SO_REUSEADDR on " + name);
  if (o.reuse_port && ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0)
    fail("SO_REUSEPORT on " + name);
  if (::bind(fd, addr, len) != 0) fail("bind " + name);
  if (::listen(fd, o.backlog) != 0) fail("listen on " + name);
}

template <typename Endpoint>
Endpoint local_endpoint_of(int fd) {
  Endpoint ep;
  socklen_t len = static_cast<socklen_t>(ep.capacity());
  if (::getsockname(fd, ep.data(), &len) != 0) fail("getsockname");
  ep.resize(len);
  return ep;
}

// A new stream socket of family, connected to addr through the ring. addr
// must stay valid until the connect completes (the caller's frame).
task<io_value<stream>> connect_to(int family, const void* addr, std::uint32_t len, io_options opts) {
  fd_handle fd(::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) co_return io_value<stream>{{errno, std::system_category()}, {}};
  io_result r = co_await io_awaitable(
      op_args{.code = op_code::connect, .fd = fd.get(), .addr = addr, .addrlen = len}, std::move(opts));
  if (!r) co_return io_value<stream>{r.error, {}};
  co_return io_value<stream>{{}, stream(std::move(fd))};
}

}  // namespace

fd_handle& fd_handle::operator=(fd_handle&& o) noexcept {
  if (this != &o) {
    reset();
    fd_ = std::exchange(o.fd_, -1);
  }
  return *this;
}
fd_handle::~fd_handle() { reset(); }
void fd_handle::reset() noexcept {
  if (fd_ >= 0) ::close(std::exchange(fd_, -1));
}

io_awaitable stream::recv(std::span<std::byte> buf, io_options opts) noexcept {
  return {op_args{.code = op_code::recv, .fd = fd_.get(), .buf = buf.data(),
                  .len = static_cast<std::uint32_t>(buf.size())},
          std::move(opts)};
}

io_awaitable stream::send(std::span<const std::byte> buf, io_options opts) noexcept {
  return {op_args{.code = op_code::send, .fd = fd_.get(), .buf = const_cast<std::byte*>(buf.data()),
                  .len = static_cast<std::uint32_t>(buf.size())},
          std::move(opts)};
}

task<io_result> stream::send_all(std::span<const std::byte> buf, io_options opts) {
  std::size_t done = 0;
  while (done < buf.size()) {
    io_result r = co_await send(buf.subspan(done), opts);
    if (!r) co_return io_result{r.error, done};
    if (r.value == 0) co_return io_result{std::make_error_code(std::errc::broken_pipe), done};
    done += r.value;
  }
  co_return io_result{{}, done};
}

io_awaitable stream::readv(std::span<const iovec> iov, io_options opts) noexcept {
  return {op_args{.code = op_code::readv, .fd = fd_.get(), .buf = const_cast<iovec*>(iov.data()),
                  .len = static_cast<std::uint32_t>(iov.size()), .offset = static_cast<std::uint64_t>(-1)},
          std::move(opts)};
}

io_awaitable stream::writev(std::span<const iovec> iov, io_options opts) noexcept {
  return {op_args{.code = op_code::writev, .fd = fd_.get(), .buf = const_cast<iovec*>(iov.data()),
                  .len = static_cast<std::uint32_t>(iov.size()), .offset = static_cast<std::uint64_t>(-1)},
          std::move(opts)};
}

io_awaitable stream::shutdown(int how, io_options opts) noexcept {
  return {op_args{.code = op_code::shutdown, .fd = fd_.get(), .flags = how}, std::move(opts)};
}

stream::stream(stream&& o) noexcept : fd_(std::move(o.fd_)), rx_(std::exchange(o.rx_, nullptr)) {
  if (rx_ != nullptr) rx_->stream = this;
}

stream& stream::operator=(stream&& o) noexcept {
  if (this != &o) {
    detach_receiver();  // this stream's descriptor goes
    fd_ = std::move(o.fd_);
    rx_ = std::exchange(o.rx_, nullptr);
    if (rx_ != nullptr) rx_->stream = this;
  }
  return *this;
}

stream::~stream() { detach_receiver(); }

void stream::detach_receiver() noexcept {
  if (rx_ != nullptr) detail::multishot_recv_fd_gone(std::exchange(rx_, nullptr));
}

io_awaitable stream::close() noexcept {
  detach_receiver();
  return {op_args{.code = op_code::close, .fd = fd_.release()}, {}};
}

std::error_code stream::set_nodelay(bool on) noexcept {
  const int v = on ? 1 : 0;
  if (::setsockopt(fd_.get(), IPPROTO_TCP, TCP_NODELAY, &v, sizeof v) != 0)
    return {errno, std::system_category()};
  return {};
}

accept_awaitable::accept_awaitable(int fd, io_options opts, detail::accept_state* multishot) noexcept
    : io_awaitable(op_args{.code = op_code::accept, .fd = fd}, std::move(opts)), multishot_(multishot) {
  args_.addr = &peer_;
  args_.addrlen_out = &peer_len_;
}

bool accept_awaitable::await_suspend(std::coroutine_handle<> h) {
  if (multishot_ != nullptr) {
    auto start = [this](detail::io_op* op, std::chrono::nanoseconds timeout) {
      return detail::multishot_accept_start(multishot_, op, timeout);
    };
    if (auto r = suspend_shared(h, start)) return *r;
  }
  return io_awaitable::await_suspend(h);
}

void recv_buffer::reset() noexcept {
  if (ring_ != nullptr)
    detail::give_back_buffer(std::exchange(ring_, nullptr), bid_);
  else
    std::free(data_);
  data_ = nullptr;
  size_ = 0;
}

recv_awaitable::recv_awaitable(int fd, detail::recv_state* state, io_options opts) noexcept
    : io_awaitable(op_args{.code = op_code::recv, .fd = fd}, std::move(opts)), state_(state) {}

recv_awaitable::~recv_awaitable() { std::free(own_); }

bool recv_awaitable::await_suspend(std::coroutine_handle<> h) {
  if (state_ != nullptr) {
    auto start = [this](detail::io_op* op, std::chrono::nanoseconds timeout) {
      return detail::multishot_recv_start(state_, op, timeout);
    };
    if (auto r = suspend_shared(h, start)) return *r;
  }
  // A request of its own, into a buffer of its own that the result takes.
  const std::size_t n = detail::fallback_recv_size();
  own_ = static_cast<std::byte*>(std::malloc(n));
  if (own_ == nullptr) throw std::bad_alloc();
  args_.buf = own_;
  args_.len = static_cast<std::uint32_t>(n);
  return io_awaitable::await_suspend(h);
}

io_value<recv_buffer> recv_awaitable::await_resume() noexcept {
  io_result r = io_awaitable::await_resume();
  if (!r) return {r.error, {}};
  recv_buffer b;
  if (r.value == 0) return {{}, std::move(b)};
  if ((op_.cqe_flags_ & IORING_CQE_F_BUFFER) != 0) {
    // state_->bufs was set, under the pool lock, before op_ was queued.
    b.ring_ = state_->bufs;
    b.bid_ = static_cast<std::uint16_t>(op_.cqe_flags_ >> IORING_CQE_BUFFER_SHIFT);
    b.data_ = b.ring_->data(b.bid_);
    // Pairs with the release in buffer_ring::put(): the last holder's writes.
    detail::tsan_acquire(b.data_);
  } else if (own_ != nullptr) {
    b.data_ = std::exchange(own_, nullptr);
  } else {
    // The receiver's own buffer, taken while the pool had none free.
    b.data_ = std::exchange(state_->handoff, nullptr);
  }
  b.size_ = r.value;
  return {{}, std::move(b)};
}

receiver::receiver(stream& s) : fd_(s.native_handle()) {
  if (s.rx_ != nullptr) throw std::logic_error("cowq: this stream has a receiver already");
  state_ = new detail::recv_state(fd_);
  state_->stream = &s;
  s.rx_ = state_;
}

void receiver::close() noexcept {
  if (state_ == nullptr) return;
  if (state_->stream != nullptr) state_->stream->rx_ = nullptr;
  detail::multishot_recv_close(std::exchange(state_, nullptr));
}

receiver& receiver::operator=(receiver&& o) noexcept {
  if (this != &o) {
    close();
    fd_ = std::exchange(o.fd_, -1);
    state_ = std::exchange(o.state_, nullptr);
  }
  return *this;
}

receiver::~receiver() { close(); }

tcp_listener::tcp_listener(tcp_listener&& o) noexcept
    : fd_(std::move(o.fd_)), multishot_(std::exchange(o.multishot_, nullptr)) {}

tcp_listener& tcp_listener::operator=(tcp_listener&& o) noexcept {
  if (this != &o) {
    close();
    fd_ = std::move(o.fd_);
    multishot_ = std::exchange(o.multishot_, nullptr);
  }
  return *this;
}

tcp_listener::~tcp_listener() { close(); }

void tcp_listener::close() noexcept {
  if (multishot_ != nullptr) detail::multishot_accept_close(std::exchange(multishot_, nullptr));
  fd_.reset();
}

io_value<stream> accept_awaitable::await_resume() noexcept {
  io_result r = io_awaitable::await_resume();
  if (!r) return {r.error, {}};
  return {{}, stream(fd_handle(static_cast<int>(r.value)))};
}

tcp_listener tcp_listener::bind(const tcp_endpoint& ep, listen_options opts) {
  tcp_listener l;
  l.fd_ = fd_handle(make_socket(ep.protocol().family(), SOCK_STREAM));
  listen_on(l.fd_.get(), ep.data(), static_cast<socklen_t>(ep.size()), opts, describe(ep));
  if (detail::ring::features().multishot_accept) l.multishot_ = detail::make_accept_state(l.fd_.get());
  return l;
}

tcp_endpoint tcp_listener::local_endpoint() const { return local_endpoint_of<tcp_endpoint>(fd_.get()); }

task<io_value<stream>> connect(tcp_endpoint ep, io_options opts) {
  co_return co_await connect_to(ep.protocol().family(), ep.data(),
                                static_cast<std::uint32_t>(ep.size()), std::move(opts));
}

unix_listener unix_listener::bind(const std::string& path, listen_options opts) {
  sockaddr_un addr{};
  if (path.size() >= sizeof addr.sun_path)
    throw std::invalid_argument("cowq: Unix socket path too long: " + path);
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  unix_listener l;
  l.fd_ = fd_handle(make_socket(AF_UNIX, SOCK_STREAM));
  // A stale socket file from a dead process is replaced; a live one is not.
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
    fd_handle probe(make_socket(AF_UNIX, SOCK_STREAM));
    if (::connect(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 &&
        errno == ECONNREFUSED)
      ::unlink(path.c_str());
  }
  opts.reuse_address = false;
  opts.reuse_port = false;
  listen_on(l.fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr, opts, path);
  return l;
}

task<io_value<stream>> connect_unix(std::string path, io_options opts) {
  sockaddr_un addr{};
  if (path.size() >= sizeof addr.sun_path)
    co_return io_value<stream>{std::make_error_code(std::errc::filename_too_long), {}};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  co_return co_await connect_to(AF_UNIX, &addr, sizeof addr, std::move(opts));
}

udp_send_awaitable::udp_send_awaitable(int fd, std::span<const std::byte> buf,
                                       const udp_endpoint& to, io_options opts) noexcept
    : io_awaitable(op_args{.code = op_code::sendmsg, .fd = fd}, std::move(opts)), to_(to) {
  iov_.iov_base = const_cast<std::byte*>(buf.data());
  iov_.iov_len = buf.size();
  msg_.msg_name = to_.data();
  msg_.msg_namelen = static_cast<socklen_t>(to_.size());
  msg_.msg_iov = &iov_;
  msg_.msg_iovlen = 1;
  args_.buf = &msg_;
}

udp_recv_awaitable::udp_recv_awaitable(int fd, std::span<std::byte> buf, io_options opts) noexcept
    : io_awaitable(op_args{.code = op_code::recvmsg, .fd = fd}, std::move(opts)) {
  iov_.iov_base = buf.data();
  iov_.iov_len = buf.size();
  msg_.msg_name = &from_;
  msg_.msg_namelen = sizeof from_;
  msg_.msg_iov = &iov_;
  msg_.msg_iovlen = 1;
  args_.buf = &msg_;
}

io_value<std::pair<std::size_t, udp_endpoint>> udp_recv_awaitable::await_resume() noexcept {
  io_result r = io_awaitable::await_resume();
  if (!r) return {r.error, {}};
  udp_endpoint from;
  std::memcpy(from.data(), &from_, std::min<std::size_t>(msg_.msg_namelen, from.capacity()));
  from.resize(std::min<std::size_t>(msg_.msg_namelen, from.capacity()));
  return {{}, {r.value, from}};
}

udp_socket udp_socket::bind(const udp_endpoint& ep) {
  udp_socket s;
  s.fd_ = fd_handle(make_socket(ep.protocol().family(), SOCK_DGRAM));
  if (::bind(s.fd_.get(), ep.data(), static_cast<socklen_t>(ep.size())) != 0)
    fail("bind " + ep.address().to_string() + ":" + std::to_string(ep.port()));
  return s;
}

udp_endpoint udp_socket::local_endpoint() const { return local_endpoint_of<udp_endpoint>(fd_.get()); }

task<io_value<std::vector<tcp_endpoint>>> resolve(std::string host, std::string service) {
  detail::resolve_awaitable aw(std::move(host), std::move(service));
  co_await aw;
  co_return io_value<std::vector<tcp_endpoint>>{aw.error, std::move(aw.results)};
}

}  // namespace cowq::net

namespace cowq::detail {
recv_state* receiver_access::state(const net::receiver& r) noexcept { return r.state_; }
}  // namespace cowq::detail
