// cowq::net::receiver: multishot receive into the pools' shared buffers,
// on 127.0.0.1, in each of the kernel's three modes (multishot, a request
// per recv selecting a shared buffer, no shared buffers at all).
#include <cowq/cowq.hpp>
#include <cowq/net.hpp>
#include <cowq/sync.hpp>

#include "net/multishot_recv.hpp"
#include "pool/pool.hpp"
#include "runtime/runtime_impl.hpp"
#include "test_util.hpp"
#include "uring/ring.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <memory>
#include <optional>
#include <stop_token>
#include <sys/socket.h>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using namespace cowq::net;
using cowq::test::open_fds;
using cowq::test::wait_until;

namespace {

const tcp_endpoint& kLoopback = cowq::test::loopback;
using cowq::test::pattern;

enum class mode { multishot, per_recv, own_buffer };

const char* name_of(mode m) {
  switch (m) {
    case mode::multishot: return "multishot";
    case mode::per_recv: return "per_recv";
    case mode::own_buffer: return "own_buffer";
  }
  return "?";
}

// Switches the kernel features a receiver looks at, for one test: set
// before the test's runtime starts its threads and put back after they are
// joined, so no worker reads them while they change.
class feature_override {
 public:
  explicit feature_override(mode m) {
    cowq::detail::ring probe(8);  // the features are probed with the first ring
    auto& f = const_cast<cowq::detail::ring_features&>(cowq::detail::ring::features());
    saved_ = f;
    supported_ = f.buf_ring && (m != mode::multishot || f.multishot_recv);
    if (m == mode::per_recv) f.multishot_recv = false;
    if (m == mode::own_buffer) f.buf_ring = f.multishot_recv = false;
  }
  ~feature_override() { const_cast<cowq::detail::ring_features&>(cowq::detail::ring::features()) = saved_; }
  // Whether the kernel has what the mode needs (own_buffer needs nothing).
  bool supported(mode m) const { return m == mode::own_buffer || supported_; }

 private:
  cowq::detail::ring_features saved_;
  bool supported_ = false;
};

// One pool does everything: the receivers share its buffers.
cowq::runtime_options one_cpu(unsigned count, unsigned size) {
  cowq::runtime_options o;
  o.cpus = {cowq::test::first_allowed_cpu()};
  o.recv_buffers.count = count;
  o.recv_buffers.size = size;
  return o;
}

// Echoes through a receiver until end of stream; returns bytes echoed.
cowq::task<std::size_t> echo(stream s) {
  receiver rx(s);
  std::size_t total = 0;
  for (;;) {
    auto r = co_await rx.recv();
    if (!r || r.value.empty()) break;
    auto w = co_await s.send_all(r.value.data());
    if (!w) break;
    total += r.value.size();
  }
  co_return total;
}

// Runs a test in each mode; skips the modes this kernel cannot run.
class receiver_modes : public ::testing::TestWithParam<mode> {
 protected:
  void SetUp() override {
    features_.emplace(GetParam());
    if (!features_->supported(GetParam())) GTEST_SKIP() << "kernel without " << name_of(GetParam());
  }
  // Outlives the test body, so the test's runtime is joined before the
  // features are put back.
  std::optional<feature_override> features_;
};

// Tiny buffers shared by many connections: receives end for want of a
// buffer (ENOBUFS) and resume when one comes back, over and over.
TEST_P(receiver_modes, echo_through_few_small_buffers_keeps_every_byte) {
  const int fds_before = open_fds();
  {
    cowq::runtime rt(one_cpu(16, 256));
    auto l = tcp_listener::bind(kLoopback);
    constexpr int kConns = 24;
    std::atomic<std::size_t> echoed{0};
    auto serve = [&]() -> cowq::task<void> {
      for (int i = 0; i < kConns; ++i) {
        auto c = co_await l.accept();
        if (!c) continue;
        rt.system_wq().spawn([](stream s, std::atomic<std::size_t>* e) -> cowq::task<void> {
          e->fetch_add(co_await echo(std::move(s)));
        }(std::move(c.value), &echoed));
      }
    };
    rt.system_wq().spawn(cowq::test::run(serve));
    auto all = [&]() -> cowq::task<int> {
      std::vector<cowq::task<bool>> clients;
      for (int i = 0; i < kConns; ++i)
        clients.push_back(cowq::test::echo_client(l.local_endpoint(), pattern(50000 + 977 * i, static_cast<unsigned>(i))));
      int ok = 0;
      for (bool b : co_await cowq::when_all(std::move(clients))) ok += b ? 1 : 0;
      co_return ok;
    };
    EXPECT_EQ(cowq::sync_wait(rt, all()), kConns);
    std::size_t expected = 0;
    for (int i = 0; i < kConns; ++i) expected += 50000 + 977 * i;
    ASSERT_TRUE(wait_until([&] { return echoed.load() == expected; })) << echoed.load();
    ASSERT_TRUE(wait_until([&] { return rt.stats().live_coroutines == 0; }));
  }
  EXPECT_EQ(open_fds(), fds_before);
}

TEST_P(receiver_modes, end_of_stream_is_an_empty_buffer_every_time) {
  cowq::runtime rt(one_cpu(16, 256));
  auto l = tcp_listener::bind(kLoopback);
  auto t = [&]() -> cowq::task<void> {
    auto [c, a] = co_await cowq::test::connected_pair(l);
    receiver rx(a);
    EXPECT_TRUE(co_await c.send_all(as_bytes("last words")));
    EXPECT_TRUE(co_await c.shutdown(SHUT_WR));
    std::string got;
    for (;;) {
      auto r = co_await rx.recv();
      EXPECT_TRUE(r) << r.error.message();
      if (!r || r.value.empty()) break;
      got.append(reinterpret_cast<const char*>(r.value.data().data()), r.value.size());
    }
    EXPECT_EQ(got, "last words");
    auto again = co_await rx.recv();
    EXPECT_TRUE(again && again.value.empty());
  };
  cowq::sync_wait(rt, t());
}

TEST_P(receiver_modes, timeout_and_stop_lose_no_bytes) {
  cowq::runtime rt(one_cpu(16, 256));
  auto l = tcp_listener::bind(kLoopback);
  std::stop_source src;
  std::atomic<bool> waiting{false};
  auto t = [&]() -> cowq::task<void> {
    auto [c, a] = co_await cowq::test::connected_pair(l);
    receiver rx(a);
    auto r = co_await rx.recv(30ms);  // nothing sent yet
    EXPECT_EQ(r.error, std::errc::timed_out);
    waiting = true;
    r = co_await rx.recv(src.get_token());
    EXPECT_EQ(r.error, std::errc::operation_canceled);
    EXPECT_TRUE(co_await c.send_all(as_bytes("after")));
    r = co_await rx.recv(5s);
    EXPECT_TRUE(r) << r.error.message();
    if (r) {
      EXPECT_EQ(std::string(reinterpret_cast<const char*>(r.value.data().data()), r.value.size()), "after");
    }
  };
  std::thread stopper([&] {
    EXPECT_TRUE(wait_until([&] { return waiting.load(); }));
    src.request_stop();
  });
  cowq::sync_wait(rt, t());
  stopper.join();
}

TEST_P(receiver_modes, peer_reset_is_an_error_not_a_crash) {
  cowq::runtime rt(one_cpu(16, 256));
  auto l = tcp_listener::bind(kLoopback);
  auto t = [&]() -> cowq::task<void> {
    auto [c, a] = co_await cowq::test::connected_pair(l);
    receiver rx(a);
    linger lg{1, 0};
    ::setsockopt(c.native_handle(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    c = stream();  // RST instead of FIN
    auto r = co_await rx.recv(10s);
    EXPECT_TRUE(!r || r.value.empty());
    if (!r) {
      EXPECT_EQ(r.error.value(), ECONNRESET) << r.error.message();
    }
  };
  cowq::sync_wait(rt, t());
}

// Closing the stream under a receiver stops it: what it received is still
// taken, then EBADF; a connection that gets the same descriptor number
// next is not read by it.
TEST_P(receiver_modes, closing_the_stream_stops_its_receiver) {
  cowq::runtime rt(one_cpu(16, 256));
  auto l = tcp_listener::bind(kLoopback);
  auto t = [&]() -> cowq::task<void> {
    auto [c, a] = co_await cowq::test::connected_pair(l);
    receiver rx(a);
    EXPECT_THROW(receiver{a}, std::logic_error);  // one receiver per stream
    EXPECT_TRUE(co_await c.send_all(as_bytes("before")));
    std::string got;
    while (got.size() < 6) {
      auto r = co_await rx.recv(10s);
      if (!r || r.value.empty()) break;
      got.append(reinterpret_cast<const char*>(r.value.data().data()), r.value.size());
    }
    EXPECT_EQ(got, "before");
    stream moved = std::move(a);  // the receiver follows the stream
    const int old_fd = moved.native_handle();
    co_await moved.close();
    // Most likely the same number, now another connection's.
    auto [c2, a2] = co_await cowq::test::connected_pair(l);
    EXPECT_TRUE(co_await c2.send_all(as_bytes("not yours")));
    EXPECT_TRUE(co_await c.send_all(as_bytes("after")));
    auto r = co_await rx.recv(10s);
    EXPECT_EQ(r.error, std::errc::bad_file_descriptor) << "fd " << old_fd << " -> " << a2.native_handle();
    receiver rx2(a2);
    std::string other;
    while (other.size() < 9) {
      auto r2 = co_await rx2.recv(10s);
      if (!r2 || r2.value.empty()) break;
      other.append(reinterpret_cast<const char*>(r2.value.data().data()), r2.value.size());
    }
    EXPECT_EQ(other, "not yours");
  };
  cowq::sync_wait(rt, t());
}

// A receiver waiting when its stream goes (another coroutine closed it)
// hears EBADF rather than waiting for ever.
TEST_P(receiver_modes, a_waiting_recv_hears_of_the_stream_closing) {
  if (GetParam() == mode::own_buffer)
    GTEST_SKIP() << "without shared buffers a waiting recv is a request of its own, which "
                    "closing the descriptor does not end (as for stream::recv)";
  cowq::runtime rt(one_cpu(16, 256));
  auto l = tcp_listener::bind(kLoopback);
  std::atomic<bool> waiting{false};
  auto t = [&]() -> cowq::task<void> {
    auto [c, a] = co_await cowq::test::connected_pair(l);
    receiver rx(a);
    cowq::task_group g(rt.system_wq());
    g.spawn([](stream& s, std::atomic<bool>& w) -> cowq::task<void> {
      while (!w.load()) co_await cowq::yield();
      co_await s.close();
    }(a, waiting));
    waiting = true;
    auto r = co_await rx.recv(20s);
    EXPECT_EQ(r.error, std::errc::bad_file_descriptor) << r.error.message();
    co_await g.join();
  };
  cowq::sync_wait(rt, t());
}

INSTANTIATE_TEST_SUITE_P(receiver, receiver_modes,
                         ::testing::Values(mode::multishot, mode::per_recv, mode::own_buffer),
                         [](const auto& info) { return std::string(name_of(info.param)); });

// For the tests of what only shared buffers do: skips on kernels without.
class receiver_shared : public ::testing::Test {
 protected:
  void SetUp() override {
    cowq::detail::ring probe(8);  // the features are probed with the first ring
    if (!cowq::detail::ring::features().buf_ring) GTEST_SKIP() << "kernel without provided buffer rings";
  }
};

cowq::detail::pool& the_pool(cowq::runtime& rt) { return *rt.impl().bound_[0][0]; }

// The stats of the_pool().
cowq::pool_stats pool_stats_of(cowq::runtime& rt) {
  const std::string name = the_pool(rt).name_;
  for (const auto& p : rt.stats().pools)
    if (p.name == name) return p;
  ADD_FAILURE() << "no pool " << name << " in the stats";
  return {};
}

// A connection whose bytes nobody reads ends up holding (nearly) all of
// the pool's buffers: the kernel fills them in bursts faster than the
// receiver can cancel its receive. Another connection that needs many
// buffers at once still gets its bytes, in buffers of its own.
TEST_F(receiver_shared, a_reader_that_stops_does_not_stall_the_others) {
  // 1024 buffers of 256 bytes (256 KiB), a backlog limit of 64; the flood
  // is four times what the buffers hold.
  cowq::runtime rt(one_cpu(1024, 256));
  auto l = tcp_listener::bind(kLoopback);
  const auto flood = pattern(1 << 20, 3);
  std::atomic<cowq::detail::recv_state*> flooded{nullptr};
  cowq::event read_now;
  auto t = [&]() -> cowq::task<bool> {
    auto [c1, a1] = co_await cowq::test::connected_pair(l);
    receiver rx1(a1);
    std::thread flooder([&, fd = c1.native_handle()] {
      std::size_t off = 0;
      while (off < flood.size()) {
        const ssize_t n = ::send(fd, flood.data() + off, flood.size() - off, MSG_NOSIGNAL);
        if (n <= 0) break;
        off += static_cast<std::size_t>(n);
      }
    });
    std::vector<std::byte> got;
    {
      auto first = co_await rx1.recv(10s);  // arms the receive
      EXPECT_TRUE(first && !first.value.empty());
      if (first) got.assign(first.value.data().begin(), first.value.data().end());
    }
    flooded = cowq::detail::receiver_access::state(rx1);
    co_await read_now.wait();
    // A second connection echoes 64 KiB through the same pool meanwhile.
    auto [c2, a2] = co_await cowq::test::connected_pair(l);
    receiver rx2(a2);
    const auto data = pattern(64 * 1024, 4);
    std::vector<std::byte> back;
    for (std::size_t off = 0; off < data.size(); off += 4096) {
      EXPECT_TRUE(co_await c2.send_all(std::span(data).subspan(off, 4096)));
      // Each 4 KiB is held whole before it is let go: 16 buffers at once.
      std::vector<recv_buffer> held;
      while (back.size() < off + 4096) {
        auto r = co_await rx2.recv(5s);
        if (!r || r.value.empty()) {
          ADD_FAILURE() << "second connection starved: " << r.error.message();
          ::shutdown(c1.native_handle(), SHUT_RDWR);
          flooder.join();
          co_return false;
        }
        back.insert(back.end(), r.value.data().begin(), r.value.data().end());
        held.push_back(std::move(r.value));
      }
    }
    EXPECT_TRUE(back == data);
    // Then the flood is read in full, in order.
    while (got.size() < flood.size()) {
      auto r = co_await rx1.recv(10s);
      if (!r || r.value.empty()) {
        ADD_FAILURE() << "flood cut short at " << got.size() << ": " << r.error.message();
        break;
      }
      got.insert(got.end(), r.value.data().begin(), r.value.data().end());
    }
    // Unblocks the flooder should the flood have been cut short.
    ::shutdown(c1.native_handle(), SHUT_RDWR);
    flooder.join();
    co_return got == flood;
  };
  std::thread gate([&] {
    // The flooded receiver has stopped receiving: its receive is over and
    // its backlog past its limit.
    auto& p = the_pool(rt);
    EXPECT_TRUE(wait_until([&] {
      cowq::detail::recv_state* s = flooded.load();
      if (s == nullptr) return false;
      std::lock_guard g(p.lock_);
      return !s->armed && !s->cancelling && s->ready_size >= cowq::detail::backlog_limit(s);
    }));
    read_now.set();  // even on failure: the test must end, not hang
  });
  EXPECT_TRUE(cowq::sync_wait(rt, t()));
  gate.join();
}

// Receivers that hold their buffers starve the others, which go on in
// buffers of their own; every connection finishes with every byte.
TEST_F(receiver_shared, starved_receivers_resume_when_buffers_come_back) {
  cowq::runtime rt(one_cpu(8, 64));
  auto l = tcp_listener::bind(kLoopback);
  constexpr int kConns = 6;
  constexpr std::size_t kBytes = 4096;
  cowq::event release;
  std::atomic<int> done_ok{0};
  // Each server holds on to its first two buffers until released.
  auto server = [&](stream s, unsigned seed) -> cowq::task<void> {
    receiver rx(s);
    std::vector<std::byte> got;
    std::vector<recv_buffer> held;
    while (got.size() < kBytes) {
      auto r = co_await rx.recv(20s);
      if (!r || r.value.empty()) break;
      got.insert(got.end(), r.value.data().begin(), r.value.data().end());
      if (!release.is_set()) held.push_back(std::move(r.value));
      if (held.size() == 2) {
        co_await release.wait();
        held.clear();
      }
    }
    if (got == pattern(kBytes, seed)) done_ok.fetch_add(1);
  };
  auto t = [&]() -> cowq::task<void> {
    std::vector<stream> clients;
    cowq::task_group g(rt.system_wq());
    for (int i = 0; i < kConns; ++i) {
      auto [c, a] = co_await cowq::test::connected_pair(l);
      g.spawn(server(std::move(a), static_cast<unsigned>(i)));
      EXPECT_TRUE(co_await c.send_all(pattern(kBytes, static_cast<unsigned>(i))));
      clients.push_back(std::move(c));
    }
    co_await g.join();
  };
  std::thread gate([&] {
    // 6 receivers holding 2 buffers each would need 12 of the 8: some
    // starve. Let go once the pool says so.
    EXPECT_TRUE(wait_until([&] {
      std::lock_guard g(the_pool(rt).lock_);
      return !the_pool(rt).starved_recv_.empty();
    }));
    release.set();  // even on failure: the test must end, not hang
  });
  cowq::sync_wait(rt, t());
  gate.join();
  EXPECT_EQ(done_ok.load(), kConns);
  const auto st = pool_stats_of(rt);
  EXPECT_GT(st.recv_buffer_shortages, 0u) << "nobody received into a buffer of its own";
  EXPECT_EQ(st.recv_buffers_in_use, 0);
}

// A receiver that runs out of buffers while nobody waits on it is armed
// again by the next buffer given back: its bytes are waiting when its
// owner next asks.
TEST_F(receiver_shared, a_buffer_given_back_rearms_a_starved_receiver) {
  cowq::runtime rt(one_cpu(8, 64));
  auto l = tcp_listener::bind(kLoopback);
  auto& p = the_pool(rt);
  auto locked = [&](auto f) {
    std::lock_guard g(p.lock_);
    return f();
  };
  std::atomic<cowq::detail::recv_state*> b_state{nullptr};
  cowq::event b_sent, b_starved, b_refilled;
  auto t = [&]() -> cowq::task<bool> {
    auto [cb, ab] = co_await cowq::test::connected_pair(l);
    receiver rxb(ab);
    EXPECT_TRUE(co_await cb.send_all(as_bytes("x")));
    auto first = co_await rxb.recv(10s);  // B's receive is armed from now on
    EXPECT_TRUE(first && first.value.size() == 1);
    first.value.reset();
    b_state = cowq::detail::receiver_access::state(rxb);
    // A takes all 8 buffers and holds them.
    auto [ca, aa] = co_await cowq::test::connected_pair(l);
    receiver rxa(aa);
    EXPECT_TRUE(co_await ca.send_all(pattern(8 * 64, 1)));
    std::vector<recv_buffer> held;
    std::size_t got = 0;
    while (got < 8 * 64) {
      auto r = co_await rxa.recv(10s);
      if (!r || r.value.empty()) co_return false;
      got += r.value.size();
      held.push_back(std::move(r.value));
    }
    // B's bytes arrive with no buffer left and no recv waiting on B.
    EXPECT_TRUE(co_await cb.send_all(pattern(64, 2)));
    b_sent.set();
    co_await b_starved.wait();
    held.clear();  // gives A's 8 buffers back
    co_await b_refilled.wait();
    auto r = co_await rxb.recv(10s);
    co_return r && std::vector<std::byte>(r.value.data().begin(), r.value.data().end()) == pattern(64, 2);
  };
  std::thread gate([&] {
    // Failures are expected, not asserted: the events must be set for the
    // test to end rather than hang.
    EXPECT_TRUE(wait_until([&] { return b_sent.is_set(); }));
    auto* s = b_state.load();
    EXPECT_TRUE(wait_until([&] { return locked([&] { return s->starved && !s->armed; }); }));
    b_starved.set();
    // Re-armed by the buffers coming back, B's receive takes its bytes.
    EXPECT_TRUE(wait_until([&] { return locked([&] { return s->ready_size == 1; }); }));
    b_refilled.set();
  });
  EXPECT_TRUE(cowq::sync_wait(rt, t()));
  gate.join();
}

// Closing a receiver gives back what it held and what arrives afterwards.
TEST_F(receiver_shared, a_closed_receiver_gives_every_buffer_back) {
  cowq::runtime rt(one_cpu(8, 64));
  auto l = tcp_listener::bind(kLoopback);
  auto t = [&]() -> cowq::task<bool> {
    auto [c1, a1] = co_await cowq::test::connected_pair(l);
    {
      receiver rx(a1);
      EXPECT_TRUE(co_await c1.send_all(pattern(4 * 64, 1)));
      auto r = co_await rx.recv(10s);
      EXPECT_TRUE(r && !r.value.empty());
    }  // closed with chunks in its backlog and its receive armed
    // All 8 buffers must be free again: a second connection holds 8.
    auto [c2, a2] = co_await cowq::test::connected_pair(l);
    receiver rx2(a2);
    const auto data = pattern(8 * 64, 2);
    std::vector<recv_buffer> held;
    std::vector<std::byte> got;
    EXPECT_TRUE(co_await c2.send_all(data));
    while (got.size() < data.size()) {
      auto r = co_await rx2.recv(10s);
      if (!r || r.value.empty()) co_return false;
      got.insert(got.end(), r.value.data().begin(), r.value.data().end());
      held.push_back(std::move(r.value));
    }
    EXPECT_EQ(pool_stats_of(rt).recv_buffers_in_use, 8);
    co_return got == data;
  };
  EXPECT_TRUE(cowq::sync_wait(rt, t()));
}

TEST_F(receiver_shared, recv_on_another_pool_is_refused) {
  cowq::runtime rt(one_cpu(16, 256));
  auto l = tcp_listener::bind(kLoopback);
  auto t = [&]() -> cowq::task<bool> {
    auto [c, a] = co_await cowq::test::connected_pair(l);
    receiver rx(a);
    EXPECT_TRUE(co_await c.send_all(as_bytes("x")));
    auto r = co_await rx.recv(10s);
    EXPECT_TRUE(r);
    co_await cowq::schedule_on(rt.system_highpri_wq());
    try {
      (void)co_await rx.recv(10s);
    } catch (const std::logic_error& e) {
      co_return std::string(e.what()).find("pool of its first recv") != std::string::npos;
    }
    co_return false;
  };
  EXPECT_TRUE(cowq::sync_wait(rt, t()));
}

TEST(receiver, shutdown_ends_a_waiting_recv) {
  { cowq::detail::ring probe(8); }
  cowq::runtime rt(one_cpu(16, 256));
  auto l = tcp_listener::bind(kLoopback);
  std::atomic<bool> waiting{false}, ended{false};
  std::error_code error;
  stream keep;
  auto t = [&]() -> cowq::task<void> {
    auto [c, a] = co_await cowq::test::connected_pair(l);
    keep = std::move(c);
    receiver rx(a);
    waiting = true;
    auto r = co_await rx.recv();
    error = r.error;
    ended = true;
  };
  rt.system_wq().spawn(cowq::test::run(t));
  ASSERT_TRUE(wait_until([&] { return waiting.load(); }));
  rt.shutdown();
  EXPECT_TRUE(ended.load());
  EXPECT_EQ(error, std::errc::operation_canceled);
}

TEST(receiver, bad_buffer_options_are_refused) {
  cowq::runtime_options o;
  o.recv_buffers.count = 1000;
  EXPECT_THROW(cowq::runtime{o}, std::invalid_argument);
  o.recv_buffers.count = 1024;
  o.recv_buffers.size = 0;
  EXPECT_THROW(cowq::runtime{o}, std::invalid_argument);
}

}  // namespace
