// Concurrency management of the pools: nr_running, waking, the manager
// role, the nr_running hooks, idle reaping, names and pinning.
#include <cowq/cowq.hpp>
#include <cowq/net.hpp>

#include "pool/pool.hpp"
#include "uring/ring.hpp"
#include "runtime/runtime_impl.hpp"
#include "test_util.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <dirent.h>
#include <fstream>
#include <mutex>
#include <sched.h>
#include <set>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

using namespace std::chrono_literals;
using cowq::test::wait_until;

namespace {

cowq::detail::pool& bound_pool(cowq::runtime& rt, int cpu_index, bool high = false) {
  return *rt.impl().bound_[static_cast<std::size_t>(cpu_index)][high ? 1 : 0];
}

int nr_running(cowq::detail::pool& p) {
  std::lock_guard g(p.lock_);
  return p.nr_running_;
}

// Checks the pool's counters against its worker list.
void expect_consistent(cowq::detail::pool& p) {
  std::lock_guard g(p.lock_);
  int counted = 0, idle = 0;
  for (auto* w : p.workers_) {
    counted += w->counted_ ? 1 : 0;
    idle += w->idle_ ? 1 : 0;
    EXPECT_FALSE(w->idle_ && w->counted_) << w->name_;
  }
  EXPECT_EQ(counted, p.nr_running_);
  EXPECT_EQ(idle, p.nr_idle_);
  EXPECT_EQ(static_cast<int>(p.idle_.size()), p.nr_idle_);
  EXPECT_EQ(static_cast<int>(p.workers_.size()), p.nr_workers_);
}

TEST(pool, one_runnable_worker_per_bound_pool_while_work_is_pending) {
  // The watchdog off: under the sanitizers the spawner can run long enough
  // to count as a CPU hog, and a hog rightly stops counting as running.
  cowq::runtime rt({.cpus = {0}, .watchdog = {.detect_blocking = false}});
  auto& p = bound_pool(rt, 0);
  std::atomic<int> executing{0};
  std::atomic<int> max_executing{0};
  std::atomic<int> max_running{0};
  std::atomic<int> done{0};
  constexpr int kItems = 20000;
  auto item = [&]() -> cowq::task<void> {
    int now = executing.fetch_add(1) + 1;
    int m = max_executing.load();
    while (now > m && !max_executing.compare_exchange_weak(m, now)) {}
    int r = nr_running(p);
    int mr = max_running.load();
    while (r > mr && !max_running.compare_exchange_weak(mr, r)) {}
    executing.fetch_sub(1);
    done.fetch_add(1);
    co_return;
  };
  // From outside and from inside, so both wake paths are exercised.
  auto spawner = [&]() -> cowq::task<void> {
    for (int i = 0; i < kItems / 2; ++i) rt.system_wq().spawn(item());
    co_return;
  };
  rt.system_wq().spawn(spawner());
  for (int i = 0; i < kItems / 2; ++i) rt.system_wq().spawn(item());
  ASSERT_TRUE(wait_until([&] { return done.load() == kItems; }));
  EXPECT_EQ(max_executing.load(), 1);
  EXPECT_EQ(max_running.load(), 1);
  rt.system_wq().drain();
  expect_consistent(p);
}

TEST(pool, first_work_wakes_a_worker_and_the_manager_keeps_a_spare) {
  cowq::runtime rt({.cpus = {0}});
  auto& p = bound_pool(rt, 0);
  {
    std::lock_guard g(p.lock_);
    EXPECT_EQ(p.nr_workers_, 1);
  }
  cowq::sync_wait(rt, []() -> cowq::task<void> { co_return; }());
  // The woken worker found no idle spare and created one before working.
  ASSERT_TRUE(wait_until([&] {
    std::lock_guard g(p.lock_);
    return p.nr_workers_ == 2 && p.nr_idle_ == 2;
  }));
  expect_consistent(p);
}

TEST(pool, leaving_nr_running_hands_pending_work_to_another_worker) {
  cowq::runtime rt({.cpus = {0}});
  auto& p = bound_pool(rt, 0);
  std::atomic<bool> other_ran{false};
  std::atomic<bool> left{false};
  std::atomic<int> running_inside{-1};
  auto blocker = [&]() -> cowq::task<void> {
    auto* self = cowq::detail::current_worker();
    // Queue work behind us; with us counted nothing else may run it.
    rt.system_wq().spawn(cowq::test::run([&]() -> cowq::task<void> {
      other_ran = true;
      co_return;
    }));
    EXPECT_EQ(nr_running(p), 1);
    p.worker_sleeping(self);
    left = true;
    // Another worker of this pool must now run the queued item while this
    // one is still inside its item.
    EXPECT_TRUE(wait_until([&] { return other_ran.load(); }));
    p.worker_running(self);
    running_inside = nr_running(p);
    co_return;
  };
  cowq::sync_wait(rt, blocker());
  EXPECT_TRUE(left.load());
  EXPECT_TRUE(other_ran.load());
  // Rejoined: counted again, so at least 1 (the other may still be busy).
  EXPECT_GE(running_inside.load(), 1);
  ASSERT_TRUE(wait_until([&] { return nr_running(p) == 0; }));
  expect_consistent(p);
}

TEST(pool, hooks_are_idempotent_and_ignore_idle_workers) {
  cowq::runtime rt({.cpus = {0}});
  auto& p = bound_pool(rt, 0);
  auto t = [&]() -> cowq::task<void> {
    auto* self = cowq::detail::current_worker();
    p.worker_sleeping(self);
    p.worker_sleeping(self);
    EXPECT_EQ(nr_running(p), 0);
    p.worker_running(self);
    p.worker_running(self);
    EXPECT_EQ(nr_running(p), 1);
    co_return;
  };
  cowq::sync_wait(rt, t());
  ASSERT_TRUE(wait_until([&] { return nr_running(p) == 0; }));
  expect_consistent(p);
}

// Parks `n` items that each leave nr_running and wait for `release`;
// returns once all are inside.
void park_blockers(cowq::runtime& rt, cowq::detail::pool& p, int n,
                   std::atomic<bool>& release, std::atomic<int>& inside) {
  for (int i = 0; i < n; ++i)
    rt.system_wq().spawn([](cowq::detail::pool* pl, std::atomic<bool>* rel,
                            std::atomic<int>* in) -> cowq::task<void> {
      auto* self = cowq::detail::current_worker();
      pl->worker_sleeping(self);
      in->fetch_add(1);
      while (!rel->load()) std::this_thread::sleep_for(1ms);
      pl->worker_running(self);
      co_return;
    }(&p, &release, &inside));
  ASSERT_TRUE(wait_until([&] { return inside.load() == n; }));
}

TEST(pool, surplus_workers_are_reaped_after_the_idle_timeout) {
  cowq::runtime rt({.cpus = {0}, .idle_timeout = 100ms});
  auto& p = bound_pool(rt, 0);
  std::atomic<bool> release{false};
  std::atomic<int> inside{0};
  park_blockers(rt, p, 6, release, inside);
  int peak;
  {
    std::lock_guard g(p.lock_);
    peak = p.nr_workers_;
  }
  EXPECT_GE(peak, 7);  // six blocked plus a spare
  release = true;
  // All go idle; beyond the reserve of two they are destroyed.
  ASSERT_TRUE(wait_until([&] {
    std::lock_guard g(p.lock_);
    return p.nr_workers_ == 2 && p.nr_idle_ == 2;
  }));
  auto s = rt.stats();
  EXPECT_EQ(s.pools[0].workers_destroyed, static_cast<std::uint64_t>(peak - 2));
  EXPECT_EQ(nr_running(p), 0);
  expect_consistent(p);
  // The pool still works after reaping.
  EXPECT_EQ(cowq::sync_wait(rt, []() -> cowq::task<int> { co_return 9; }()), 9);
}

TEST(pool, worker_cap_is_respected) {
  cowq::runtime rt({.cpus = {0}, .max_workers_per_pool = 4});
  auto& p = bound_pool(rt, 0);
  std::atomic<bool> release{false};
  std::atomic<int> inside{0};
  park_blockers(rt, p, 3, release, inside);
  std::atomic<bool> queued_ran{false};
  rt.system_wq().spawn(cowq::test::run([&]() -> cowq::task<void> {
    queued_ran = true;
    co_return;
  }));
  // Three blocked plus one more: the fourth worker runs the item.
  ASSERT_TRUE(wait_until([&] { return queued_ran.load(); }));
  {
    std::lock_guard g(p.lock_);
    EXPECT_LE(p.nr_workers_, 4);
  }
  release = true;
  rt.system_wq().drain();
  expect_consistent(p);
}

std::set<std::string> thread_names() {
  std::set<std::string> out;
  DIR* d = ::opendir("/proc/self/task");
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream f(std::string("/proc/self/task/") + e->d_name + "/comm");
    std::string name;
    std::getline(f, name);
    out.insert(name);
  }
  ::closedir(d);
  return out;
}

TEST(pool, workers_are_named_like_kworkers_and_pinned) {
  cowq::runtime rt;
  const std::string cpu = std::to_string(rt.cpus()[0]);
  // Each worker names itself as its thread starts.
  EXPECT_TRUE(wait_until([&] {
    auto names = thread_names();
    return names.count("cowq/" + cpu + ":0") && names.count("cowq/" + cpu + ":0H") &&
           names.count("cowq/u0:0") && names.count("cowq/u0:0H");
  })) << "kworker-style names";

  for (auto& cpu_pools : rt.impl().bound_) {
    for (auto* p : cpu_pools) {
      std::vector<pid_t> tids;
      ASSERT_TRUE(wait_until([&] {
        std::lock_guard g(p->lock_);
        tids.clear();
        for (auto* w : p->workers_) tids.push_back(w->tid_);
        return std::all_of(tids.begin(), tids.end(), [](pid_t t) { return t != 0; });
      }));
      for (pid_t tid : tids) {
        cpu_set_t set;
        ASSERT_EQ(::sched_getaffinity(tid, sizeof set, &set), 0);
        EXPECT_EQ(CPU_COUNT(&set), 1);
        EXPECT_TRUE(CPU_ISSET(p->cpu_, &set));
        errno = 0;
        int nice = ::getpriority(PRIO_PROCESS, static_cast<id_t>(tid));
        if (p->highpri_ && ::geteuid() == 0) {
          EXPECT_EQ(nice, -20);
        } else if (!p->highpri_) {
          EXPECT_EQ(nice, 0);
        }
      }
    }
  }
}

TEST(pool, unbound_pool_runs_up_to_its_cpu_count_at_once) {
  cowq::runtime rt;
  if (rt.cpus().size() < 2) GTEST_SKIP() << "needs two CPUs";
  auto& wq = rt.system_unbound_wq();
  std::atomic<int> executing{0}, peak{0};
  std::atomic<bool> release{false};
  const int n = static_cast<int>(rt.cpus().size());
  for (int i = 0; i < n; ++i)
    wq.spawn(cowq::test::run([&]() -> cowq::task<void> {
      int now = executing.fetch_add(1) + 1;
      int m = peak.load();
      while (now > m && !peak.compare_exchange_weak(m, now)) {}
      // Spin (running, not blocked) until all are in at once.
      while (!release.load() && peak.load() < n) {}
      executing.fetch_sub(1);
      co_return;
    }));
  ASSERT_TRUE(wait_until([&] { return peak.load() == n; }));
  release = true;
  wq.drain();
}

}  // namespace

namespace {

std::uint64_t spin_handoffs(cowq::detail::pool& p) {
  std::lock_guard g(p.lock_);
  return p.spin_handoffs_;
}

// Hops between the pools of wq on CPUs a and b, n round trips.
cowq::task<void> hop_between(cowq::workqueue& wq_a, int a, cowq::workqueue& wq_b, int b, int n) {
  for (int i = 0; i < n; ++i) {
    co_await cowq::schedule_on(wq_b, b);
    co_await cowq::schedule_on(wq_a, a);
  }
}

// The poller's wake-up is the completion of its eventfd read, and any
// reaper may take it. Taken by a running worker before the poller is back
// in the kernel (the read completed at once: a wake() came while no read
// was armed), it would leave the poller asleep with no read armed, deaf to
// every later wake(). The ring's test hook plays that: on the poller's own
// thread, a wake() before the read is armed, then a reaper's look at the
// ring once it is.
struct stolen_wake {
  cowq::detail::pool* p = nullptr;
  std::atomic<int> phase{0};
  std::atomic<int> back_again{0};

  static void hook(void* arg, bool armed) {
    auto* s = static_cast<stolen_wake*>(arg);
    if (!armed) {
      int expected = 0;
      if (s->phase.compare_exchange_strong(expected, 1)) s->p->ring_->wake();
    } else if (s->phase.load() == 1) {
      std::unique_lock lk(s->p->lock_);
      s->p->poll_locked(lk);  // a running worker's look between items
      s->phase = 2;
    } else if (s->phase.load() == 2) {
      s->back_again.fetch_add(1);
    }
  }
};

TEST(pool, a_wake_up_reaped_by_another_thread_does_not_leave_the_poller_asleep) {
  stolen_wake s;  // outlives the runtime: the poller may be in the hook
  cowq::runtime rt({.cpus = {cowq::test::first_allowed_cpu()}});
  auto& p = bound_pool(rt, 0);
  s.p = &p;
  // A request in flight, so that a running worker's look reaps the ring.
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  std::atomic<bool> received{false};
  rt.system_wq().spawn(cowq::test::recv_one_byte(sv[0], received));
  ASSERT_TRUE(cowq::test::wait_until([&] {
    std::lock_guard g(p.lock_);
    return p.inflight_.load() == 1 && p.nr_running_ == 0 && p.poller_ != nullptr &&
           p.poller_->polling_.load();
  }));

  p.ring_->wait_hook_arg_ = &s;
  p.ring_->wait_hook_.store(&stolen_wake::hook, std::memory_order_release);
  p.ring_->wake();  // the sleeping poller goes round once, into the hook
  const bool back = cowq::test::wait_until([&] { return s.back_again.load() > 0; }, 10s);
  EXPECT_TRUE(back) << "the poller slept through a wake-up another reaper took";
  p.ring_->wait_hook_.store(nullptr, std::memory_order_release);
  if (!back) p.ring_->post_nop();  // let it out, for the shutdown
  ASSERT_EQ(::write(sv[1], "x", 1), 1);
  EXPECT_TRUE(cowq::test::wait_until([&] { return received.load(); }));
  ::close(sv[1]);
}

// Two CPUs and a long spin budget, so that a spinning worker cannot miss.
// Blocking detection is off: a worker the watchdog finds "blocked" (or a
// hog) under a sanitizer's slowdown wakes the spinner for other work; that
// is right, but not what these tests look at.
cowq::runtime_options spin_options(int cpu_a, int cpu_b) {
  cowq::runtime_options o;
  o.cpus = {cpu_a, cpu_b};
  o.idle_spin = std::chrono::seconds(30);
  o.watchdog.detect_blocking = false;
  return o;
}

}  // namespace

// A long spin budget, so that a spinning worker cannot miss: once a worker
// has been handed work from the other CPU soon after going idle, it waits
// for the next hand-off spinning, and the hand-off needs no wake-up.
TEST(pool, workers_spin_for_hand_offs_from_another_cpu) {
  cowq::runtime probe;
  const auto cpus = probe.cpus();
  if (cpus.size() < 2) GTEST_SKIP() << "needs two CPUs";
  cowq::runtime rt(spin_options(cpus[0], cpus[1]));
  constexpr int kRoundTrips = 2000;
  cowq::sync_wait(rt, hop_between(rt.system_wq(), cpus[0], rt.system_wq(), cpus[1], kRoundTrips));
  const auto caught = spin_handoffs(bound_pool(rt, 0)) + spin_handoffs(bound_pool(rt, 1));
  // Nearly every hop (3,990 of 4,000 here; a completion in the ring ends a
  // spin too). Without spinning it is none.
  EXPECT_GE(caught, kRoundTrips) << caught;
  expect_consistent(bound_pool(rt, 0));
  expect_consistent(bound_pool(rt, 1));
}

// Work for a pool with a spinning worker goes to the spinner, whatever its
// place among the idle workers, and nothing spins beside the worker that
// runs it: a spin on a CPU something of its pool runs on only takes CPU
// time from it.
TEST(pool, the_spinner_takes_the_next_work_and_nobody_spins_beside_a_runner) {
  cowq::runtime probe;
  const auto cpus = probe.cpus();
  if (cpus.size() < 2) GTEST_SKIP() << "needs two CPUs";
  cowq::runtime rt(spin_options(cpus[0], cpus[1]));
  cowq::sync_wait(rt, hop_between(rt.system_wq(), cpus[0], rt.system_wq(), cpus[1], 200));
  auto& p = bound_pool(rt, 1);
  pid_t spinner_tid = 0;
  ASSERT_TRUE(cowq::test::wait_until([&] {
    std::lock_guard g(p.lock_);
    if (p.spinner_ == nullptr || p.nr_idle_ < 2) return false;
    // The spinner is usually the most recently idle; put it first, where
    // taking the most recent would miss it.
    std::swap(*std::find(p.idle_.begin(), p.idle_.end(), p.spinner_), p.idle_.front());
    spinner_tid = p.spinner_->tid_;
    return true;
  })) << "no worker of the second CPU's pool spins with another idle";

  std::atomic<pid_t> ran_on{0};
  std::atomic<bool> release{false};
  rt.system_wq().spawn([](cowq::workqueue& wq, int cpu, std::atomic<pid_t>& ran_on,
                          std::atomic<bool>& release) -> cowq::task<void> {
    co_await cowq::schedule_on(wq, cpu);
    ran_on = static_cast<pid_t>(::syscall(SYS_gettid));
    while (!release.load()) cowq::detail::cpu_relax();
  }(rt.system_wq(), cpus[1], ran_on, release));
  ASSERT_TRUE(cowq::test::wait_until([&] { return ran_on.load() != 0; }));
  EXPECT_EQ(ran_on.load(), spinner_tid) << "the work went past the spinner";
  {
    std::lock_guard g(p.lock_);
    EXPECT_EQ(p.nr_running_, 1);
    for (auto* w : p.workers_) EXPECT_FALSE(w->spinning_.load()) << w->name_ << " spins beside the runner";
  }
  release = true;
  rt.system_wq().flush();
  expect_consistent(p);
}

// Hand-offs between the two pools of one CPU never spin: the spinner would
// hold the CPU the other pool's worker needs. Nor does anything with
// idle_spin zero.
TEST(pool, no_spinning_on_one_cpu_or_with_idle_spin_zero) {
  cowq::runtime probe;
  const auto cpus = probe.cpus();
  {
    cowq::runtime_options o;
    o.cpus = {cpus[0]};
    o.idle_spin = std::chrono::seconds(30);
    cowq::runtime rt(o);
    cowq::sync_wait(rt, hop_between(rt.system_wq(), cpus[0], rt.system_highpri_wq(), cpus[0], 500));
    EXPECT_EQ(spin_handoffs(bound_pool(rt, 0)), 0u);
    EXPECT_EQ(spin_handoffs(bound_pool(rt, 0, true)), 0u);
  }
  if (cpus.size() < 2) return;
  cowq::runtime_options o;
  o.cpus = {cpus[0], cpus[1]};
  o.idle_spin = std::chrono::microseconds(0);
  cowq::runtime rt(o);
  cowq::sync_wait(rt, hop_between(rt.system_wq(), cpus[0], rt.system_wq(), cpus[1], 500));
  EXPECT_EQ(spin_handoffs(bound_pool(rt, 0)) + spin_handoffs(bound_pool(rt, 1)), 0u);
}

// The worklist's pop leaves the new head's prev_ stale (so it never writes
// to a cold node under the pool lock); a cancel's remove() must still
// unlink any node, the head included, and keep the list walkable.
TEST(node_list, remove_after_pops_keeps_order) {
  using cowq::detail::node_list;
  using cowq::detail::work_node;
  for (int victim = 0; victim < 5; ++victim) {
    work_node nodes[8];
    node_list l;
    for (auto& n : nodes) l.push_back(&n);
    ASSERT_EQ(l.pop_front(), &nodes[0]);
    ASSERT_EQ(l.pop_front(), &nodes[1]);
    // Left: 2..7. Remove the head (2), the next head, the middle, the tail.
    const int pick[5] = {2, 3, 5, 7, 6};
    l.remove(&nodes[pick[victim]]);
    std::vector<work_node*> rest;
    while (work_node* n = l.pop_front()) rest.push_back(n);
    std::vector<work_node*> want;
    for (int i = 2; i < 8; ++i)
      if (i != pick[victim]) want.push_back(&nodes[i]);
    EXPECT_EQ(rest, want) << "removing node " << pick[victim];
    EXPECT_TRUE(l.empty());
  }
  // Removing every node, head first, then pushing again.
  work_node a, b, c;
  node_list l;
  l.push_back(&a);
  l.push_back(&b);
  l.push_back(&c);
  ASSERT_EQ(l.pop_front(), &a);
  l.remove(&b);  // the head, with a stale prev_
  l.remove(&c);  // head and tail
  EXPECT_TRUE(l.empty());
  l.push_back(&a);
  EXPECT_EQ(l.front(), &a);
  EXPECT_TRUE(l.single());
}
