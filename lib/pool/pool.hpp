// Worker pools, workers and pool workqueues: the CMWQ core.
//
// The algorithm and its invariants are described at the top of pool.cpp and
// in docs/concepts.md.
//
// Field legend, as in kernel/workqueue.c:
//   I: set at creation, read-only afterwards
//   L: pool::lock_
//   W: only the worker's own thread
//   A: atomic; the comment names the ordering
#pragma once

#include "../timer/timer_heap.hpp"
#include "../uring/ring.hpp"
#include "../util/node_list.hpp"
#include "../util/spinlock.hpp"

#include <cowq/io.hpp>
#include <cowq/work.hpp>
#include <cowq/workqueue.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <sched.h>
#include <string>
#include <sys/types.h>
#include <thread>
#include <vector>

namespace cowq::detail {

struct runtime_impl;
struct wq_impl;
class watchdog;
class task_stat_files;
struct pool;
struct buffer_ring;
struct recv_state;

struct pool_timer : timer_node {
  pool* pool_ = nullptr;
};

using clock = std::chrono::steady_clock;

struct worker {
  // I; except for a rescuer's worker, which attaches to pools in turn and
  // changes it on its own thread (W) between attachments.
  pool* pool_ = nullptr;
  bool rescuer_ = false;  // I
  int id_ = 0;            // I
  std::string name_;      // I
  std::thread thread_;    // written by the creator, joined by shutdown/reaper
  pid_t tid_ = 0;         // L: set once the thread is named, pinned and niced

  bool idle_ = false;     // L: on pool::idle_
  bool counted_ = false;  // L: counted in pool::nr_running_
  bool exit_ = false;     // L: asked to exit
  clock::time_point last_active_{};  // L: when it last went idle
  // L: the item being run. Only a marker for observers: the node itself
  // may be gone once it started running.
  work_node* current_ = nullptr;
  // L: what the current item is, for a CPU-hog report: the cowq::work, or
  // the resume function of the coroutine (read from its frame before it
  // ran); current_callable_ says which.
  const void* current_what_ = nullptr;
  bool current_callable_ = false;
  pwq* current_pwq_ = nullptr;       // L
  node_list scheduled_;              // L: callable items queued behind current_
  // W: continuations the running item re-queued on this worker's own pool
  // (yield). They are linked under the lock the worker takes anyway when
  // the item returns, saving a lock round trip per yield.
  node_list deferred_;
  // Unbound pools only (a bound pool's lock stays on its CPU), while every
  // worker the pool wants is running: coroutines the running item spawned
  // onto its own pwq wait here, and are linked under L, which moves
  // between CPUs, once for all when the item returns, or at kOutboxBatch.
  // The moment any worker of the pool stops running (goes idle, blocks,
  // is found hogging), the pool is no longer full and every outbox is
  // linked and closed (pool::close_outboxes_locked()): a spawn never waits
  // longer than it would have on the worklist.
  spinlock outbox_lock_;
  node_list outbox_;  // O (outbox_lock_)
  // O to write; read relaxed, to skip taking O when it is empty, by the
  // worker, which alone adds to it, and by other threads under L.
  std::atomic<int> outbox_len_{0};
  // Whether the running item's spawns may go to the outbox. Written under
  // L (and under O too when closing it, which other threads do); read by
  // the worker under O (outbox_push) and by anyone under L.
  bool outbox_open_ = false;

  // True while the worker sleeps in the ring as the pool's poller. Set and
  // cleared under L; read by signal_worker() after the waker dropped L
  // (acquire, pairs with the release store before the wait), to choose
  // the eventfd over the futex.
  std::atomic<bool> polling_{false};
  // True while the worker, idle, spins for a hand-off before sleeping.
  // Stored true under L and false before it takes L again; read by
  // signal_worker() after the waker dropped L (acquire, pairs with the
  // release of that unlock), so a waker that sees it set knows the worker
  // is not asleep and skips the system call.
  std::atomic<bool> spinning_{false};
  // Set (relaxed, before the release store of wake_) by a waker that is
  // itself a worker: the next wake-up came from a hand-off between pools.
  std::atomic<bool> peer_woken_{false};
  // W: whether to spin the next time the worker goes idle (judged from
  // last_active_, when it last went idle).
  bool spin_next_ = false;
  // Parking word: 0 parked, 1 woken. The waker's release store (after it
  // moved this worker out of idle under L) pairs with the acquire load in
  // worker_park().
  std::atomic<std::uint32_t> wake_{0};
  // Set when the thread has left its loop for good; release pairs with the
  // reaper's acquire load before join.
  std::atomic<bool> exited_{false};
  // Bumped once per item (relaxed store by the worker, read by observers)
  // so a stuck worker can be told from a busy one.
  std::atomic<std::uint64_t> seq_{0};
  // Nesting depth of blocking_scope on this worker (W).
  int blocking_depth_ = 0;
  // L: the watchdog found the current item hogging the CPU; the worker
  // names it in the log when it ends. hog_what_ describes it, hog_since_
  // is when the watchdog first saw it running.
  bool hog_ = false;
  std::string hog_what_;
  clock::time_point hog_since_{};
  // Watchdog thread only, under L: the item sequence it saw last and when.
  std::uint64_t wd_seq_ = 0;
  clock::time_point wd_since_{};
  // Watchdog, under L: CPU time the thread had used (its CPU clock) when first
  // suspected of hogging item wd_cpu_seq_, and when that was read.
  std::uint64_t wd_cpu_seq_ = UINT64_MAX;
  std::uint64_t wd_cpu_ns_ = 0;
  clock::time_point wd_cpu_at_{};
  // Detached coroutines started minus finished on this thread. Written only
  // by the worker (relaxed load and store, no locked instruction), read
  // relaxed by stats; folded into pool::retired_live_ when the worker exits.
  std::atomic<std::int64_t> live_delta_{0};
};

// Links one workqueue to one pool (the kernel's pool_workqueue).
struct pwq {
  wq_impl* wq_ = nullptr;  // I
  pool* pool_ = nullptr;   // I
  int max_active_ = 1;     // I
  int nr_active_ = 0;      // L: on the worklist or running
  node_list inactive_;     // L: beyond max_active, in queueing order
  int nr_inactive_ = 0;    // L
  int nr_in_flight_[2] = {0, 0};  // L: queued and not finished, per flush colour
  int work_color_ = 0;            // L: colour new items get
  // work_color_ again, for a spawn put in a worker's outbox without L:
  // stored (relaxed) under L with it. A spawn that happens before a flush
  // begins reads the colour that flush waits for, one that happens after
  // reads the new one (coherence). On a line of its own, which changes
  // only when a flush begins, so it stays shared in every CPU's cache.
  struct alignas(64) padded_color {
    std::atomic<int> v{0};
  };
  padded_color outbox_color_;
  int flush_color_ = -1;          // L: colour being flushed, -1 none
  std::uint64_t queued_ = 0;      // L
  std::uint64_t completed_ = 0;   // L
  std::uint64_t rescued_ = 0;     // L: items its workqueue's rescuer ran here
  bool mayday_ = false;           // L: on the rescuer's mayday list
};

struct pool {
  // --- I ---
  runtime_impl* rt_ = nullptr;
  watchdog* watchdog_ = nullptr;  // the runtime's, one load away on the hot path
  int id_ = 0;
  int cpu_ = -1;       // -1 for unbound
  int cpu_index_ = -1; // index in runtime cpus, -1 for unbound
  int node_ = 0;
  bool highpri_ = false;
  cpu_set_t cpumask_{};
  // Runnable workers wanted at once: 1 on a CPU's pool, the number of CPUs
  // for an unbound pool.
  int concurrency_ = 1;
  std::string name_;  // "1", "1H", "u0", "u0H"

  mutable spinlock lock_;

  // --- L ---
  node_list worklist_;
  int nr_pending_ = 0;
  int nr_running_ = 0;
  int nr_workers_ = 0;
  int nr_idle_ = 0;
  std::vector<worker*> workers_;  // every live worker
  std::vector<worker*> idle_;     // LIFO: back is the most recently idle
  std::vector<worker*> zombies_;  // left their loop; to be joined
  bool manager_active_ = false;
  int nr_creating_ = 0;           // workers whose thread_ is not stored yet
  int nr_starting_ = 0;           // created, thread not yet on idle_
  bool stopping_ = false;
  bool idle_timer_armed_ = false;
  std::uint64_t creation_failures_ = 0;
  bool creation_failing_ = false;  // the last attempt failed (logged once per streak)
  bool cap_warned_ = false;        // "at the cap" logged
  int peak_workers_ = 0;
  std::uint64_t blocking_regions_ = 0;
  std::uint64_t blocked_detected_ = 0;
  std::uint64_t hogs_detected_ = 0;
  std::uint64_t maydays_ = 0;
  std::uint64_t rescued_ = 0;
  int next_worker_id_ = 0;
  std::uint64_t items_executed_ = 0;
  std::uint64_t spin_handoffs_ = 0;  // wake-ups a spinning idle worker caught
  std::uint64_t workers_created_ = 0;
  std::uint64_t workers_destroyed_ = 0;
  // live_delta_ of workers that have exited. Only the sum over every
  // worker of every pool means anything.
  std::int64_t retired_live_ = 0;

  pool_timer idle_timer_;  // L: armed when there are too many idle workers

  // The pool's io_uring. Its SQ side has its own lock; its CQ side is
  // reaped under L.
  std::unique_ptr<ring> ring_;  // I
  timer_heap timers_;           // L: sleeping coroutines, delayed work, idle timer
  worker* poller_ = nullptr;    // L: the idle worker sleeping in the ring
  worker* spinner_ = nullptr;   // L: the idle worker spinning for a hand-off
  // Operations submitted and not yet reaped (A, relaxed: shutdown waits
  // for it to reach zero after cancelling everything).
  std::atomic<std::int64_t> inflight_{0};
  // Threads between choosing a worker to wake (under the lock) and waking
  // it (after): stop_and_join() frees no worker while one is at it. The
  // release decrement after the wake pairs with its acquire load.
  std::atomic<int> signalling_{0};
  // Set at shutdown once everything was cancelled: new operations then
  // complete at once with operation_canceled (A, relaxed).
  std::atomic<bool> io_closed_{false};
  // Bumped whenever something may come to want this pool's CPU: an item
  // queued or activated, a timer armed, a flush begun, the poller leaving
  // the ring (then nobody else fires the timers), a worker leaving or
  // rejoining nr_running. Written under L
  // (relaxed load and store: no locked instruction); read without L by a
  // worker running the continuations of yields straight away
  // (run_yields()), which stops when it changes. A stale read lets at most
  // one more continuation run before the newcomer, which the queuer has
  // already left to this worker (or the watchdog) to run.
  std::atomic<std::uint32_t> work_gen_{0};
  // L held.
  void bump_work_gen() noexcept {
    work_gen_.store(work_gen_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }

  // Provided buffers for receivers (multishot_recv.cpp), set up by the
  // first receive on this pool: recv_buffers() returns them, or null with
  // bufs_error_ saying why not. Written once under bufs_once_; destroyed
  // after the ring (~pool).
  std::once_flag bufs_once_;
  std::unique_ptr<buffer_ring> bufs_;
  int bufs_error_ = 0;
  buffer_ring* recv_buffers();
  // L: bufs_ once set up, for threads that did not set it up and do not
  // go through bufs_once_ (stats).
  buffer_ring* bufs_set_up_ = nullptr;
  // L: receivers whose receive ended for want of a buffer, oldest first.
  std::vector<recv_state*> starved_recv_;
  // L: receives into a receiver's own buffer, the pool's all being taken.
  std::uint64_t recv_shortages_ = 0;

  pool();
  pool(const pool&) = delete;
  pool& operator=(const pool&) = delete;
  ~pool();

  // --- operations (definitions in pool.cpp) ---
  void start();
  std::int64_t live_coroutines() const;

  // L held: moves completions into the worklist and fires due timers
  // (dropping L around timer callbacks). Returns whether anything was done.
  bool poll_locked(std::unique_lock<spinlock>& lk, bool poller = false);
  // L held: arms t; wakes the poller if t became the earliest deadline.
  void arm_timer_locked(timer_node* t, clock::time_point deadline);
  // Arms t on this pool's heap (takes L).
  void arm_timer(timer_node* t, clock::time_point deadline);
  bool cancel_timer(timer_node* t);
  // Fires now, on the caller's thread, every armed timer whose callback
  // is fire; returns how many.
  int fire_all_timers(void (*fire)(timer_node*));
  // Sleep in the ring as the poller (L held on entry and exit).
  void poll_as_idle(worker* w, std::unique_lock<spinlock>& lk);
  // L held, w idle: spins up to idle_spin for a hand-off before w sleeps.
  void spin_idle(worker* w, std::unique_lock<spinlock>& lk);
  // L held: make sure someone reaps the ring when no poller sleeps in it.
  worker* kick_poller_locked() noexcept;
  // L held: a CQE for op arrived; queue its coroutine.
  void complete_op(io_op* op, int res, unsigned flags) noexcept;
  // Queues n for q (q->pool_ == this). Returns false if the pool is stopped.
  bool insert(pwq* q, work_node* n);
  // L held: links n for q, on the worklist or q's inactive list, with the
  // flush colour new items get now, or (color >= 0) the one it was given
  // in an outbox.
  void enqueue_locked(pwq* q, work_node* n, int color = -1) noexcept;
  // L held: links what the worker deferred while running its item.
  void link_deferred(worker* w) noexcept;
  // On w, running an item of q (q->pool_ == this, an unbound pool): puts n
  // in w's outbox if it is open. Returns false if not: insert() it then.
  bool outbox_push(worker* w, pwq* q, work_node* n);
  // L held: links what w's outbox holds, closing it for the rest of the
  // item if close. Returns whether anything was linked.
  bool drain_outbox_locked(worker* w, bool close) noexcept;
  // L held: the same with close, taking O only if w's outbox is open or
  // holds anything.
  bool close_outbox_locked(worker* w) noexcept;
  // L held, the pool no longer full (a worker about to stop running): links
  // and closes every outbox, so that nothing spawned waits for its
  // spawner's item to return, and later spawns go to the worklist. Returns
  // whether anything was linked.
  bool close_outboxes_locked() noexcept;
  // L held (dropped while signalling): wakes idle workers while the pool
  // runs fewer than it wants and work waits.
  void wake_for_spare_concurrency(std::unique_lock<spinlock>& lk);
  // Internal hooks where a worker leaves and rejoins nr_running (the
  // kernel's wq_worker_sleeping / wq_worker_running). Called by the worker
  // itself for annotated blocking and cpu-intensive items.
  void worker_sleeping(worker* w);
  void worker_running(worker* w);
  void stop_and_join();
  void idle_cull();
  // The watchdog's look at this pool (watchdog.cpp): finds workers blocked
  // or hogging while work waits, retries worker creation and calls the
  // rescuers. Returns whether work was waiting.
  bool watchdog_tick(clock::time_point now, task_stat_files& stat_files);
  clock::time_point next_create_retry_{};  // L: watchdog's creation cooldown
  std::uint64_t wd_executed_ = 0;          // L: items_executed_ at the watchdog's last look
  // L held: removes a queued node (a cancel). *flushed gets a workqueue
  // whose flush this completed, to be signalled after unlocking.
  bool unlink_pending(work_node* n, worker* scheduled_on, wq_impl** flushed);

  // L held
  bool need_more_worker() const noexcept {
    return !worklist_.empty() && nr_running_ < concurrency_;
  }
  bool keep_working() const noexcept {
    return !worklist_.empty() && nr_running_ <= concurrency_;
  }
  // Whether w, going idle now, would sleep in the ring (rather than spin
  // or park): nobody else is the poller, and w is neither spinning next
  // nor leaving.
  bool polls_when_idle(const worker* w) const noexcept {
    return poller_ == nullptr && !w->spin_next_ && !w->exit_;
  }
  bool too_many_workers() const noexcept;
  worker* wake_one_idle() noexcept;  // L held; returns the worker to signal
  // L held: w joins idle_; arms the idle timer if that makes too many.
  void enter_idle_locked(worker* w);
  void activate_inactive(pwq* q) noexcept;
  // L held: an item of q leaves flight; returns its workqueue if that
  // completed a flush (signal with finish_flush_of after unlocking).
  wq_impl* retire_item(pwq* q, std::uint32_t flags, bool was_active) noexcept;

  bool create_worker();
  void apply_thread_attributes(worker* w);
  void worker_main(worker* w);
  // L held (dropped while creating). The manager role: one spare before
  // starting work, or as many as needed while work waits with none idle.
  void manage_workers_once(std::unique_lock<spinlock>& lk);
  void manage_workers(std::unique_lock<spinlock>& lk);
  // L held: after a worker left nr_running, get pending work a worker.
  void kick(std::unique_lock<spinlock>& lk);
  // L held: work waits and no worker can be had; calls the rescuers of
  // the workqueues whose items wait (the kernel's send_mayday).
  void send_mayday_locked();
  // L held: a worker whose item ended counts again if something took it
  // out of nr_running meanwhile, and names a CPU hog it ran.
  void rejoin_after_item(worker* w, std::unique_lock<spinlock>& lk);
  // L held (dropped while signalling): w stops counting in nr_running.
  void leave_running_locked(worker* w, std::unique_lock<spinlock>& lk);
  // Queues op's coroutine with result res from a thread that is not this
  // pool's running worker (a canceller, the resolver), waking the pool.
  void complete_from_outside(io_op* op, int res);
  // From a thread that is not running an item of this pool, after queueing
  // under L by other means (a receiver's waiter): wakes an idle worker if
  // the work needs one. Takes L.
  void wake_for_queued();
  void process_one(worker* w, work_node* n, std::unique_lock<spinlock>& lk);
  // L dropped, on w's thread, right after an item that may yield ran:
  // resumes the continuations its yields left in w->deferred_ while nothing
  // else has come for the pool since gen. Returns how many ran.
  int run_yields(worker* w, std::uint32_t gen) noexcept;
};

// Logs a CPU hog once per item identity (watchdog.cpp).
void report_hog(runtime_impl& rt, const std::string& what, const std::string& wq,
                std::chrono::milliseconds ran);
// A readable name for a running item (watchdog.cpp).
std::string describe_item(const void* what, bool callable);

// Signal a worker chosen by wake_one_idle(), after dropping the pool lock.
void signal_worker(worker* w) noexcept;
// On a worker thread: counts a detached coroutine started (+1) or done (-1).
void note_detached(std::int64_t delta) noexcept;
void finish_flush_of(wq_impl* wq) noexcept;

// What the pools need of cowq::work's private state (defined in work.cpp).
struct work_access {
  static void start_run(work& w, worker* on) noexcept;  // L held
  static bool finish_run(work& w) noexcept;             // L held; true: wake waiters
  static void wake_waiters(work& w) noexcept;           // L dropped
  static worker* running_on(const work& w) noexcept;    // L held
  static std::string describe(const work& w);           // the callable's type
};

// The thread's worker and the pool workqueue of the item it runs.
worker* current_worker() noexcept;
void set_current_worker(worker* w) noexcept;  // a rescuer's thread
pwq* current_pwq() noexcept;

}  // namespace cowq::detail
