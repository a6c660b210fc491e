// The runtime: CPU discovery and restriction, stats, shutdown.
#include <cowq/cowq.hpp>

#include "runtime/runtime_impl.hpp"
#include "test_util.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

using namespace std::chrono_literals;
using cowq::test::wait_until;

namespace {

TEST(cpu_list, parses_the_kernel_format) {
  EXPECT_EQ(cowq::parse_cpu_list("0-3,6"), (std::vector<int>{0, 1, 2, 3, 6}));
  EXPECT_EQ(cowq::parse_cpu_list("5"), (std::vector<int>{5}));
  EXPECT_EQ(cowq::parse_cpu_list("1,1,0"), (std::vector<int>{0, 1}));
  EXPECT_EQ(cowq::parse_cpu_list(""), std::vector<int>{});
  EXPECT_THROW(cowq::parse_cpu_list("3-1"), std::invalid_argument);
  EXPECT_THROW(cowq::parse_cpu_list("a"), std::invalid_argument);
  EXPECT_THROW(cowq::parse_cpu_list("1,,x"), std::invalid_argument);
  EXPECT_THROW(cowq::parse_cpu_list("99999"), std::invalid_argument);
}

TEST(runtime, uses_the_affinity_mask) {
  cpu_set_t allowed;
  ASSERT_EQ(::sched_getaffinity(0, sizeof allowed, &allowed), 0);
  cowq::runtime rt;
  EXPECT_EQ(static_cast<int>(rt.cpus().size()), CPU_COUNT(&allowed));
  for (int c : rt.cpus()) EXPECT_TRUE(CPU_ISSET(c, &allowed));
  EXPECT_GE(rt.numa_nodes(), 1);
  auto s = rt.stats();
  // Two pools per CPU plus two per node.
  EXPECT_EQ(s.pools.size(), 2 * rt.cpus().size() + 2 * static_cast<std::size_t>(rt.numa_nodes()));
}

TEST(runtime, respects_a_narrowed_affinity_mask) {
  cpu_set_t allowed;
  ASSERT_EQ(::sched_getaffinity(0, sizeof allowed, &allowed), 0);
  if (CPU_COUNT(&allowed) < 2) GTEST_SKIP() << "needs two CPUs";
  int last = -1;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &allowed)) last = c;
  // As `taskset -c LAST` would: a thread whose mask is one CPU.
  std::vector<int> seen;
  std::thread t([&] {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(last, &one);
    ASSERT_EQ(::sched_setaffinity(0, sizeof one, &one), 0);
    cowq::runtime rt;
    seen.assign(rt.cpus().begin(), rt.cpus().end());
  });
  t.join();
  EXPECT_EQ(seen, std::vector<int>{last});
}

TEST(runtime, restricted_to_a_cpu_list) {
  cowq::runtime rt({.cpus = {0}});
  ASSERT_EQ(rt.cpus().size(), 1u);
  auto s = rt.stats();
  std::vector<std::string> names;
  for (auto& p : s.pools) names.push_back(p.name);
  EXPECT_EQ(names, (std::vector<std::string>{"0", "0H", "u0", "u0H"}));
  EXPECT_THROW(cowq::runtime({.cpus = {CPU_SETSIZE - 1}}), std::invalid_argument);
  EXPECT_THROW(cowq::runtime({.max_workers_per_pool = 1}), std::invalid_argument);
  EXPECT_THROW(cowq::runtime({.idle_spin = std::chrono::microseconds(-1)}), std::invalid_argument);
}

TEST(runtime, stats_count_items_and_workers) {
  cowq::runtime rt({.cpus = {0}});
  constexpr int kN = 1000;
  for (int i = 0; i < kN; ++i) rt.system_wq().spawn([]() -> cowq::task<void> { co_return; }());
  rt.system_wq().drain();
  // The last worker goes idle just after its item is accounted for.
  ASSERT_TRUE(wait_until([&] { return rt.stats().pools[0].running == 0; }));
  auto s = rt.stats();
  EXPECT_EQ(s.pools[0].items_executed, static_cast<std::uint64_t>(kN));
  EXPECT_GE(s.pools[0].workers_created, 1u);
  auto* ev = s.find_workqueue("events");
  ASSERT_NE(ev, nullptr);
  EXPECT_EQ(ev->queued, static_cast<std::uint64_t>(kN));
  EXPECT_EQ(ev->completed, static_cast<std::uint64_t>(kN));
  EXPECT_EQ(s.live_coroutines, 0);
  EXPECT_NE(cowq::to_string(s).find("events"), std::string::npos);
}

TEST(runtime, shutdown_runs_everything_queued_and_loses_nothing) {
  std::atomic<int> ran{0};
  std::atomic<int> delayed_ran{0};
  cowq::delayed_work late([&] { delayed_ran.fetch_add(1); });
  {
    cowq::runtime rt;
    auto& wq = rt.alloc_workqueue("busy", cowq::wq_flags::none, 4);
    for (int i = 0; i < 20000; ++i)
      wq.spawn(cowq::test::run([&]() -> cowq::task<void> {
        co_await cowq::yield();
        ran.fetch_add(1);
      }));
    cowq::queue_delayed_work(rt.system_wq(), late, 1h);
    rt.shutdown();
    EXPECT_EQ(ran.load(), 20000);
    EXPECT_EQ(delayed_ran.load(), 1);
    EXPECT_FALSE(late.pending());
    // Queueing after shutdown is a clear error.
    EXPECT_THROW(wq.spawn([]() -> cowq::task<void> { co_return; }()), std::logic_error);
    cowq::work w([] {});
    EXPECT_THROW(cowq::queue_work(rt.system_wq(), w), std::logic_error);
    rt.shutdown();  // idempotent
  }
  // No worker thread outlives the runtime.
  EXPECT_EQ(cowq::runtime::current(), nullptr);
}

TEST(runtime, shutdown_from_a_worker_is_refused) {
  cowq::runtime rt;
  auto t = [&]() -> cowq::task<bool> {
    try {
      rt.shutdown();
    } catch (const std::logic_error&) {
      co_return true;
    }
    co_return false;
  };
  EXPECT_TRUE(cowq::sync_wait(rt, t()));
}

// In a child: makes io_uring_setup fail with EPERM, as a container's
// seccomp profile does, then reports what constructing a runtime said.
std::string runtime_error_under_seccomp() {
  int fds[2];
  if (::pipe(fds) != 0) return "pipe failed";
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    sock_fprog prog{static_cast<unsigned short>(sizeof filter / sizeof filter[0]), filter};
    std::string msg = "no error";
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
      msg = "seccomp unavailable";
    } else {
      try {
        cowq::runtime rt;
      } catch (const std::system_error& e) {
        msg = e.what();
      }
    }
    [[maybe_unused]] auto n = ::write(fds[1], msg.data(), msg.size());
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string out;
  char buf[512];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) out.append(buf, static_cast<std::size_t>(n));
  ::close(fds[0]);
  ::waitpid(pid, nullptr, 0);
  return out;
}

TEST(runtime, refused_io_uring_is_a_clear_error) {
  const std::string msg = runtime_error_under_seccomp();
  if (msg == "seccomp unavailable") GTEST_SKIP() << "cannot install a seccomp filter here";
  EXPECT_NE(msg.find("io_uring is not permitted"), std::string::npos) << msg;
  EXPECT_NE(msg.find("seccomp"), std::string::npos) << msg;
}

TEST(runtime, suspended_detached_coroutines_are_reported_at_shutdown) {
  static std::coroutine_handle<> parked;
  struct never {
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) const noexcept { parked = h; }
    void await_resume() const noexcept {}
  };
  std::int64_t live = 0;
  {
    cowq::runtime rt;
    rt.system_wq().spawn([]() -> cowq::task<void> { co_await never{}; }());
    ASSERT_TRUE(wait_until([&] { return rt.stats().find_workqueue("events")->completed == 1; }));
    live = rt.stats().live_coroutines;
  }
  EXPECT_EQ(live, 1);
  // The runtime leaves the frame alone; its owner may free it.
  parked.destroy();
}

}  // namespace
