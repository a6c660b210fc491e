// Sockets over io_uring on 127.0.0.1: echo, timeouts, cancellation,
// resets, half-close, fd exhaustion, UDP, Unix sockets, resolution.
#include <cowq/cowq.hpp>
#include <cowq/net.hpp>

#include "pool/pool.hpp"
#include "runtime/runtime_impl.hpp"
#include "test_util.hpp"
#include "uring/ring.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <netinet/in.h>
#include <numeric>
#include <stop_token>
#include <sys/resource.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace std::chrono_literals;
using cowq::test::open_fds;
using namespace cowq::net;
using cowq::test::wait_until;

namespace {

const tcp_endpoint& kLoopback = cowq::test::loopback;
using cowq::test::pattern;

// Echoes until the peer closes or an error; returns bytes echoed.
cowq::task<std::size_t> echo(stream s) {
  std::vector<std::byte> buf(16384);
  std::size_t total = 0;
  for (;;) {
    auto r = co_await s.recv(buf);
    if (!r || r.value == 0) break;
    auto w = co_await s.send_all(std::span(buf).first(r.value));
    if (!w) break;
    total += r.value;
  }
  co_return total;
}

cowq::task<void> serve(tcp_listener* l, int connections, std::atomic<std::size_t>* echoed) {
  for (int i = 0; i < connections; ++i) {
    auto c = co_await l->accept();
    if (!c) continue;
    cowq::runtime::current()->system_wq().spawn([](stream s, std::atomic<std::size_t>* e) -> cowq::task<void> {
      e->fetch_add(co_await echo(std::move(s)));
    }(std::move(c.value), echoed));
  }
}

using cowq::test::echo_client;

TEST(net, tcp_echo_round_trips_every_byte) {
  cowq::runtime rt;
  auto l = tcp_listener::bind(kLoopback);
  std::atomic<std::size_t> echoed{0};
  rt.system_wq().spawn(serve(&l, 1, &echoed));
  EXPECT_TRUE(cowq::sync_wait(rt, echo_client(l.local_endpoint(), pattern(1 << 20, 7))));
  ASSERT_TRUE(wait_until([&] { return echoed.load() == (1u << 20); }));
}

void run_many_connections(cowq::runtime& rt);

TEST(net, many_concurrent_connections_leak_no_descriptor) {
  const int fds_before = open_fds();
  {
    cowq::runtime rt;
    run_many_connections(rt);
  }
  EXPECT_EQ(open_fds(), fds_before);
}

void run_many_connections(cowq::runtime& rt) {
  auto l = tcp_listener::bind(kLoopback);
  constexpr int kConns = 100;
  std::atomic<std::size_t> echoed{0};
  rt.system_wq().spawn(serve(&l, kConns, &echoed));
  auto all = [&]() -> cowq::task<int> {
    std::vector<cowq::task<bool>> clients;
    for (int i = 0; i < kConns; ++i)
      clients.push_back(echo_client(l.local_endpoint(), pattern(20000 + i, static_cast<unsigned>(i))));
    int ok = 0;
    for (bool b : co_await cowq::when_all(std::move(clients))) ok += b ? 1 : 0;
    co_return ok;
  };
  EXPECT_EQ(cowq::sync_wait(rt, all()), kConns);
  // Every server-side connection finishes (the clients have closed).
  ASSERT_TRUE(wait_until([&] { return rt.stats().live_coroutines == 0; }));
}

TEST(net, recv_timeout_gives_timed_out) {
  cowq::runtime rt;
  auto l = tcp_listener::bind(kLoopback);
  auto t = [&]() -> cowq::task<std::error_code> {
    auto c = co_await connect(l.local_endpoint());
    EXPECT_TRUE(c);
    std::byte b[16];
    auto r = co_await c.value.recv(b, 30ms);  // nobody ever sends
    co_return r.error;
  };
  EXPECT_EQ(cowq::sync_wait(rt, t()), std::errc::timed_out);
}

TEST(net, accept_timeout_gives_timed_out_and_loses_no_connection) {
  cowq::runtime rt;
  auto l = tcp_listener::bind(kLoopback);
  auto t = [&]() -> cowq::task<std::string> {
    std::string out;
    // Twice: the first accept arms the listener's request (multishot where
    // the kernel has it), the second waits on it.
    for (int i = 0; i < 2; ++i) {
      auto a = co_await l.accept(30ms);  // nobody connects
      out += a.error == std::errc::timed_out ? "timed_out;" : "other;";
    }
    // A connection arriving after a timed-out accept waits for the next.
    auto c = co_await connect(l.local_endpoint());
    auto a = co_await l.accept(10s);
    out += c && a ? "accepted" : "lost";
    co_return out;
  };
  EXPECT_EQ(cowq::sync_wait(rt, t()), "timed_out;timed_out;accepted");
}

TEST(net, stop_token_cancels_recv_in_the_kernel) {
  cowq::runtime rt;
  auto l = tcp_listener::bind(kLoopback);
  std::stop_source src;
  std::atomic<bool> waiting{false};
  auto t = [&]() -> cowq::task<std::error_code> {
    auto c = co_await connect(l.local_endpoint());
    std::byte b[16];
    waiting = true;
    auto r = co_await c.value.recv(b, src.get_token());
    co_return r.error;
  };
  std::thread stopper([&] {
    ASSERT_TRUE(wait_until([&] { return waiting.load(); }));
    src.request_stop();
  });
  EXPECT_EQ(cowq::sync_wait(rt, t()), std::errc::operation_canceled);
  stopper.join();
}

TEST(net, cancel_racing_completion_resumes_exactly_once) {
  cowq::runtime rt;
  auto l = tcp_listener::bind(kLoopback);
  std::atomic<int> resumed{0}, completed{0}, cancelled{0};
  auto t = [&]() -> cowq::task<void> {
    auto c = co_await connect(l.local_endpoint());
    auto a = co_await l.accept();
    for (int i = 0; i < 300; ++i) {
      std::stop_source src;
      std::byte b[1];
      // The byte arrives and the stop is requested at about the same time.
      std::thread racer([&] {
        std::byte one{1};
        ::send(a.value.native_handle(), &one, 1, MSG_NOSIGNAL);
        src.request_stop();
      });
      auto r = co_await c.value.recv(b, src.get_token());
      resumed.fetch_add(1);
      (r ? completed : cancelled).fetch_add(1);
      racer.join();
      if (!r) {  // the byte is still there: drain it
        auto again = co_await c.value.recv(b);
        EXPECT_TRUE(again && again.value == 1);
      }
    }
  };
  cowq::sync_wait(rt, t());
  EXPECT_EQ(resumed.load(), 300);
  EXPECT_EQ(completed.load() + cancelled.load(), 300);
}

TEST(net, peer_reset_and_disappearance_give_errors) {
  cowq::runtime rt;
  auto l = tcp_listener::bind(kLoopback);
  auto t = [&]() -> cowq::task<void> {
    auto c = co_await connect(l.local_endpoint());
    auto a = co_await l.accept();
    // Abortive close: RST instead of FIN.
    linger lg{1, 0};
    ::setsockopt(c.value.native_handle(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    c.value = stream();
    std::byte b[64];
    auto r = co_await a.value.recv(b);
    EXPECT_TRUE(!r || r.value == 0);
    if (!r) {
      EXPECT_EQ(r.error.value(), ECONNRESET);
    }
    // Sending into the reset connection fails with an error, no SIGPIPE.
    auto big = pattern(1 << 20, 1);
    auto w = co_await a.value.send_all(big);
    EXPECT_FALSE(w);
    EXPECT_TRUE(w.error.value() == EPIPE || w.error.value() == ECONNRESET) << w.error.message();
  };
  cowq::sync_wait(rt, t());
}

TEST(net, half_close_reads_eof_and_can_still_send) {
  cowq::runtime rt;
  auto l = tcp_listener::bind(kLoopback);
  auto t = [&]() -> cowq::task<void> {
    auto c = co_await connect(l.local_endpoint());
    auto a = co_await l.accept();
    auto sh = co_await c.value.shutdown(SHUT_WR);
    EXPECT_TRUE(sh);
    std::byte b[8];
    auto r = co_await a.value.recv(b);
    EXPECT_TRUE(r);
    EXPECT_EQ(r.value, 0u);  // EOF
    auto w = co_await a.value.send_all(as_bytes("still here"));
    EXPECT_TRUE(w);
    std::byte back[10];
    std::size_t got = 0;
    while (got < sizeof back) {
      auto rr = co_await c.value.recv(std::span(back).subspan(got));
      if (!rr || rr.value == 0) break;
      got += rr.value;
    }
    EXPECT_EQ(std::string(reinterpret_cast<char*>(back), got), "still here");
  };
  cowq::sync_wait(rt, t());
}

TEST(net, accept_under_fd_exhaustion_errors_then_recovers) {
  cowq::runtime rt;
  auto l = tcp_listener::bind(kLoopback);
  std::atomic<std::size_t> echoed{0};
  rlimit old{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &old), 0);
  auto t = [&]() -> cowq::task<void> {
    // One established connection before the exhaustion.
    auto c1 = co_await connect(l.local_endpoint());
    auto a1 = co_await l.accept();
    EXPECT_TRUE(c1 && a1);
    cowq::runtime::current()->system_wq().spawn(
        [](stream s, std::atomic<std::size_t>* e) -> cowq::task<void> { e->fetch_add(co_await echo(std::move(s))); }(
            std::move(a1.value), &echoed));
    // The next client's socket is made now, so that connecting it later
    // needs no descriptor. Freeing one instead would race with any thread
    // of the process that opens a file for a moment.
    const int pending = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_GE(pending, 0);
    // Exhaust the descriptors.
    std::vector<int> hogs;
    for (;;) {
      int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (fd < 0) break;
      hogs.push_back(fd);
    }
    // Loopback completes the handshake at once, into the listen backlog;
    // accepting it needs the descriptor that is no longer there.
    const auto ep = l.local_endpoint();
    EXPECT_EQ(::connect(pending, static_cast<const sockaddr*>(ep.data()), static_cast<socklen_t>(ep.size())), 0)
        << std::strerror(errno);
    auto failed = co_await l.accept(30s);
    EXPECT_FALSE(failed);
    EXPECT_TRUE(failed.error.value() == EMFILE || failed.error.value() == ENFILE) << failed.error.message();
    // The existing connection still serves.
    auto w = co_await c1.value.send_all(as_bytes("ping"));
    EXPECT_TRUE(w);
    std::byte b[4];
    auto r = co_await c1.value.recv(b);
    EXPECT_TRUE(r && r.value == 4);
    // Descriptors free up: the waiting connection is accepted.
    for (int fd : hogs) ::close(fd);
    auto ok = co_await l.accept(30s);
    EXPECT_TRUE(ok) << ok.error.message();
    ::close(pending);
  };
  // Lowered so the exhaustion is quick; restored before the next test.
  rlimit low = old;
  low.rlim_cur = std::min<rlim_t>(old.rlim_cur, 256);
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
  cowq::sync_wait(rt, t());
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &old), 0);
}

TEST(net, udp_send_to_and_receive_from) {
  cowq::runtime rt;
  auto a = udp_socket::bind({asio::ip::make_address("127.0.0.1"), 0});
  auto b = udp_socket::bind({asio::ip::make_address("127.0.0.1"), 0});
  auto t = [&]() -> cowq::task<void> {
    auto s = co_await a.send_to(as_bytes("datagram"), b.local_endpoint());
    EXPECT_TRUE(s);
    EXPECT_EQ(s.value, 8u);
    std::byte buf[64];
    auto r = co_await b.receive_from(buf, 5s);
    EXPECT_TRUE(r);
    EXPECT_EQ(r.value.first, 8u);
    EXPECT_EQ(r.value.second, a.local_endpoint());
    EXPECT_EQ(std::string(reinterpret_cast<char*>(buf), 8), "datagram");
  };
  cowq::sync_wait(rt, t());
}

TEST(net, unix_stream_echo) {
  cowq::runtime rt;
  const std::string path = "/tmp/cowq-test-" + std::to_string(::getpid()) + ".sock";
  auto l = unix_listener::bind(path);
  auto t = [&]() -> cowq::task<bool> {
    cowq::runtime::current()->system_wq().spawn([](unix_listener* ul) -> cowq::task<void> {
      auto a = co_await ul->accept();
      if (a) co_await echo(std::move(a.value));
    }(&l));
    auto c = co_await connect_unix(path);
    if (!c) co_return false;
    auto w = co_await c.value.send_all(as_bytes("over a unix socket"));
    std::byte back[18];
    std::size_t got = 0;
    while (got < sizeof back) {
      auto r = co_await c.value.recv(std::span(back).subspan(got));
      if (!r || r.value == 0) break;
      got += r.value;
    }
    co_return w && std::string(reinterpret_cast<char*>(back), got) == "over a unix socket";
  };
  EXPECT_TRUE(cowq::sync_wait(rt, t()));
  ::unlink(path.c_str());
}

TEST(net, resolve_runs_off_the_workers) {
  cowq::runtime rt;
  auto t = []() -> cowq::task<io_value<std::vector<tcp_endpoint>>> { co_return co_await resolve("localhost", "8080"); };
  auto r = cowq::sync_wait(rt, t());
  ASSERT_TRUE(r) << r.error.message();
  ASSERT_FALSE(r.value.empty());
  EXPECT_TRUE(r.value.front().address().is_loopback());
  EXPECT_EQ(r.value.front().port(), 8080);
  auto bad = cowq::sync_wait(rt, []() -> cowq::task<io_value<std::vector<tcp_endpoint>>> {
    co_return co_await resolve("no-such-host.invalid", "80");
  }());
  EXPECT_FALSE(bad);
}

TEST(net, bind_failure_names_the_endpoint) {
  cowq::runtime rt;
  auto l = tcp_listener::bind(kLoopback);
  try {
    auto again = tcp_listener::bind(l.local_endpoint(), {.reuse_address = false});
    FAIL() << "second bind succeeded";
  } catch (const std::system_error& e) {
    EXPECT_NE(std::string(e.what()).find("127.0.0.1:"), std::string::npos) << e.what();
  }
}

TEST(net, one_multishot_request_serves_many_accepts) {
  if (!cowq::detail::ring::features().multishot_accept) GTEST_SKIP() << "kernel without multishot accept";
  cowq::runtime rt({.cpus = {0}});
  auto& p = *rt.impl().bound_[0][0];
  auto l = std::make_unique<tcp_listener>(tcp_listener::bind(kLoopback));
  auto t = [&]() -> cowq::task<int> {
    int accepted = 0;
    for (int i = 0; i < 5; ++i) {
      auto c = co_await connect(l->local_endpoint());
      auto a = co_await l->accept();
      if (c && a) ++accepted;
      // Between accepts the one request stays armed in the kernel.
      EXPECT_EQ(p.inflight_.load(), 1);
    }
    co_return accepted;
  };
  EXPECT_EQ(cowq::sync_wait(rt, t()), 5);
  l.reset();  // cancels the request; its last completion frees the state
  ASSERT_TRUE(wait_until([&] { return p.inflight_.load() == 0; }));
}

TEST(net, stop_token_cancels_an_accept_on_an_idle_pool) {
  cowq::runtime rt({.cpus = {0}});
  auto l = tcp_listener::bind(kLoopback);
  std::stop_source src;
  std::atomic<int> cancelled{0};
  rt.system_wq().spawn([](tcp_listener* ul, std::stop_token tok, std::atomic<int>* c) -> cowq::task<void> {
    auto a = co_await ul->accept(tok);
    if (a.error == std::errc::operation_canceled) c->fetch_add(1);
  }(&l, src.get_token(), &cancelled));
  // Wait until the accept is parked and every worker of the pool is idle.
  ASSERT_TRUE(wait_until([&] {
    auto s = rt.stats();
    return s.live_coroutines == 1 && s.pools[0].running == 0 && s.pools[0].pending == 0;
  }));
  src.request_stop();  // from a thread that is not a worker
  ASSERT_TRUE(wait_until([&] { return cancelled.load() == 1; }));
}

// The listener closes under a waiting accept, whose coroutine is then
// queued behind a busy item; a stop requested before it runs must not
// look at the listener's request state, freed with its last completion.
// (ASan reports the read if it does.)
TEST(net, a_stop_after_the_listener_closed_under_a_waiting_accept_touches_nothing_freed) {
  cowq::runtime rt({.cpus = {cowq::test::first_allowed_cpu()}});
  if (!cowq::detail::ring::features().multishot_accept)
    GTEST_SKIP() << "this kernel has no multishot accept";
  auto& p = *rt.impl().bound_[0][0];
  auto l = tcp_listener::bind(kLoopback);
  std::stop_source src;
  std::atomic<int> outcome{0};  // 1 cancelled, 2 anything else
  rt.system_wq().spawn([](tcp_listener* ul, std::stop_token tok, std::atomic<int>* o) -> cowq::task<void> {
    auto a = co_await ul->accept(tok);
    *o = a.error == std::errc::operation_canceled ? 1 : 2;
  }(&l, src.get_token(), &outcome));
  ASSERT_TRUE(wait_until([&] {
    auto s = rt.stats();
    return s.live_coroutines == 1 && s.pools[0].running == 0 && s.pools[0].pending == 0;
  }));
  std::atomic<bool> hold{true};
  std::atomic<bool> holding{false};
  rt.system_wq().spawn([](std::atomic<bool>* hold, std::atomic<bool>* holding) -> cowq::task<void> {
    *holding = true;
    while (hold->load()) {
    }
    co_return;
  }(&hold, &holding));
  ASSERT_TRUE(wait_until([&] { return holding.load(); }));
  l.close();
  // The request's last completion reaped (by the idle poller): the state
  // is gone, and the accept waits behind the busy item.
  ASSERT_TRUE(wait_until([&] { return p.inflight_.load() == 0; }));
  src.request_stop();
  hold = false;
  ASSERT_TRUE(wait_until([&] { return outcome.load() != 0; }));
  EXPECT_EQ(outcome.load(), 1);
}

TEST(net, shutdown_cancels_a_pending_accept) {
  std::atomic<int> cancelled{0};
  {
    cowq::runtime rt;
    auto l = tcp_listener::bind(kLoopback);
    rt.system_wq().spawn([](tcp_listener* ul, std::atomic<int>* c) -> cowq::task<void> {
      auto a = co_await ul->accept();
      if (a.error == std::errc::operation_canceled) c->fetch_add(1);
    }(&l, &cancelled));
    rt.system_wq().flush();
    rt.shutdown();
  }
  EXPECT_EQ(cancelled.load(), 1);
}

}  // namespace
