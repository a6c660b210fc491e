// Micro-benchmarks of the runtime's hot path, cowq against Asio.
//
// Every benchmark exists twice in this binary, as "<name>/cowq..." and
// "<name>/asio", doing the same work:
//   - cowq: one cowq::runtime with the default options (every allowed CPU;
//     per CPU a bound pool of concurrency 1), coroutines on system_wq unless
//     the variant says otherwise.
//   - Asio: one asio::io_context (concurrency hint 2) run by 2 threads,
//     coroutines are asio::awaitable<> started with asio::co_spawn.
// Both are created once and live for the whole run; while one is measured
// the other's threads sleep.
//
// Each iteration is a whole batch (10,000 spawns, 100,000 yields, ...) that
// the main thread starts and then waits for on an atomic (cowq::sync_wait,
// or the same atomic wait for Asio), so the timings are wall-clock
// (UseRealTime) and include one start and one final wake per batch, which is
// negligible against the batch. Counters give the per-item figure:
// "ns/spawn", "ns/yield", "ns/roundtrip", "ns/hop", "ms/skynet".
//
// channel_ping_pong compares cowq::channel with Asio's concurrent_channel
// (its plain channel is not safe across the io_context's two threads).
//
// The waits are all non-blocking joins: a parent coroutine suspends on a
// counter of its children plus one for itself, and the child that brings it
// to zero resumes the parent (cowq: inline, as when_all does; Asio: by
// dispatching the parent's completion handler). No sleeps, no polling.
//
// run_micro.sh runs this with repetitions and prints the medians and the
// cowq/Asio ratios; docs/benchmarks.md discusses the figures.

#include <benchmark/benchmark.h>

#include <cowq/cowq.hpp>

#include <asio.hpp>
#include <asio/experimental/concurrent_channel.hpp>

#include <atomic>
#include <cstdlib>
#include <coroutine>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <optional>
#include <pthread.h>
#include <sched.h>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

namespace {

// ---------------------------------------------------------------------------
// Sizes
// ---------------------------------------------------------------------------

constexpr long kSpawnBatch = 10'000;
constexpr long kYields = 100'000;
constexpr long kRoundTrips = 100'000;
constexpr long kChain = 100'000;
constexpr long kSkynetLeaves = 1'000'000;
constexpr long kSkynetFanout = 10;
constexpr long kSkynetSum = kSkynetLeaves * (kSkynetLeaves - 1) / 2;  // 499999500000

// Reports `items` per iteration as items/s and as "<unit>" per item, scaled
// by `scale` (1e9 for ns, 1e3 for ms) over wall-clock time.
void per_item(benchmark::State& st, const char* unit, double items, double scale = 1e9) {
  st.SetItemsProcessed(static_cast<std::int64_t>(items * static_cast<double>(st.iterations())));
  st.counters[unit] = benchmark::Counter(
      items / scale,
      benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

// Set once by the last of a batch, waited for by the main thread.
struct done_flag {
  std::atomic<std::uint32_t> v{0};
  void set() noexcept {
    v.store(1, std::memory_order_release);
    v.notify_one();
  }
  void wait() noexcept {
    while (v.load(std::memory_order_acquire) == 0) v.wait(0, std::memory_order_acquire);
  }
};

// ---------------------------------------------------------------------------
// cowq side
// ---------------------------------------------------------------------------

// COWQ_BENCH_IDLE_SPIN_US sets runtime_options::idle_spin, to compare.
cowq::runtime_options bench_options() {
  cowq::runtime_options o;
  if (const char* us = std::getenv("COWQ_BENCH_IDLE_SPIN_US"))
    o.idle_spin = std::chrono::microseconds(std::atol(us));
  return o;
}

cowq::runtime& rt() {
  static cowq::runtime r(bench_options());
  return r;
}

// A wq with the highest max_active, to show the cost of max_active parking
// (system_wq has the default of 256 active items per pool).
cowq::workqueue& wide_wq() {
  static cowq::workqueue& wq =
      rt().alloc_workqueue("bench_wide", cowq::wq_flags::none, cowq::wq_max_active);
  return wq;
}

// Join of detached children: the parent awaits wait() after starting them;
// the child that brings the count to zero resumes the parent inline.
struct cjoin {
  std::atomic<long> count{0};
  std::atomic<long> sum{0};
  std::coroutine_handle<> parent;

  void arm(long children) noexcept { count.store(children + 1, std::memory_order_relaxed); }
  void arrive() noexcept {
    // acq_rel: publishes this child's writes to whoever reaches zero.
    if (count.fetch_sub(1, std::memory_order_acq_rel) == 1) parent.resume();
  }
  auto wait() noexcept {
    struct awaiter {
      cjoin* j;
      bool await_ready() const noexcept { return false; }
      bool await_suspend(std::coroutine_handle<> h) noexcept {
        j->parent = h;
        return j->count.fetch_sub(1, std::memory_order_acq_rel) != 1;
      }
      void await_resume() const noexcept {}
    };
    return awaiter{this};
  }
};

// --- spawn-many --------------------------------------------------------------

cowq::task<void> c_empty(cjoin* j) {
  j->arrive();
  co_return;
}

cowq::task<void> c_spawner(cowq::workqueue& wq, long n) {
  cjoin j;
  j.arm(n);
  for (long i = 0; i < n; ++i) wq.spawn(c_empty(&j));
  co_await j.wait();
}

void spawn_local_on(benchmark::State& st, cowq::workqueue& wq) {
  for (auto _ : st) cowq::sync_wait(wq, c_spawner(wq, kSpawnBatch));
  per_item(st, "ns/spawn", kSpawnBatch);
}
void BM_spawn_local_cowq(benchmark::State& st) { spawn_local_on(st, rt().system_wq()); }
void BM_spawn_local_cowq_wide(benchmark::State& st) { spawn_local_on(st, wide_wq()); }

struct counted_done {
  std::atomic<long> left{0};
  done_flag done;
  void arrive() noexcept {
    if (left.fetch_sub(1, std::memory_order_acq_rel) == 1) done.set();
  }
};

cowq::task<void> c_empty_remote(counted_done* d) {
  d->arrive();
  co_return;
}

void BM_spawn_remote_cowq(benchmark::State& st) {
  auto& wq = rt().system_wq();
  for (auto _ : st) {
    counted_done d;
    d.left.store(kSpawnBatch, std::memory_order_relaxed);
    for (long i = 0; i < kSpawnBatch; ++i) wq.spawn(c_empty_remote(&d));
    d.done.wait();
  }
  per_item(st, "ns/spawn", kSpawnBatch);
}

// --- yield-many --------------------------------------------------------------

cowq::task<void> c_yielder(long n) {
  for (long i = 0; i < n; ++i) co_await cowq::yield();
}

void BM_yield_cowq(benchmark::State& st) {
  for (auto _ : st) cowq::sync_wait(rt(), c_yielder(kYields));
  per_item(st, "ns/yield", kYields);
}

// --- ping-pong ---------------------------------------------------------------
//
// Each player has a work node holding its own handle while it is suspended.
// pass{me, other} suspends `me` and queues the other's node on the
// workqueue: the same two steps as cowq::schedule_on (a resume_node queued
// with detail::queue_node), except that the node queued is the other
// coroutine's. The public API has no "resume that handle on wq", so this
// uses the pieces schedule_on is made of.

struct c_player {
  cowq::detail::resume_node node;
  int cpu = -1;  // -1: the queueing worker's CPU
};

struct c_pass {
  c_player* me;
  c_player* other;
  cowq::workqueue* wq;
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) {
    me->node.handle_ = h;
    // Last: the other may run (and queue us) before this returns.
    cowq::detail::queue_node(*wq, &other->node, other->cpu);
  }
  void await_resume() const noexcept {}
};

cowq::task<void> c_pong(cowq::workqueue& wq, c_player* a, c_player* b, long n) {
  for (long i = 1; i < n; ++i) co_await c_pass{b, a, &wq};
  // The last hand-off does not wait for a reply. Nothing of the shared state
  // is touched after it: ping may return and free it.
  cowq::detail::queue_node(wq, &a->node, a->cpu);
}

// Both coroutines spawned on the same wq; the first pass spawns the other.
cowq::task<void> c_ping(cowq::workqueue& wq, long n, int cpu_a, int cpu_b) {
  c_player a, b;
  a.cpu = cpu_a;
  b.cpu = cpu_b;
  // The task is kept out of the awaiter: with a move-only task member in
  // the co_await temporary, g++ 12 destroyed a copy that still owned the
  // spawned frame (use-after-free found by ASan).
  struct first_pass {
    c_player* me;
    cowq::task<void>* other;
    cowq::workqueue* wq;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) {
      me->node.handle_ = h;
      wq->spawn(std::move(*other));
    }
    void await_resume() const noexcept {}
  };
  if (cpu_a >= 0) co_await cowq::schedule_on(wq, cpu_a);
  cowq::task<void> pong = c_pong(wq, &a, &b, n);
  co_await first_pass{&a, &pong, &wq};
  for (long i = 1; i < n; ++i) co_await c_pass{&a, &b, &wq};
}

void BM_pingpong_cowq(benchmark::State& st) {
  for (auto _ : st) cowq::sync_wait(rt(), c_ping(rt().system_wq(), kRoundTrips, -1, -1));
  per_item(st, "ns/roundtrip", kRoundTrips);
}

// The two players pinned to the pools of two different CPUs: every hand-off
// crosses threads (and usually wakes a parked worker).
void BM_pingpong_xcpu_cowq(benchmark::State& st) {
  auto cpus = rt().cpus();
  if (cpus.size() < 2) {
    st.SkipWithError("needs 2 CPUs");
    return;
  }
  const long n = kRoundTrips / 10;
  for (auto _ : st)
    cowq::sync_wait(rt(), c_ping(rt().system_wq(), n, cpus[0], cpus[1]));
  per_item(st, "ns/roundtrip", static_cast<double>(n));
}

// --- chained spawn -----------------------------------------------------------

cowq::task<void> c_link(cowq::workqueue& wq, cjoin* j, long left) {
  if (left == 1) {
    j->arrive();
  } else {
    wq.spawn(c_link(wq, j, left - 1));
  }
  co_return;
}

cowq::task<void> c_chain(cowq::workqueue& wq, long n) {
  cjoin j;
  j.arm(1);
  wq.spawn(c_link(wq, &j, n));
  co_await j.wait();
}

void BM_chain_cowq(benchmark::State& st) {
  auto& wq = rt().system_wq();
  for (auto _ : st) cowq::sync_wait(wq, c_chain(wq, kChain));
  per_item(st, "ns/hop", kChain);
}

// --- channel ping-pong -------------------------------------------------------
//
// Two coroutines pass a number back and forth through two channels of
// capacity 1: a round trip is two sends and two receives, and each receive
// finds its channel empty and waits for the other side's send.

cowq::task<void> c_chan_echo(cowq::channel<long>* in, cowq::channel<long>* out,
                             cowq::semaphore* done) {
  while (auto v = co_await in->recv()) co_await out->send(*v + 1);
  done->release();
}

cowq::task<long> c_chan_ping(cowq::workqueue& wq, long n) {
  cowq::channel<long> to(1), back(1);
  cowq::semaphore done(0);
  wq.spawn(c_chan_echo(&to, &back, &done));
  long sum = 0;
  for (long i = 0; i < n; ++i) {
    co_await to.send(i);
    sum += *co_await back.recv();
  }
  to.close();
  co_await done.acquire();  // the echo is done with the channels
  co_return sum;
}

void BM_channel_cowq(benchmark::State& st) {
  for (auto _ : st) {
    const long sum = cowq::sync_wait(rt(), c_chan_ping(rt().system_wq(), kRoundTrips));
    if (sum != kRoundTrips * (kRoundTrips + 1) / 2) {
      st.SkipWithError("channel ping-pong lost or changed a value");
      return;
    }
  }
  per_item(st, "ns/roundtrip", kRoundTrips);
}

// --- skynet ------------------------------------------------------------------

// (1) Children spawned as detached coroutines, joined by a counter.
cowq::task<void> c_sky_spawn(cowq::workqueue& wq, long num, long size, cjoin* up) {
  long r;
  if (size == 1) {
    r = num;
  } else {
    cjoin j;
    j.arm(kSkynetFanout);
    const long sub = size / kSkynetFanout;
    for (long i = 0; i < kSkynetFanout; ++i)
      wq.spawn(c_sky_spawn(wq, num + i * sub, sub, &j));
    co_await j.wait();
    r = j.sum.load(std::memory_order_relaxed);
  }
  up->sum.fetch_add(r, std::memory_order_relaxed);
  up->arrive();
}

cowq::task<long> c_sky_spawn_root(cowq::workqueue& wq) {
  cjoin j;
  j.arm(1);
  wq.spawn(c_sky_spawn(wq, 0, kSkynetLeaves, &j));
  co_await j.wait();
  co_return j.sum.load(std::memory_order_relaxed);
}

// (1b) The same, with the root's ten children dealt out over the CPUs
// (spawn_on, the queue_work_on of coroutines); below them every spawn
// stays on its CPU. A spawn from a worker never leaves its CPU, so (1)
// runs on one CPU while Asio's io_context has two threads.
cowq::task<long> c_sky_spawn_spread_root(cowq::workqueue& wq, const std::vector<int>& cpus) {
  cjoin j;
  j.arm(kSkynetFanout);
  const long sub = kSkynetLeaves / kSkynetFanout;
  for (long i = 0; i < kSkynetFanout; ++i)
    wq.spawn_on(cpus[static_cast<std::size_t>(i) % cpus.size()],
                c_sky_spawn(wq, i * sub, sub, &j));
  co_await j.wait();
  co_return j.sum.load(std::memory_order_relaxed);
}

// (2) co_await when_all(vector<task<long>>): children start inline on the
// awaiting worker.
cowq::task<long> c_sky_when_all(long num, long size) {
  if (size == 1) co_return num;
  const long sub = size / kSkynetFanout;
  std::vector<cowq::task<long>> children;
  children.reserve(kSkynetFanout);
  for (long i = 0; i < kSkynetFanout; ++i)
    children.push_back(c_sky_when_all(num + i * sub, sub));
  auto results = co_await cowq::when_all(std::move(children));
  long s = 0;
  for (long v : results) s += v;
  co_return s;
}

// (3) Reference point, not a concurrency idiom: each child co_awaited in
// turn (frames and symmetric transfer only, no scheduler, no when_all).
cowq::task<long> c_sky_serial(long num, long size) {
  if (size == 1) co_return num;
  const long sub = size / kSkynetFanout;
  long s = 0;
  for (long i = 0; i < kSkynetFanout; ++i) s += co_await c_sky_serial(num + i * sub, sub);
  co_return s;
}

// One untimed run first: a skynet iteration is long and few of them run, so
// the first one's page faults (the detached version has up to 1.1M frames
// alive at once, ~300 MB) would otherwise dominate a repetition.
template <typename F>
void run_skynet(benchmark::State& st, F&& once) {
  if (const long s = once(); s != kSkynetSum) {
    st.SkipWithError(("skynet sum " + std::to_string(s) + " != 499999500000").c_str());
    return;
  }
  for (auto _ : st) {
    const long s = once();
    if (s != kSkynetSum) {
      st.SkipWithError(("skynet sum " + std::to_string(s) + " != 499999500000").c_str());
      return;
    }
  }
  per_item(st, "ms/skynet", 1.0, 1e3);
}

void BM_skynet_spawn_cowq(benchmark::State& st) {
  auto& wq = rt().system_wq();
  run_skynet(st, [&] { return cowq::sync_wait(wq, c_sky_spawn_root(wq)); });
}
void BM_skynet_spawn_spread_cowq(benchmark::State& st) {
  auto& wq = rt().system_wq();
  const std::vector<int> cpus(rt().cpus().begin(), rt().cpus().end());
  run_skynet(st, [&] { return cowq::sync_wait(wq, c_sky_spawn_spread_root(wq, cpus)); });
}
void BM_skynet_spawn_unbound_cowq(benchmark::State& st) {
  auto& wq = rt().system_unbound_wq();
  run_skynet(st, [&] { return cowq::sync_wait(wq, c_sky_spawn_root(wq)); });
}
void BM_skynet_when_all_cowq(benchmark::State& st) {
  run_skynet(st, [&] { return cowq::sync_wait(rt(), c_sky_when_all(0, kSkynetLeaves)); });
}
void BM_skynet_serial_cowq(benchmark::State& st) {
  run_skynet(st, [&] { return cowq::sync_wait(rt(), c_sky_serial(0, kSkynetLeaves)); });
}

// ---------------------------------------------------------------------------
// Asio side
// ---------------------------------------------------------------------------

using asio::awaitable;
using asio::use_awaitable;
using handler_t = asio::async_result<asio::use_awaitable_t<>, void()>::handler_type;

struct asio_env {
  asio::io_context io{2};
  asio::executor_work_guard<asio::io_context::executor_type> guard{io.get_executor()};
  std::thread threads[2];
  asio_env() {
    for (auto& t : threads) t = std::thread([this] { io.run(); });
  }
  ~asio_env() {
    guard.reset();
    for (auto& t : threads) t.join();
  }
};

asio_env& aenv() {
  static asio_env e;
  return e;
}
asio::any_io_executor aex() { return aenv().io.get_executor(); }

// Runs an awaitable on the io_context from the main thread and blocks for it.
template <typename T>
T asio_wait(awaitable<T> a) {
  done_flag done;
  std::optional<T> value;
  std::exception_ptr err;
  asio::co_spawn(aex(), std::move(a), [&](std::exception_ptr e, T v) {
    err = e;
    value.emplace(std::move(v));
    done.set();
  });
  done.wait();
  if (err) std::rethrow_exception(err);
  return std::move(*value);
}
void asio_wait(awaitable<void> a) {
  done_flag done;
  std::exception_ptr err;
  asio::co_spawn(aex(), std::move(a), [&](std::exception_ptr e) {
    err = e;
    done.set();
  });
  done.wait();
  if (err) std::rethrow_exception(err);
}

// The same join as cjoin. The parent's completion handler is stored; the
// child reaching zero dispatches it (resumes the parent inline when it runs
// on an io_context thread, as cjoin does).
struct ajoin {
  std::atomic<long> count{0};
  std::atomic<long> sum{0};
  std::optional<handler_t> parent;

  void arm(long children) noexcept { count.store(children + 1, std::memory_order_relaxed); }
  void fire(bool inline_ok) {
    handler_t h = std::move(*parent);
    parent.reset();
    if (inline_ok)
      asio::dispatch(std::move(h));
    else
      asio::post(std::move(h));
  }
  void arrive() {
    if (count.fetch_sub(1, std::memory_order_acq_rel) == 1) fire(true);
  }
  awaitable<void> wait() {
    return asio::async_initiate<const asio::use_awaitable_t<>&, void()>(
        [this](handler_t h) {
          parent.emplace(std::move(h));
          // All children already done: resuming inside our own initiation
          // would re-enter the suspending coroutine, so queue it.
          if (count.fetch_sub(1, std::memory_order_acq_rel) == 1) fire(false);
        },
        use_awaitable);
  }
};

// --- spawn-many --------------------------------------------------------------

awaitable<void> a_empty(ajoin* j) {
  j->arrive();
  co_return;
}

awaitable<void> a_spawner(long n) {
  ajoin j;
  j.arm(n);
  auto ex = co_await asio::this_coro::executor;
  for (long i = 0; i < n; ++i) asio::co_spawn(ex, a_empty(&j), asio::detached);
  co_await j.wait();
}

void BM_spawn_local_asio(benchmark::State& st) {
  for (auto _ : st) asio_wait(a_spawner(kSpawnBatch));
  per_item(st, "ns/spawn", kSpawnBatch);
}

awaitable<void> a_empty_remote(counted_done* d) {
  d->arrive();
  co_return;
}

void BM_spawn_remote_asio(benchmark::State& st) {
  auto ex = aex();
  for (auto _ : st) {
    counted_done d;
    d.left.store(kSpawnBatch, std::memory_order_relaxed);
    for (long i = 0; i < kSpawnBatch; ++i) asio::co_spawn(ex, a_empty_remote(&d), asio::detached);
    d.done.wait();
  }
  per_item(st, "ns/spawn", kSpawnBatch);
}

// --- yield-many --------------------------------------------------------------

// asio::post is the plain "queue it" operation (the shared queue, and a
// wake of an idle thread). asio::defer marks the operation as a
// continuation of the current handler, which Asio keeps on the calling
// thread's private queue: the cheapest way Asio has to yield. Both are
// measured; the "asio" rows use post.
enum class requeue { post, defer };

template <requeue how>
awaitable<void> a_yielder(long n) {
  auto ex = co_await asio::this_coro::executor;
  for (long i = 0; i < n; ++i) {
    if constexpr (how == requeue::post)
      co_await asio::post(ex, use_awaitable);
    else
      co_await asio::defer(ex, use_awaitable);
  }
}

template <requeue how>
void BM_yield_asio(benchmark::State& st) {
  for (auto _ : st) asio_wait(a_yielder<how>(kYields));
  per_item(st, "ns/yield", kYields);
}

// --- ping-pong ---------------------------------------------------------------
//
// Same protocol as cowq's: a player's completion handler is stored while it
// is suspended; passing posts the other's handler (asio::post runs it on its
// associated executor, the io_context) and stores our own.

struct a_player {
  std::optional<handler_t> h;
};

template <requeue how>
void a_post_player(a_player* p) {
  handler_t h = std::move(*p->h);
  p->h.reset();
  if constexpr (how == requeue::post)
    asio::post(std::move(h));
  else
    asio::defer(std::move(h));
}

template <requeue how>
awaitable<void> a_pass(a_player* me, a_player* other) {
  return asio::async_initiate<const asio::use_awaitable_t<>&, void()>(
      [me, other](handler_t h) {
        me->h.emplace(std::move(h));
        a_post_player<how>(other);
      },
      use_awaitable);
}

template <requeue how>
awaitable<void> a_pong(a_player* a, a_player* b, long n) {
  for (long i = 1; i < n; ++i) co_await a_pass<how>(b, a);
  a_post_player<how>(a);
}

template <requeue how>
awaitable<void> a_ping(long n) {
  a_player a, b;
  auto ex = co_await asio::this_coro::executor;
  co_await asio::async_initiate<const asio::use_awaitable_t<>&, void()>(
      [&](handler_t h) {
        a.h.emplace(std::move(h));
        asio::co_spawn(ex, a_pong<how>(&a, &b, n), asio::detached);
      },
      use_awaitable);
  for (long i = 1; i < n; ++i) co_await a_pass<how>(&a, &b);
}

template <requeue how>
void BM_pingpong_asio(benchmark::State& st) {
  for (auto _ : st) asio_wait(a_ping<how>(kRoundTrips));
  per_item(st, "ns/roundtrip", kRoundTrips);
}

// Across CPUs: Asio's counterpart of ping_pong/cowq_cross_cpu. With one
// io_context run by two threads, a post is usually taken by the thread
// that made it, so the plain Asio figure mostly stays on one thread. Here
// each player has an io_context of its own, run by one thread pinned to
// its own CPU (the CPUs of cowq's two pools), so every hand-off crosses
// threads as cowq's does.
struct asio_pinned_pair {
  asio::io_context io[2]{asio::io_context{1}, asio::io_context{1}};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> guard[2];
  std::thread threads[2];
  asio_pinned_pair(int cpu0, int cpu1) {
    const int cpus[2] = {cpu0, cpu1};
    for (int i = 0; i < 2; ++i) {
      guard[i].emplace(io[i].get_executor());
      threads[i] = std::thread([this, i, cpu = cpus[i]] {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
        io[i].run();
      });
    }
  }
  ~asio_pinned_pair() {
    for (auto& g : guard) g.reset();
    for (auto& t : threads) t.join();
  }
};

awaitable<void> a_ping_across(asio::io_context& other, long n) {
  a_player a, b;
  co_await asio::async_initiate<const asio::use_awaitable_t<>&, void()>(
      [&](handler_t h) {
        a.h.emplace(std::move(h));
        asio::co_spawn(other, a_pong<requeue::post>(&a, &b, n), asio::detached);
      },
      use_awaitable);
  for (long i = 1; i < n; ++i) co_await a_pass<requeue::post>(&a, &b);
}

void BM_pingpong_xcpu_asio(benchmark::State& st) {
  auto cpus = rt().cpus();
  if (cpus.size() < 2) {
    st.SkipWithError("needs 2 CPUs");
    return;
  }
  asio_pinned_pair env(cpus[0], cpus[1]);
  const long n = kRoundTrips / 10;
  for (auto _ : st) {
    done_flag done;
    std::exception_ptr err;
    asio::co_spawn(env.io[0], a_ping_across(env.io[1], n), [&](std::exception_ptr e) {
      err = e;
      done.set();
    });
    done.wait();
    if (err) std::rethrow_exception(err);
  }
  per_item(st, "ns/roundtrip", static_cast<double>(n));
}

// --- chained spawn -----------------------------------------------------------
//
// asio::co_spawn called on an io_context thread starts the new coroutine
// inline (its entry point dispatches), so a chain of co_spawns nests on the
// native stack and a 100,000-long chain overflows it. To queue the next
// link, as workqueue::spawn does, the co_spawn is posted (or deferred).

template <requeue how>
awaitable<void> a_link(ajoin* j, long left) {
  if (left == 1) {
    j->arrive();
  } else {
    auto ex = co_await asio::this_coro::executor;
    auto next = [ex, j, left] { asio::co_spawn(ex, a_link<how>(j, left - 1), asio::detached); };
    if constexpr (how == requeue::post)
      asio::post(ex, std::move(next));
    else
      asio::defer(ex, std::move(next));
  }
  co_return;
}

template <requeue how>
awaitable<void> a_chain(long n) {
  ajoin j;
  j.arm(1);
  auto ex = co_await asio::this_coro::executor;
  asio::co_spawn(ex, a_link<how>(&j, n), asio::detached);
  co_await j.wait();
}

template <requeue how>
void BM_chain_asio(benchmark::State& st) {
  for (auto _ : st) asio_wait(a_chain<how>(kChain));
  per_item(st, "ns/hop", kChain);
}

// --- channel ping-pong -------------------------------------------------------
//
// The same with Asio's thread-safe channel (its plain channel may not be
// used from two threads, and the io_context runs two).

using a_channel = asio::experimental::concurrent_channel<void(asio::error_code, long)>;

awaitable<void> a_chan_echo(a_channel* in, a_channel* out, ajoin* done) {
  for (;;) {
    long v;
    try {
      v = co_await in->async_receive(use_awaitable);
    } catch (const std::system_error&) {
      break;  // closed
    }
    co_await out->async_send(asio::error_code{}, v + 1, use_awaitable);
  }
  done->arrive();
}

awaitable<long> a_chan_ping(long n) {
  auto ex = co_await asio::this_coro::executor;
  a_channel to(ex, 1), back(ex, 1);
  ajoin done;
  done.arm(1);
  asio::co_spawn(ex, a_chan_echo(&to, &back, &done), asio::detached);
  long sum = 0;
  for (long i = 0; i < n; ++i) {
    co_await to.async_send(asio::error_code{}, i, use_awaitable);
    sum += co_await back.async_receive(use_awaitable);
  }
  to.close();
  co_await done.wait();
  co_return sum;
}

void BM_channel_asio(benchmark::State& st) {
  for (auto _ : st) {
    const long sum = asio_wait(a_chan_ping(kRoundTrips));
    if (sum != kRoundTrips * (kRoundTrips + 1) / 2) {
      st.SkipWithError("channel ping-pong lost or changed a value");
      return;
    }
  }
  per_item(st, "ns/roundtrip", kRoundTrips);
}

// --- skynet ------------------------------------------------------------------

awaitable<void> a_sky(long num, long size, ajoin* up) {
  long r;
  if (size == 1) {
    r = num;
  } else {
    ajoin j;
    j.arm(kSkynetFanout);
    const long sub = size / kSkynetFanout;
    auto ex = co_await asio::this_coro::executor;
    for (long i = 0; i < kSkynetFanout; ++i)
      asio::co_spawn(ex, a_sky(num + i * sub, sub, &j), asio::detached);
    co_await j.wait();
    r = j.sum.load(std::memory_order_relaxed);
  }
  up->sum.fetch_add(r, std::memory_order_relaxed);
  up->arrive();
}

awaitable<long> a_sky_root() {
  ajoin j;
  j.arm(1);
  auto ex = co_await asio::this_coro::executor;
  asio::co_spawn(ex, a_sky(0, kSkynetLeaves, &j), asio::detached);
  co_await j.wait();
  co_return j.sum.load(std::memory_order_relaxed);
}

void BM_skynet_asio(benchmark::State& st) {
  run_skynet(st, [] { return asio_wait(a_sky_root()); });
}

// ---------------------------------------------------------------------------

void reg(const char* name, void (*fn)(benchmark::State&), bool ms = false) {
  auto* b = benchmark::RegisterBenchmark(name, fn)->UseRealTime();
  b->Unit(ms ? benchmark::kMillisecond : benchmark::kMicrosecond);
  // The long ones (skynet) run a second of untimed iterations first. One
  // untimed run (run_skynet) is not enough for the detached versions:
  // the first few runs after it still fault in much of their ~300 MB of
  // frames, as the allocator's per-thread arenas settle, and at about
  // half a second each they would be most of a repetition.
  if (ms) b->MinWarmUpTime(1.0);
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;

  // Names: "<benchmark>/<implementation>"; run_micro.sh pairs every
  // "cowq..." row with the "asio" row of the same benchmark and lists the
  // "asio_..." variants separately.
  reg("spawn_many_local/cowq", BM_spawn_local_cowq);
  reg("spawn_many_local/cowq_wide_wq", BM_spawn_local_cowq_wide);
  reg("spawn_many_local/asio", BM_spawn_local_asio);
  reg("spawn_many_remote/cowq", BM_spawn_remote_cowq);
  reg("spawn_many_remote/asio", BM_spawn_remote_asio);
  reg("yield_many/cowq", BM_yield_cowq);
  reg("yield_many/asio", BM_yield_asio<requeue::post>);
  reg("yield_many/asio_defer", BM_yield_asio<requeue::defer>);
  reg("ping_pong/cowq", BM_pingpong_cowq);
  reg("ping_pong/cowq_cross_cpu", BM_pingpong_xcpu_cowq);
  reg("ping_pong/asio", BM_pingpong_asio<requeue::post>);
  reg("ping_pong/asio_defer", BM_pingpong_asio<requeue::defer>);
  reg("ping_pong/asio_cross_cpu", BM_pingpong_xcpu_asio);
  reg("chained_spawn/cowq", BM_chain_cowq);
  reg("chained_spawn/asio", BM_chain_asio<requeue::post>);
  reg("chained_spawn/asio_defer", BM_chain_asio<requeue::defer>);
  reg("channel_ping_pong/cowq", BM_channel_cowq);
  reg("channel_ping_pong/asio", BM_channel_asio);
  reg("skynet_1M/cowq_spawn", BM_skynet_spawn_cowq, true);
  reg("skynet_1M/cowq_spawn_spread", BM_skynet_spawn_spread_cowq, true);
  reg("skynet_1M/cowq_spawn_unbound", BM_skynet_spawn_unbound_cowq, true);
  reg("skynet_1M/cowq_when_all", BM_skynet_when_all_cowq, true);
  reg("skynet_1M/cowq_serial_await", BM_skynet_serial_cowq, true);
  reg("skynet_1M/asio", BM_skynet_asio, true);

  // Start both before the first measurement.
  (void)rt();
  (void)aenv();
  benchmark::AddCustomContext("cowq_cpus", std::to_string(rt().cpus().size()));
  benchmark::AddCustomContext("asio_threads", "2");
  benchmark::AddCustomContext("asio_version", std::to_string(ASIO_VERSION));

  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  // COWQ_BENCH_STATS=1: the runtime's counters after the run (workers
  // created, peaks, blocked workers detected), to explain a figure.
  if (const char* v = std::getenv("COWQ_BENCH_STATS"); v != nullptr && *v == '1')
    std::fprintf(stderr, "%s\n", cowq::to_json(rt().stats()).c_str());
  return 0;
}
