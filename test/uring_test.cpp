// The pool rings under pressure: a full submission queue and an
// overflowing completion queue lose nothing.
#include <cowq/cowq.hpp>
#include <cowq/net.hpp>

#include "pool/pool.hpp"
#include "runtime/runtime_impl.hpp"
#include "test_util.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <netinet/in.h>
#include <sys/socket.h>
#include <thread>
#include <vector>

using namespace cowq::net;
using cowq::test::wait_until;

namespace {

cowq::task<void> receive_one(udp_socket* s, std::atomic<int>* got) {
  std::byte buf[16];
  auto r = co_await s->receive_from(buf);
  if (r && r.value.first == 4) got->fetch_add(1);
}

// Sends n datagrams to ep from a plain thread.
void blast(const udp_endpoint& ep, int n) {
  int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  for (int i = 0; i < n; ++i)
    while (::sendto(fd, "ping", 4, 0, ep.data(), static_cast<socklen_t>(ep.size())) < 0) std::this_thread::yield();
  ::close(fd);
}

TEST(uring, more_operations_than_the_submission_queue_holds) {
  cowq::runtime rt({.cpus = {0}});
  auto s = udp_socket::bind({asio::ip::make_address("127.0.0.1"), 0});
  int big = 4 << 20;
  ::setsockopt(s.native_handle(), SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
  constexpr int kOps = 2000;  // the SQ has 256 entries
  std::atomic<int> got{0};
  // One item starts every receive: the SQ fills and is submitted to make
  // room, never dropping an operation.
  auto starter = [&]() -> cowq::task<void> {
    for (int i = 0; i < kOps; ++i) rt.system_wq().spawn(receive_one(&s, &got));
    co_return;
  };
  cowq::sync_wait(rt, starter());
  auto& p = *rt.impl().bound_[0][0];
  ASSERT_TRUE(wait_until([&] { return p.inflight_.load() == kOps; }));
  blast(s.local_endpoint(), kOps);
  ASSERT_TRUE(wait_until([&] { return got.load() == kOps; }));
  EXPECT_EQ(p.inflight_.load(), 0);
}

TEST(uring, completion_queue_overflow_loses_nothing) {
  cowq::runtime rt({.cpus = {0}});
  auto s = udp_socket::bind({asio::ip::make_address("127.0.0.1"), 0});
  int big = 8 << 20;
  ::setsockopt(s.native_handle(), SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
  constexpr int kOps = 5000;  // the CQ has 2048 entries
  std::atomic<int> got{0};
  auto starter = [&]() -> cowq::task<void> {
    for (int i = 0; i < kOps; ++i) rt.system_wq().spawn(receive_one(&s, &got));
    co_return;
  };
  cowq::sync_wait(rt, starter());
  auto& p = *rt.impl().bound_[0][0];
  ASSERT_TRUE(wait_until([&] { return p.inflight_.load() == kOps; }));
  // Keep the pool's only running worker busy so nobody reaps while every
  // completion arrives: the CQ overflows into the kernel's backlog.
  std::atomic<bool> release{false}, busy{false};
  rt.system_wq().spawn([](std::atomic<bool>* b, std::atomic<bool>* r) -> cowq::task<void> {
    b->store(true);
    while (!r->load()) std::this_thread::yield();
    co_return;
  }(&busy, &release));
  ASSERT_TRUE(wait_until([&] { return busy.load(); }));
  blast(s.local_endpoint(), kOps);
  release = true;
  ASSERT_TRUE(wait_until([&] { return got.load() == kOps; }));
  EXPECT_EQ(p.inflight_.load(), 0);
}

}  // namespace
