// Blocking-aware concurrency management: marked regions, the watchdog's
// detection of unmarked blocking and CPU hogs, reaping, and the rescuer.
#include <cowq/cowq.hpp>
#include <cowq/net.hpp>

#include "log/log.hpp"
#include "pool/pool.hpp"
#include "pool/watchdog.hpp"
#include "runtime/runtime_impl.hpp"
#include "uring/ring.hpp"
#include "test_util.hpp"

#include <gtest/gtest.h>
#include <spdlog/sinks/ringbuffer_sink.h>

#include <atomic>
#include <condition_variable>
#include <fcntl.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <mutex>
#include <thread>
#include <time.h>
#include <unistd.h>
#include <vector>

namespace {

using namespace std::chrono_literals;
using cowq::test::first_allowed_cpu;
using cowq::test::wait_until;

cowq::detail::pool& bound_pool(cowq::runtime& rt, int cpu_index) {
  return *rt.impl().bound_[static_cast<std::size_t>(cpu_index)][0];
}

cowq::pool_stats pool0(cowq::runtime& rt) { return rt.stats().pools[0]; }

// A ready item: sets *flag when it runs.
cowq::task<void> set_flag(std::atomic<bool>* flag) {
  *flag = true;
  co_return;
}

// Three kinds of blocking nobody told the runtime about, each released by
// the test: nanosleep in a loop on a flag, a read on an empty pipe, and a
// std::mutex the test holds.
struct blockers {
  std::atomic<bool> release{false};
  int pipe_fds[2] = {-1, -1};
  std::mutex held;
  std::atomic<int> entered{0};
  std::atomic<int> returned{0};

  blockers() {
    EXPECT_EQ(::pipe(pipe_fds), 0);
    held.lock();
  }
  ~blockers() {
    ::close(pipe_fds[0]);
    ::close(pipe_fds[1]);
  }

  void nanosleep_until_released() {
    while (!release.load()) {
      const timespec ts{0, 1'000'000};
      ::nanosleep(&ts, nullptr);
    }
  }
  void read_pipe() {
    char c;
    EXPECT_EQ(::read(pipe_fds[0], &c, 1), 1);
  }
  void lock_mutex() {
    std::lock_guard g(held);
  }
  void run(int kind) {
    entered.fetch_add(1);
    switch (kind) {
      case 0: nanosleep_until_released(); break;
      case 1: read_pipe(); break;
      default: lock_mutex(); break;
    }
    returned.fetch_add(1);
  }
  void release_all() {
    release = true;
    EXPECT_EQ(::write(pipe_fds[1], "x", 1), 1);
    held.unlock();
  }
};

// Spawns the three blockers on the runtime's only CPU, naive or marked.
void spawn_blockers(cowq::runtime& rt, blockers& b, bool marked) {
  for (int kind = 0; kind < 3; ++kind)
    rt.system_wq().spawn(cowq::test::run([&b, kind, marked]() -> cowq::task<void> {
      if (marked)
        co_await cowq::blocking([&] { b.run(kind); });
      else
        b.run(kind);
    }));
}

// A ready coroutine queued behind the blockers must run while they block.
void expect_ready_runs_before_blockers_return(cowq::runtime& rt, blockers& b) {
  ASSERT_TRUE(wait_until([&] { return b.entered.load() == 3; }));
  std::atomic<bool> ran{false};
  rt.system_wq().spawn(set_flag(&ran));
  ASSERT_TRUE(wait_until([&] { return ran.load(); }));
  EXPECT_EQ(b.returned.load(), 0) << "the ready coroutine ran only after a blocker returned";
  b.release_all();
  ASSERT_TRUE(wait_until([&] { return b.returned.load() == 3; }));
}

TEST(blocking, unmarked_blocking_syscalls_do_not_hold_back_the_pool) {
  cowq::runtime rt({.cpus = {0}, .idle_timeout = 200ms});
  blockers b;
  spawn_blockers(rt, b, /*marked=*/false);
  expect_ready_runs_before_blockers_return(rt, b);
  // The watchdog found them: each blocker, or the ready item, waited behind
  // one that had not told anyone.
  EXPECT_GE(pool0(rt).blocked_detected, 1u);

  // The surplus goes idle and, beyond the reserve, is reaped.
  auto& p = bound_pool(rt, 0);
  ASSERT_TRUE(wait_until([&] {
    std::lock_guard g(p.lock_);
    return p.nr_workers_ <= 2 && p.nr_running_ <= 1;
  }));
  auto s = pool0(rt);
  EXPECT_GE(s.peak_workers, 4);  // three blocked and one for the ready item
  EXPECT_GE(s.workers_destroyed, 1u);
  EXPECT_LE(s.running, 1);
}

// Completions must not wait behind blocked workers either: with every
// runner stuck in an item and the poller's worker among them, the watchdog
// reaps the ring itself.
TEST(blocking, io_completions_arrive_while_every_runner_is_blocked) {
  cowq::runtime rt({.cpus = {first_allowed_cpu()}});
  int gate[2];
  ASSERT_EQ(::pipe(gate), 0);
  std::atomic<int> entered{0}, returned{0};
  // Blocks in read() on the gate, which never wakes on its own.
  auto blocker = [&]() -> cowq::task<void> {
    entered.fetch_add(1);
    char c;
    EXPECT_EQ(::read(gate[0], &c, 1), 1);
    returned.fetch_add(1);
    co_return;
  };
  auto release = [&](int n) {
    for (int i = 0; i < n; ++i) EXPECT_EQ(::write(gate[1], "x", 1), 1);
  };
  for (int round = 0; round < 12; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    const int n = 1 + round % 4;
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    std::atomic<bool> received{false};
    const auto in_flight_before = pool0(rt).io_in_flight;
    rt.system_wq().spawn(cowq::test::recv_one_byte(sv[0], received));
    ASSERT_TRUE(wait_until([&] { return pool0(rt).io_in_flight > in_flight_before; }));
    entered = 0;
    returned = 0;
    for (int i = 0; i < n; ++i) rt.system_wq().spawn(cowq::test::run(blocker));
    ASSERT_TRUE(wait_until([&] { return entered.load() == n; }));
    ASSERT_EQ(::write(sv[1], "x", 1), 1);
    const bool got = wait_until([&] { return received.load(); }, 10s);
    EXPECT_TRUE(got);
    EXPECT_EQ(returned.load(), 0) << "the completion waited for a blocker to return";
    release(n);
    ASSERT_TRUE(wait_until([&] { return returned.load() == n && received.load(); }));
    ::close(sv[1]);
  }
  ::close(gate[0]);
  ::close(gate[1]);
}

// The state a burst leaves behind: the idle timer retires the oldest idle
// worker, the poller, and its heir is the most recently idle. The next item
// then runs on the poller itself, the ring has nobody in it, and the other
// idle workers are parked on their futexes. Nothing is queued, so no queuer
// wakes the sleeping watchdog; should that item block unannounced, what
// completes, comes due or was prepared meanwhile must still get through.
enum class arrives {
  completion,      // a recv in flight before the item
  timer,           // a sleeper armed before the item
  delayed_work,    // delayed work queued from outside during the block
  prepared_recv,   // a recv the blocked item prepared itself (when_all)
  prepared_accept, // the same with the listener's multishot accept
};

void poller_blocks_in_an_item(arrives what) {
  cowq::runtime rt({.cpus = {first_allowed_cpu()}, .idle_timeout = 100ms});
  auto& p = bound_pool(rt, 0);
  // Probed when the runtime started.
  if (what == arrives::prepared_accept && !cowq::detail::ring::features().multishot_accept)
    GTEST_SKIP() << "this kernel has no multishot accept: each accept is an ordinary request";
  {
    // The burst: marked blockers, each making room for another worker.
    blockers b;
    for (int i = 0; i < 4; ++i)
      rt.system_wq().spawn(cowq::test::run([&b]() -> cowq::task<void> {
        co_await cowq::blocking([&] { b.run(0); });
      }));
    ASSERT_TRUE(wait_until([&] { return b.entered.load() == 4; }));
    b.release_all();
    ASSERT_TRUE(wait_until([&] { return b.returned.load() == 4; }));
  }
  ASSERT_TRUE(wait_until([&] {
    std::lock_guard g(p.lock_);
    return p.workers_destroyed_ >= 1 && p.nr_running_ == 0 && p.nr_idle_ >= 2 &&
           p.poller_ != nullptr && p.poller_ == p.idle_.back() && p.timers_.empty();
  })) << "the idle timer did not leave the poller as the most recently idle worker";
  ASSERT_TRUE(wait_until([&] { return rt.impl().watchdog_->asleep(); }));

  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  int gate[2];
  ASSERT_EQ(::pipe(gate), 0);
  std::atomic<bool> done{false}, entered{false}, returned{false};
  std::atomic<cowq::detail::worker*> ran_on{nullptr};
  auto block = [](int fd, std::atomic<bool>& entered, std::atomic<bool>& returned,
                  std::atomic<cowq::detail::worker*>& ran_on) -> cowq::task<void> {
    ran_on = cowq::detail::current_worker();
    entered = true;
    char c;
    EXPECT_EQ(::read(fd, &c, 1), 1);
    returned = true;
    co_return;
  };

  if (what == arrives::completion)
    rt.system_wq().spawn(cowq::test::recv_one_byte(sv[0], done));
  else if (what == arrives::timer)
    // Due well after the blocker below has started, even under a
    // sanitizer on a loaded machine.
    rt.system_wq().spawn([](std::atomic<bool>& done) -> cowq::task<void> {
      co_await cowq::sleep_for(500ms);
      done = true;
    }(done));
  // Right before the blocker is queued: the poller, asleep in the ring, is
  // the worker it will go to.
  cowq::detail::worker* poller = nullptr;
  ASSERT_TRUE(wait_until([&] {
    std::lock_guard g(p.lock_);
    const bool armed = what == arrives::completion ? p.inflight_.load() == 1
                       : what == arrives::timer    ? !p.timers_.empty()
                                                   : true;
    poller = p.poller_;
    return armed && p.nr_running_ == 0 && p.poller_ != nullptr &&
           p.poller_ == p.idle_.back() && p.poller_->polling_.load();
  }));

  const bool prepared = what == arrives::prepared_recv || what == arrives::prepared_accept;
  auto listener = cowq::net::tcp_listener::bind({asio::ip::make_address("127.0.0.1"), 0});
  auto accept_one = [](cowq::net::tcp_listener& l, std::atomic<bool>& done) -> cowq::task<void> {
    auto s = co_await l.accept();
    EXPECT_TRUE(s) << s.error.message();
    done = true;
  };
  if (prepared)
    // The first child prepares its request and suspends; the second blocks
    // in the same item, before the worker's loop could submit the request.
    rt.system_wq().spawn([](cowq::task<void> a, cowq::task<void> b) -> cowq::task<void> {
      co_await cowq::when_all(std::move(a), std::move(b));
    }(what == arrives::prepared_recv ? cowq::test::recv_one_byte(sv[0], done)
                                     : accept_one(listener, done),
      block(gate[0], entered, returned, ran_on)));
  else
    rt.system_wq().spawn(block(gate[0], entered, returned, ran_on));
  ASSERT_TRUE(wait_until([&] { return entered.load(); }));
  // Who sleeps in the ring now is no proof either way: a watchdog awake for
  // the request or the timer may already have found the block and handed
  // the ring to another worker.
  if (!prepared) {
    EXPECT_EQ(ran_on.load(), poller) << "the blocked item was not run by the poller";
  }

  cowq::delayed_work later([&] { done = true; });
  if (what == arrives::delayed_work)
    cowq::queue_delayed_work_on(first_allowed_cpu(), rt.system_wq(), later, 20ms);
  if (what == arrives::completion || what == arrives::prepared_recv) {
    ASSERT_EQ(::write(sv[1], "x", 1), 1);
  }
  // The connection is made in the kernel's backlog whether or not the
  // accept request got there; only the request completes the accept.
  int client = -1;
  if (what == arrives::prepared_accept) {
    client = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const auto ep = listener.local_endpoint();
    ASSERT_EQ(::connect(client, ep.data(), static_cast<socklen_t>(ep.size())), 0);
  }
  EXPECT_TRUE(wait_until([&] { return done.load(); }, 10s));
  EXPECT_FALSE(returned.load()) << "it waited for the blocked item to return";
  ASSERT_EQ(::write(gate[1], "x", 1), 1);
  ASSERT_TRUE(wait_until([&] { return returned.load() && done.load(); }));
  // sv[0] belongs to the recv's stream, which closes it, where there is one.
  if (what == arrives::timer || what == arrives::delayed_work || what == arrives::prepared_accept)
    ::close(sv[0]);
  for (int fd : {sv[1], gate[0], gate[1], client})
    if (fd >= 0) ::close(fd);
}

TEST(blocking, a_poller_that_blocks_in_an_item_does_not_strand_completions) {
  poller_blocks_in_an_item(arrives::completion);
}

TEST(blocking, a_poller_that_blocks_in_an_item_does_not_strand_timers) {
  poller_blocks_in_an_item(arrives::timer);
}

TEST(blocking, a_poller_that_blocks_in_an_item_does_not_strand_delayed_work_queued_meanwhile) {
  poller_blocks_in_an_item(arrives::delayed_work);
}

TEST(blocking, a_request_prepared_before_an_unannounced_block_in_the_same_item_is_submitted) {
  poller_blocks_in_an_item(arrives::prepared_recv);
}

TEST(blocking, an_accept_armed_before_an_unannounced_block_in_the_same_item_is_submitted) {
  poller_blocks_in_an_item(arrives::prepared_accept);
}

TEST(blocking, marked_regions_need_no_watchdog) {
  cowq::runtime rt({.cpus = {0}, .idle_timeout = 200ms, .watchdog = {.detect_blocking = false}});
  blockers b;
  spawn_blockers(rt, b, /*marked=*/true);
  expect_ready_runs_before_blockers_return(rt, b);
  auto s = pool0(rt);
  EXPECT_EQ(s.blocking_regions, 3u);
  EXPECT_EQ(s.blocked_detected, 0u);

  auto& p = bound_pool(rt, 0);
  ASSERT_TRUE(wait_until([&] {
    std::lock_guard g(p.lock_);
    return p.nr_workers_ <= 2 && p.nr_running_ <= 1;
  }));
}

TEST(blocking, without_detection_unmarked_blocking_stalls_the_pool) {
  // What other executors do: the proof that the watchdog is what helps.
  cowq::runtime rt({.cpus = {0}, .watchdog = {.detect_blocking = false}});
  blockers b;
  rt.system_wq().spawn(cowq::test::run([&]() -> cowq::task<void> {
    b.run(1);  // the pipe
    co_return;
  }));
  ASSERT_TRUE(wait_until([&] { return b.entered.load() == 1; }));
  std::atomic<bool> ran{false};
  rt.system_wq().spawn(set_flag(&ran));
  // Let the watchdog tick many times (it still runs, for maydays); nothing
  // may take the waiting item while the only counted worker is blocked.
  const auto ticks = rt.impl().watchdog_->ticks();
  ASSERT_TRUE(wait_until([&] { return rt.impl().watchdog_->ticks() >= ticks + 40; }));
  EXPECT_FALSE(ran.load());
  b.release_all();
  ASSERT_TRUE(wait_until([&] { return ran.load(); }));
}

TEST(blocking, scopes_nest_and_do_nothing_off_a_worker) {
  cowq::runtime rt({.cpus = {0}, .watchdog = {.detect_blocking = false}});
  { cowq::blocking_scope off_worker; }  // the test thread: nothing happens
  auto& p = bound_pool(rt, 0);
  int running_inside = -1;
  int running_after = -1;
  cowq::sync_wait(rt, cowq::test::run([&]() -> cowq::task<void> {
    {
      cowq::blocking_scope outer;
      cowq::blocking_scope inner;
      std::lock_guard g(p.lock_);
      running_inside = p.nr_running_;
    }
    std::lock_guard g(p.lock_);
    running_after = p.nr_running_;
    co_return;
  }));
  EXPECT_EQ(running_inside, 0);
  EXPECT_EQ(running_after, 1);
  EXPECT_EQ(pool0(rt).blocking_regions, 1u);
  // blocking(fn) gives fn's result and its exception.
  EXPECT_EQ(cowq::sync_wait(rt, []() -> cowq::task<int> {
              co_return co_await cowq::blocking([] { return 42; });
            }()),
            42);
  EXPECT_THROW(cowq::sync_wait(rt, []() -> cowq::task<int> {
                 co_return co_await cowq::blocking([]() -> int { throw std::runtime_error("x"); });
               }()),
               std::runtime_error);
}

TEST(blocking, a_cpu_hog_is_reported_once_and_does_not_starve_the_pool) {
  auto sink = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(64);
  cowq::detail::log().sinks().push_back(sink);
  {
    cowq::runtime rt({.cpus = {0}, .watchdog = {.cpu_hog_threshold = 5ms}});
    std::atomic<bool> release{false};
    std::atomic<bool> hogging{false};
    std::atomic<int> hogs_done{0};
    auto hog = [&]() -> cowq::task<void> {
      hogging = true;
      while (!release.load()) {
      }  // spins: running, never sleeping
      hogs_done.fetch_add(1);
      co_return;
    };
    rt.system_wq().spawn(cowq::test::run(hog));
    ASSERT_TRUE(wait_until([&] { return hogging.load(); }));
    std::atomic<bool> ran{false};
    rt.system_wq().spawn(set_flag(&ran));
    ASSERT_TRUE(wait_until([&] { return ran.load(); }));
    EXPECT_EQ(hogs_done.load(), 0);
    EXPECT_EQ(pool0(rt).hogs_detected, 1u);
    release = true;
    ASSERT_TRUE(wait_until([&] { return hogs_done.load() == 1; }));
    // The same coroutine hogging again, with an item waiting behind it (the
    // watchdog looks only while work waits): counted, not logged again.
    release = false;
    hogging = false;
    ran = false;
    rt.system_wq().spawn(cowq::test::run(hog));
    ASSERT_TRUE(wait_until([&] { return hogging.load(); }));
    rt.system_wq().spawn(set_flag(&ran));
    ASSERT_TRUE(wait_until([&] { return ran.load(); }));
    EXPECT_EQ(pool0(rt).hogs_detected, 2u);
    release = true;
    ASSERT_TRUE(wait_until([&] { return hogs_done.load() == 2; }));
    rt.shutdown();
  }
  auto& sinks = cowq::detail::log().sinks();
  sinks.erase(std::find(sinks.begin(), sinks.end(), sink));
  int reports = 0;
  for (auto& line : sink->last_formatted())
    if (line.find("without sleeping") != std::string::npos) ++reports;
  EXPECT_EQ(reports, 1);
}

// The watchdog reads a thread's state through a descriptor it keeps: one
// open per thread, a look with no free descriptor left still answers, and a
// thread that exited leaves nothing open behind.
TEST(blocking, the_watchdog_keeps_one_stat_file_per_thread_and_needs_no_free_descriptor) {
  cowq::detail::task_stat_files files;
  std::mutex m;
  std::condition_variable cv;
  bool done = false;
  std::atomic<pid_t> tid{0};
  std::thread sleeper([&] {
    tid = cowq::test::this_tid();
    std::unique_lock lk(m);
    cv.wait(lk, [&] { return done; });
  });
  ASSERT_TRUE(wait_until([&] { return tid.load() != 0 && files.state(tid) == 'S'; }));
  EXPECT_EQ(files.open_files(), 1u);
  const int fds = cowq::test::open_fds();
  for (int i = 0; i < 100; ++i) EXPECT_EQ(files.state(tid), 'S');
  EXPECT_EQ(cowq::test::open_fds(), fds);

  // Out of descriptors: the kept one still answers.
  rlimit old{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &old), 0);
  rlimit low = old;
  low.rlim_cur = std::min<rlim_t>(old.rlim_cur, 256);
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
  std::vector<int> hogs;
  for (int fd; (fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;) hogs.push_back(fd);
  const char exhausted = files.state(tid);
  for (int fd : hogs) ::close(fd);
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &old), 0);
  EXPECT_EQ(exhausted, 'S');

  {
    std::lock_guard g(m);
    done = true;
  }
  cv.notify_one();
  sleeper.join();
  // join() returns once the thread is done with user space; the kernel may
  // show it a little longer, exiting.
  ASSERT_TRUE(wait_until([&] { return files.state(tid) == '?'; }));
  EXPECT_EQ(files.open_files(), 0u);
  EXPECT_EQ(cowq::test::open_fds(), fds - 1);

  // A file nobody looks at any more is closed after a while.
  EXPECT_EQ(files.state(cowq::test::this_tid()), 'R');
  EXPECT_EQ(files.open_files(), 1u);
  for (int i = 0; i < 1000; ++i) files.tick();
  EXPECT_EQ(files.open_files(), 0u);
}

TEST(blocking, an_ordered_workqueue_keeps_its_order_when_an_item_blocks) {
  cowq::runtime rt({.cpus = {0}});
  auto& ordered = rt.alloc_workqueue("strand", cowq::wq::ordered);
  blockers b;
  std::vector<int> order;  // the strand serialises its items
  for (int i = 0; i < 5; ++i)
    ordered.spawn(cowq::test::run([&, i]() -> cowq::task<void> {
      if (i == 0) b.run(1);  // blocks on the pipe
      order.push_back(i);
      co_return;
    }));
  ASSERT_TRUE(wait_until([&] { return b.entered.load() == 1; }));
  // Another item on the same unbound pool runs past the blocked one...
  std::atomic<bool> ran{false};
  rt.system_unbound_wq().spawn(set_flag(&ran));
  ASSERT_TRUE(wait_until([&] { return ran.load(); }));
  // ...but the strand's next items wait for the blocked one.
  EXPECT_EQ(b.returned.load(), 0);
  b.release_all();
  ordered.flush();
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4}));
}

// An item that can finish only once a later item of the same workqueue has
// run, on a pool that cannot create the worker the later item needs.
struct dependent_pair {
  std::atomic<bool> first_started{false};
  std::atomic<bool> second_ran{false};
  std::atomic<bool> first_done{false};

  void queue(cowq::workqueue& wq) {
    wq.spawn(cowq::test::run([this]() -> cowq::task<void> {
      first_started = true;
      co_await cowq::blocking([&] { EXPECT_TRUE(wait_until([&] { return second_ran.load(); })); });
      first_done = true;
    }));
    EXPECT_TRUE(wait_until([&] { return first_started.load(); }));
    wq.spawn(set_flag(&second_ran));
  }
};

// Leaves the CPU's pool exactly one idle worker, the others blocked in
// marked regions until release.
void occupy_spares(cowq::runtime& rt, std::atomic<bool>& release) {
  auto& p = bound_pool(rt, 0);
  int spares = 0;
  ASSERT_TRUE(wait_until([&] {
    std::lock_guard g(p.lock_);
    spares = p.nr_idle_ - 1;
    return p.nr_starting_ == 0 && spares >= 0;
  }));
  std::atomic<int> taken{0};
  for (int i = 0; i < spares; ++i)
    rt.system_wq().spawn(cowq::test::run([&]() -> cowq::task<void> {
      taken.fetch_add(1);
      co_await cowq::blocking([&] { EXPECT_TRUE(wait_until([&] { return release.load(); })); });
    }));
  ASSERT_TRUE(wait_until([&] { return taken.load() == spares; }));
}

TEST(blocking, the_rescuer_runs_guaranteed_progress_items_when_no_worker_can_be_created) {
  cowq::runtime rt({.cpus = {0}});
  auto& wq = rt.alloc_workqueue("reclaim", cowq::wq::guaranteed_progress);
  rt.impl().fail_thread_creation_ = true;
  std::atomic<bool> release{false};
  occupy_spares(rt, release);

  dependent_pair pair;
  pair.queue(wq);
  ASSERT_TRUE(wait_until([&] { return pair.first_done.load(); }));
  auto s = rt.stats();
  EXPECT_GE(s.pools[0].maydays, 1u);
  EXPECT_GE(s.pools[0].rescued, 1u);
  EXPECT_GE(s.find_workqueue("reclaim")->rescued, 1u);
  EXPECT_GE(s.pools[0].creation_failures, 1u);
  rt.impl().fail_thread_creation_ = false;
  release = true;
}

TEST(blocking, a_plain_workqueue_waits_and_recovers_when_creation_succeeds_again) {
  cowq::runtime rt({.cpus = {0}});
  auto& wq = rt.alloc_workqueue("plain");
  rt.impl().fail_thread_creation_ = true;
  std::atomic<bool> release{false};
  occupy_spares(rt, release);

  dependent_pair pair;
  pair.queue(wq);
  // The watchdog keeps retrying; the second item must wait meanwhile.
  const auto failures = pool0(rt).creation_failures;
  ASSERT_TRUE(wait_until([&] { return pool0(rt).creation_failures >= failures + 3; }));
  EXPECT_FALSE(pair.second_ran.load());
  EXPECT_EQ(pool0(rt).rescued, 0u);
  rt.impl().fail_thread_creation_ = false;
  ASSERT_TRUE(wait_until([&] { return pair.first_done.load(); }));
  release = true;
}

}  // namespace
