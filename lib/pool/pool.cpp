/*
 * Worker pools and concurrency management, after the kernel's CMWQ
 * (kernel/workqueue.c). See docs/concepts.md for the user-level picture.
 *
 * A pool is a worklist plus the worker threads that serve it, all pinned to
 * the pool's cpumask. Every CPU the runtime uses has a normal and a
 * high-priority pool; every NUMA node has an unbound pool of each priority.
 * A workqueue reaches a pool through a pwq, which counts the workqueue's
 * active items on that pool and parks those beyond max_active on its
 * inactive list, to be activated in order as active ones finish.
 *
 * Each worker is idle (parked, on idle_) or busy. A busy worker is counted
 * in nr_running unless it has left for a blocking region or a
 * cpu-intensive item. The rules, with concurrency = 1 for a CPU's pool and
 * the number of CPUs for an unbound pool:
 *
 *  need_more_worker   worklist non-empty && nr_running < concurrency:
 *                     queueing wakes one idle worker (the most recently
 *                     idle, whose cache is warmest).
 *  keep_working       worklist non-empty && nr_running <= concurrency:
 *                     a busy worker takes the next item; otherwise it goes
 *                     idle, so a CPU is never over-subscribed for long.
 *  may_start_working  nr_idle > 0: a worker about to start work that finds
 *                     no idle spare first creates one (the manager role),
 *                     so the moment a running item blocks there is a worker
 *                     ready to take over without paying thread creation.
 *  worker_sleeping    a busy worker leaving nr_running wakes an idle one if
 *                     that leaves work pending with nothing running;
 *  worker_running     rejoining makes it count again; if that
 *                     over-subscribes the pool the worker goes idle after
 *                     its current item (keep_working fails).
 *  too_many_workers   more than kIdleReserve idle and idle-beyond-reserve
 *                     at least a quarter of the busy ones: the idle timer
 *                     destroys the longest-idle workers once they have been
 *                     idle for runtime_options::idle_timeout.
 *
 * Waking moves the chosen worker out of idle and counts it as running, under
 * the pool lock, before its thread actually runs. Queuers that follow see
 * nr_running == 1 and do not wake a second one, which keeps a burst of
 * queueing from outside down to one futex wake.
 *
 * Invariants, all under pool::lock_:
 *  - nr_running == number of workers with counted_;
 *    nr_idle == idle_.size() == workers with idle_; an idle worker is never
 *    counted.
 *  - an item is on at most one list: the worklist, a pwq's inactive list or
 *    one worker's scheduled list (a callable work queued while it runs).
 *  - pwq::nr_active == items of that pwq on the worklist, on scheduled lists
 *    or being run; it never exceeds max_active.
 *  - a callable work runs on at most one worker of the pool at a time.
 *
 * The hot path (insert, pop, run, complete) takes the pool lock once on each
 * side, allocates nothing, and adds one relaxed store (worker::seq_) per
 * item for the benefit of observers.
 */
#include "pool.hpp"

#include "../log/log.hpp"
#include "../net/multishot_accept.hpp"
#include "../net/multishot_recv.hpp"
#include "../runtime/runtime_impl.hpp"
#include "../util/futex.hpp"
#include "../util/tsan.hpp"
#include "../wq/wq_impl.hpp"
#include "watchdog.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <climits>
#include <cstring>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace cowq::detail {

namespace {

// Idle workers kept regardless of load (the kernel keeps 2).
constexpr int kIdleReserve = 2;
// Idle beyond the reserve may be a quarter of the busy count before culling
// starts (MAX_IDLE_WORKERS_RATIO).
constexpr int kMaxIdleWorkersRatio = 4;
// Reaped workers' structs are kept until shutdown, so that a waker that was
// preempted between choosing a worker and signalling it never touches freed
// memory; past this many the oldest are freed.
constexpr std::size_t kMaxZombies = 256;
// Submission queue entries per pool ring; the completion queue is 8 times
// larger and the kernel keeps any overflow, so this bounds only how many
// operations are prepared between two submissions.
constexpr unsigned kRingEntries = 256;
// Items run between two submissions at most, when work keeps coming.
constexpr int kSubmitBatch = 16;
// Continuations of yields run back to back without the pool lock, at most
// (run_yields()).
constexpr int kYieldRunLimit = 64;

// Spawns a worker of an unbound pool keeps in its outbox before linking
// them mid-item (worker::outbox_).
constexpr int kOutboxBatch = 16;

// initial-exec: read with one %fs-relative load instead of a call to
// __tls_get_addr on every item; libcowq is linked at start-up, not dlopen'ed
// late, so its TLS fits the static block.
[[gnu::tls_model("initial-exec")]] thread_local worker* tls_worker = nullptr;
[[gnu::tls_model("initial-exec")]] thread_local pwq* tls_pwq = nullptr;

void worker_park(worker* w) noexcept {
  // Acquire pairs with the release store in signal_worker().
  while (w->wake_.load(std::memory_order_acquire) == 0)
    futex_wait(&w->wake_, 0);
}

// A coroutine frame begins with its resume function in the GCC and Clang
// ABIs: it names the coroutine.
const void* resume_fn_of(std::coroutine_handle<> h) noexcept {
  const void* fn;
  std::memcpy(&fn, h.address(), sizeof fn);
  return fn;
}

void idle_timer_fired(timer_node* t) {
  static_cast<pool_timer*>(t)->pool_->idle_cull();
}

}  // namespace

worker* current_worker() noexcept { return tls_worker; }
void set_current_worker(worker* w) noexcept { tls_worker = w; }
pwq* current_pwq() noexcept { return tls_pwq; }

std::int64_t pool::live_coroutines() const {
  std::lock_guard g(lock_);
  std::int64_t n = retired_live_;
  for (auto* w : workers_) n += w->live_delta_.load(std::memory_order_relaxed);
  return n;
}

void note_detached(std::int64_t delta) noexcept {
  worker* w = tls_worker;
  w->live_delta_.store(w->live_delta_.load(std::memory_order_relaxed) + delta,
                       std::memory_order_relaxed);
}

void signal_worker(worker* w) noexcept {
  worker* const self = tls_worker;
  if (w == self) return;
  // A hand-off from a worker of another CPU's pool: the woken worker may
  // spin for the next one (see idle_spin). Not from its own CPU, where a
  // spinner would keep the CPU from the very thread it waits for.
  if (self != nullptr && self->pool_->cpu_ >= 0 && w->pool_->cpu_ >= 0 &&
      self->pool_->cpu_ != w->pool_->cpu_)
    w->peer_woken_.store(true, std::memory_order_relaxed);
  // Acquire pairs with the release of the lock the spinner dropped after
  // setting spinning_: it is awake and watches wake_, no system call needed.
  if (w->spinning_.load(std::memory_order_acquire)) {
    // Release pairs with the acquire load in pool::spin_idle().
    w->wake_.store(1, std::memory_order_release);
    return;
  }
  // Acquire pairs with the release store in poll_as_idle(): a poller is
  // woken through its ring, everyone else through the futex.
  if (w->polling_.load(std::memory_order_acquire)) {
    w->pool_->ring_->wake();
    return;
  }
  // Release pairs with the acquire load in worker_park().
  w->wake_.store(1, std::memory_order_release);
  futex_wake(&w->wake_, 1);
}

bool pool::too_many_workers() const noexcept {
  const int nr_idle = nr_idle_ + (manager_active_ ? 1 : 0);
  const int nr_busy = nr_workers_ - nr_idle;
  return nr_idle > kIdleReserve &&
         (nr_idle - kIdleReserve) * kMaxIdleWorkersRatio >= nr_busy;
}

void pool::enter_idle_locked(worker* w) {
  w->idle_ = true;
  idle_.push_back(w);
  ++nr_idle_;
  w->last_active_ = clock::now();
  // Checked by every worker that becomes idle, a new one included: the
  // surplus of a burst of creation may only show once the last one starts.
  if (too_many_workers() && !idle_timer_armed_) {
    idle_timer_armed_ = true;
    arm_timer_locked(&idle_timer_, w->last_active_ + rt_->opts_.idle_timeout);
  }
}

worker* pool::wake_one_idle() noexcept {
  if (idle_.empty()) return nullptr;
  // A spinner is awake and on its CPU already: it takes the hand-off with
  // no system call, and no second thread starts beside it on that CPU.
  // (Still idle: the idle timer may have taken it to retire.)
  if (spinner_ != nullptr && spinner_->idle_) {
    if (spinner_ != idle_.back())
      std::swap(*std::find(idle_.begin(), idle_.end(), spinner_), idle_.back());
    spinner_ = nullptr;  // taken: another idle worker may spin now
  }
  worker* w = idle_.back();
  idle_.pop_back();
  --nr_idle_;
  w->idle_ = false;
  w->counted_ = true;
  ++nr_running_;
  return w;
}

pool::pool() = default;

pool::~pool() {
  // The kernel may write into the provided buffers until the ring is gone.
  ring_.reset();
  bufs_.reset();
}

void pool::start() {
  const auto cap = static_cast<std::size_t>(rt_->opts_.max_workers_per_pool);
  workers_.reserve(cap);
  idle_.reserve(cap);
  idle_timer_.pool_ = this;
  idle_timer_.fire_ = &idle_timer_fired;
  ring_ = std::make_unique<ring>(kRingEntries);
  if (cpu_ >= 0)
    log().debug("pool {}: created on CPU {}{}, concurrency {}", name_, cpu_,
                highpri_ ? " (high priority)" : "", concurrency_);
  else
    log().debug("pool {}: created unbound on node {} ({} CPUs){}, concurrency {}", name_,
                node_, CPU_COUNT(&cpumask_), highpri_ ? " (high priority)" : "", concurrency_);
  if (!create_worker())
    throw std::runtime_error("cowq: cannot start the first worker of pool " +
                             name_);
}

bool pool::create_worker() {
  auto w = std::make_unique<worker>();
  {
    std::lock_guard g(lock_);
    if (stopping_ || nr_workers_ >= rt_->opts_.max_workers_per_pool) return false;
    w->pool_ = this;
    w->id_ = next_worker_id_++;
    w->name_ = rt_->opts_.name + "/" +
               (cpu_ >= 0 ? std::to_string(cpu_) : "u" + std::to_string(node_)) +
               ":" + std::to_string(w->id_) + (highpri_ ? "H" : "");
    ++nr_workers_;
    peak_workers_ = std::max(peak_workers_, nr_workers_);
    ++nr_creating_;
    ++nr_starting_;
    workers_.push_back(w.get());
  }
  std::thread t;
  try {
    if (rt_->fail_thread_creation_.load(std::memory_order_relaxed))
      throw std::system_error(EAGAIN, std::generic_category(), "injected");
    t = std::thread(&pool::worker_main, this, w.get());
  } catch (const std::system_error& e) {
    bool first;
    {
      std::lock_guard g(lock_);
      --nr_workers_;
      --nr_creating_;
      --nr_starting_;
      workers_.erase(std::find(workers_.begin(), workers_.end(), w.get()));
      ++creation_failures_;
      first = !std::exchange(creation_failing_, true);
    }
    // The watchdog retries while work waits: say it once per streak.
    if (first) log().error("pool {}: cannot create a worker: {}", name_, e.what());
    return false;
  }
  bool recovered;
  {
    std::lock_guard g(lock_);
    w->thread_ = std::move(t);
    --nr_creating_;
    ++workers_created_;
    recovered = std::exchange(creation_failing_, false);
  }
  if (recovered) log().info("pool {}: workers can be created again", name_);
  log().debug("pool {}: created worker {}", name_, w->name_);
  w.release();
  return true;
}

void pool::apply_thread_attributes(worker* w) {
  const auto tid = static_cast<pid_t>(::syscall(SYS_gettid));
  ::pthread_setname_np(::pthread_self(), w->name_.substr(0, 15).c_str());
  if (::sched_setaffinity(0, sizeof(cpumask_), &cpumask_) != 0)
    log().warn("pool {}: cannot pin {}: {}", name_, w->name_, std::strerror(errno));
  if (highpri_ &&
      ::setpriority(PRIO_PROCESS, static_cast<id_t>(tid), rt_->opts_.highpri_nice) != 0 &&
      !rt_->nice_warned_.exchange(true))
    log().warn(
        "high-priority pools run at nice 0: setting nice {} failed ({}); "
        "grant CAP_SYS_NICE or raise RLIMIT_NICE to get it",
        rt_->opts_.highpri_nice, std::strerror(errno));
}

void pool::worker_main(worker* w) {
  tls_worker = w;
  apply_thread_attributes(w);

  std::unique_lock lk(lock_);
  // Published only now, so whoever sees the tid sees a named, pinned thread.
  w->tid_ = static_cast<pid_t>(::syscall(SYS_gettid));
  --nr_starting_;
  enter_idle_locked(w);
  // Work may have been queued while this thread was starting.
  if (need_more_worker()) signal_worker(wake_one_idle());

  const auto spin_window = 2 * rt_->opts_.idle_spin;
  for (;;) {
    while (w->idle_ && !w->exit_) {
      // Only onto a CPU nothing of this pool runs on: beside a running
      // worker, a spin would take its CPU time for nothing.
      if (w->spin_next_ && nr_running_ == 0 && spinner_ == nullptr) {
        spin_idle(w, lk);
        continue;
      }
      if (poller_ == nullptr) {
        // One idle worker sleeps in the ring for completions, timers and
        // wake-ups; the others sleep on their futex.
        poll_as_idle(w, lk);
        continue;
      }
      w->wake_.store(0, std::memory_order_relaxed);
      lk.unlock();
      worker_park(w);
      lk.lock();
    }
    if (w->exit_) break;
    // A hand-off from another CPU that came soon after this worker went
    // idle: the next time it goes idle it spins, as a spin would have
    // caught this one. A worker whose spin caught its hand-off keeps
    // spinning; one that missed spins no more until this happens again.
    if (w->peer_woken_.exchange(false, std::memory_order_relaxed) && !w->spin_next_ &&
        spin_window.count() > 0)
      w->spin_next_ = clock::now() - w->last_active_ <= spin_window;

    int unsubmitted_items = 0;
    // Requests left for this worker's own sleep in the ring to submit.
    bool held = false;
    // Busy and counted: whoever woke us did the accounting. Make sure a
    // spare is idle before starting, so a block finds one ready.
    if (nr_idle_ + nr_starting_ == 0 && !worklist_.empty()) manage_workers_once(lk);

    for (;;) {
      // Between items: completions and due timers join the worklist.
      poll_locked(lk);
      work_node* n;
      if (!w->scheduled_.empty()) {
        n = w->scheduled_.pop_front();
      } else if (keep_working()) {
        n = worklist_.pop_front();
        --nr_pending_;
        if ((n->flags_ & node_callable) != 0) {
          worker* owner = work_access::running_on(*static_cast<work_item_node*>(n)->self_);
          if (owner != nullptr) {
            // Non-reentrancy: run after the current run, on its worker.
            set_where(n, node_where::scheduled);
            owner->scheduled_.push_back(n);
            continue;
          }
        }
      } else if (worklist_.empty() && close_outboxes_locked()) {
        // This worker is about to stop running, so the pool is no longer
        // full: what the others spawned is for it, and for any other idle
        // worker the pool still wants.
        wake_for_spare_concurrency(lk);
        continue;
      } else {
        break;
      }
      // The poll found more work after all: the held requests now wait
      // behind it, as in the batch below.
      if (std::exchange(held, false) && ring_->has_unsubmitted()) watchdog_->work_waits();
      process_one(w, n, lk);
      // What the items prepared goes to the kernel once per loop turn:
      // when the worklist runs dry, and every kSubmitBatch items so a
      // long turn does not hold the first requests back.
      if (ring_->has_unsubmitted()) {
        if (++unsubmitted_items >= kSubmitBatch) {
          unsubmitted_items = 0;
          lk.unlock();
          ring_->submit();
          lk.lock();
        } else if (worklist_.empty() && w->scheduled_.empty() && polls_when_idle(w)) {
          // Unless the poll finds more, this worker goes to sleep in the
          // ring next, and submits them with its sleep: one system call,
          // not two.
          held = true;
        } else if (worklist_.empty()) {
          unsubmitted_items = 0;
          lk.unlock();
          ring_->submit();
          lk.lock();
        } else {
          // The requests wait behind the next item: should it block, the
          // watchdog must be awake to hand them to another worker.
          watchdog_->work_waits();
        }
      }
    }

    // Go idle, leaving nothing prepared behind, unless this worker sleeps
    // in the ring next and submits it there.
    if (!polls_when_idle(w) && ring_->has_unsubmitted()) {
      lk.unlock();
      ring_->submit();
      lk.lock();
      // Whatever was queued while the lock was dropped found this worker
      // still counted as running and woke nobody: it is ours to run.
      if (keep_working() && !w->exit_) continue;
    }
    w->counted_ = false;
    --nr_running_;
    enter_idle_locked(w);
  }

  // Leaving: asked by the idle timer or by shutdown.
  if (w->idle_) {
    idle_.erase(std::find(idle_.begin(), idle_.end(), w));
    --nr_idle_;
    w->idle_ = false;
  }
  workers_.erase(std::find(workers_.begin(), workers_.end(), w));
  --nr_workers_;
  retired_live_ += w->live_delta_.load(std::memory_order_relaxed);
  w->live_delta_.store(0, std::memory_order_relaxed);
  if (!stopping_) ++workers_destroyed_;
  zombies_.push_back(w);
  // If this was the poller, another idle worker must take over the ring
  // and the timers.
  worker* heir = stopping_ ? nullptr : kick_poller_locked();
  // Nobody idle to take the ring over: the busy workers reap it between
  // items, and the watchdog while one is stuck in an item.
  if (heir == nullptr && poller_ == nullptr && !stopping_) watchdog_->work_waits();
  lk.unlock();
  if (heir != nullptr) signal_worker(heir);
  log().debug("pool {}: worker {} exits", name_, w->name_);
  tls_worker = nullptr;
  // Release pairs with the acquire load in reap_zombies().
  w->exited_.store(true, std::memory_order_release);
}

void pool::manage_workers(std::unique_lock<spinlock>& lk) {
  if (manager_active_) return;
  manager_active_ = true;
  // Keep creating while work waits with too few running and no idle worker
  // to wake (the kernel's need_to_create_worker); each new worker takes
  // work on its own if it is still wanted when it starts.
  bool stuck = false;
  while (nr_idle_ + nr_starting_ == 0 && !worklist_.empty()) {
    if (nr_workers_ >= rt_->opts_.max_workers_per_pool) {
      stuck = true;
      if (!std::exchange(cap_warned_, true)) {
        lk.unlock();
        log().warn("pool {}: at its cap of {} workers; items wait until one is free",
                   name_, rt_->opts_.max_workers_per_pool);
        lk.lock();
      }
      break;
    }
    lk.unlock();
    const bool created = create_worker();
    lk.lock();
    if (!created) {
      stuck = true;
      break;
    }
    if (!need_more_worker()) break;
  }
  manager_active_ = false;
  // Work waits and no worker can be had: rescuers run what they may.
  if (stuck && need_more_worker() && nr_idle_ + nr_starting_ == 0) send_mayday_locked();
}

void pool::manage_workers_once(std::unique_lock<spinlock>& lk) {
  if (manager_active_ || nr_workers_ >= rt_->opts_.max_workers_per_pool) return;
  manager_active_ = true;
  lk.unlock();
  create_worker();
  lk.lock();
  manager_active_ = false;
}

void pool::kick(std::unique_lock<spinlock>& lk) {
  if (!need_more_worker()) return;
  if (worker* w = wake_one_idle()) {
    lk.unlock();
    signal_worker(w);
    lk.lock();
    return;
  }
  // Nobody idle to take over: whoever leaves nr_running pays for the thread,
  // since it is about to block or burn CPU anyway.
  manage_workers(lk);
}

void pool::activate_inactive(pwq* q) noexcept {
  if (q->nr_inactive_ == 0) return;
  while (q->nr_active_ < q->max_active_ && !q->inactive_.empty()) {
    work_node* n = q->inactive_.pop_front();
    --q->nr_inactive_;
    ++q->nr_active_;
    set_where(n, node_where::worklist);
    worklist_.push_back(n);
    ++nr_pending_;
    bump_work_gen();
  }
}

wq_impl* pool::retire_item(pwq* q, std::uint32_t flags, bool was_active) noexcept {
  const int c = (flags & node_color) != 0 ? 1 : 0;
  --q->nr_in_flight_[c];
  if (was_active) {
    --q->nr_active_;
    activate_inactive(q);
  }
  if (q->flush_color_ == c && q->nr_in_flight_[c] == 0) {
    q->flush_color_ = -1;
    return q->wq_;
  }
  return nullptr;
}

void finish_flush_of(wq_impl* wq) noexcept {
  if (wq == nullptr) return;
  // Release pairs with the acquire load in wq_impl::flush().
  if (wq->pwqs_to_flush_.fetch_sub(1, std::memory_order_acq_rel) == 1)
    futex_wake(&wq->pwqs_to_flush_);
}

void pool::enqueue_locked(pwq* q, work_node* n, int color) noexcept {
  bump_work_gen();
  const int c = color >= 0 ? color : q->work_color_;
  n->flags_ = (n->flags_ & ~node_color) | (c != 0 ? node_color : 0u);
  n->pwq_ = q;
  ++q->nr_in_flight_[c];
  ++q->queued_;
  if (q->nr_active_ < q->max_active_) {
    ++q->nr_active_;
    set_where(n, node_where::worklist);
    worklist_.push_back(n);
    ++nr_pending_;
    // Work waits behind running workers, or with no idle one to wake: the
    // watchdog must look (one relaxed load while it is awake).
    if (nr_running_ >= concurrency_ || idle_.empty()) watchdog_->work_waits();
  } else {
    set_where(n, node_where::inactive);
    q->inactive_.push_back(n);
    ++q->nr_inactive_;
  }
}

void pool::link_deferred(worker* w) noexcept {
  while (work_node* n = w->deferred_.pop_front()) enqueue_locked(n->pwq_, n);
}

bool pool::outbox_push(worker* w, pwq* q, work_node* n) {
  {
    std::lock_guard o(w->outbox_lock_);
    if (!w->outbox_open_) return false;
    // The colour is the one enqueue_locked() would give it now: a flush
    // begun before this spawn must wait for it. Its spawner, an item of q
    // still running, keeps that colour in flight until the outbox is linked.
    if (q->outbox_color_.v.load(std::memory_order_relaxed) != 0)
      n->flags_ |= node_color;
    else
      n->flags_ &= ~node_color;
    n->pwq_ = q;
    w->outbox_.push_back(n);
    const int len = w->outbox_len_.load(std::memory_order_relaxed) + 1;
    w->outbox_len_.store(len, std::memory_order_relaxed);
    if (len > 1 && len < kOutboxBatch) return true;
  }
  if (w->outbox_len_.load(std::memory_order_relaxed) == 1) {
    // Work now waits behind this item: a sleeping watchdog must look, in
    // case the item blocks. The fence in work_waits_unlocked() pairs with
    // the sleeper's: it sees outbox_len_ (watchdog_tick), or we see it
    // asleep and wake it.
    watchdog_->work_waits_unlocked();
    return true;
  }
  // An item spawning many: the other workers get them in batches, as they
  // finish their items. (The pool is full: nobody idle is owed a wake-up.)
  std::lock_guard g(lock_);
  drain_outbox_locked(w, false);
  return true;
}

bool pool::drain_outbox_locked(worker* w, bool close) noexcept {
  std::lock_guard o(w->outbox_lock_);
  if (close) w->outbox_open_ = false;
  if (w->outbox_.empty()) return false;
  while (work_node* n = w->outbox_.pop_front())
    enqueue_locked(n->pwq_, n, (n->flags_ & node_color) != 0 ? 1 : 0);
  w->outbox_len_.store(0, std::memory_order_relaxed);
  return true;
}

void pool::wake_for_spare_concurrency(std::unique_lock<spinlock>& lk) {
  // Each wake-up counts its worker running at once, so need_more_worker()
  // turns false after as many as the pool has room for.
  std::array<worker*, 8> wake{};
  std::size_t n = 0;
  while (n < wake.size() && need_more_worker())
    if ((wake[n] = wake_one_idle()) != nullptr)
      ++n;
    else
      break;
  if (n == 0) return;
  lk.unlock();
  for (std::size_t i = 0; i < n; ++i) signal_worker(wake[i]);
  lk.lock();
}

bool pool::close_outbox_locked(worker* w) noexcept {
  // Skips O for the workers that never opened one.
  if (!w->outbox_open_ && w->outbox_len_.load(std::memory_order_relaxed) == 0) return false;
  return drain_outbox_locked(w, true);
}

bool pool::close_outboxes_locked() noexcept {
  if (concurrency_ <= 1) return false;
  bool linked = false;
  for (worker* o : workers_) linked |= close_outbox_locked(o);
  return linked;
}

bool pool::insert(pwq* q, work_node* n) {
  worker* wake = nullptr;
  {
    std::lock_guard g(lock_);
    if (stopping_) return false;
    enqueue_locked(q, n);
    if (need_more_worker() && (wake = wake_one_idle()) != nullptr)
      signalling_.fetch_add(1, std::memory_order_relaxed);
  }
  if (wake != nullptr) {
    // The caller may be a thread of nobody's (Asio's, a sync_wait caller)
    // racing the runtime's shutdown: see signalling_.
    signal_worker(wake);
    signalling_.fetch_sub(1, std::memory_order_release);
  }
  return true;
}

bool requeue_current(work_node* n) {
  pwq* q = tls_pwq;
  if (q == nullptr) return false;
  // tls_pwq is set only while tls_worker runs an item of q, on q's pool.
  n->pwq_ = q;
  tls_worker->deferred_.push_back(n);
  return true;
}

bool pool::unlink_pending(work_node* n, worker* scheduled_on, wq_impl** flushed) {
  pwq* q = n->pwq_;
  bool was_active = true;
  switch (where(n)) {
    case node_where::worklist:
      worklist_.remove(n);
      --nr_pending_;
      break;
    case node_where::inactive:
      q->inactive_.remove(n);
      --q->nr_inactive_;
      was_active = false;
      break;
    case node_where::scheduled:
      scheduled_on->scheduled_.remove(n);
      break;
    case node_where::none:
      return false;
  }
  set_where(n, node_where::none);
  *flushed = retire_item(q, n->flags_, was_active);
  return true;
}

void pool::process_one(worker* w, work_node* n, std::unique_lock<spinlock>& lk) {
  pwq* q = n->pwq_;
  const std::uint32_t flags = n->flags_;
  set_where(n, node_where::none);
  work* wk = nullptr;
  if ((flags & node_callable) != 0) {
    wk = static_cast<work_item_node*>(n)->self_;
    work_access::start_run(*wk, w);
  }
  w->current_ = n;
  w->current_pwq_ = q;
  // For a hog report: the node may be gone by the time anyone asks.
  w->current_callable_ = wk != nullptr;
  w->current_what_ = wk != nullptr ? static_cast<const void*>(wk)
                                   : resume_fn_of(static_cast<resume_node*>(n)->handle_);
  const bool cpu_intensive = has(q->wq_->flags_, wq_flags::cpu_intensive);
  if (cpu_intensive) leave_running_locked(w, lk);
  // Only while every worker the pool wants runs: with one idle, a spawn
  // goes straight to the worklist and wakes it. A worker that stops running
  // later links and closes them all (close_outboxes_locked()). Not for an
  // ordered workqueue, whose items keep their queueing order with those
  // queued by other threads after them.
  w->outbox_open_ = concurrency_ > 1 && nr_running_ >= concurrency_ && !w->rescuer_ &&
                    !cpu_intensive && !has(q->wq_->flags_, wq_flags::ordered);
  // Should the coroutine yield, and nothing else want this pool, it may go
  // on at once: nothing queued, nothing of q held back by max_active, no
  // flush of q under way, and no timer armed unless a poller sleeps in the
  // ring to fire it (what it queues then bumps work_gen_, and so does its
  // waking up). work_gen_ says when that ends.
  const bool yields_may_run = wk == nullptr && !w->rescuer_ && worklist_.empty() &&
                              nr_running_ <= concurrency_ &&
                              q->nr_inactive_ == 0 && q->flush_color_ < 0 &&
                              (timers_.empty() || poller_ != nullptr);
  const std::uint32_t gen = work_gen_.load(std::memory_order_relaxed);
  lk.unlock();

  tls_pwq = q;
  w->seq_.store(w->seq_.load(std::memory_order_relaxed) + 1,
                std::memory_order_relaxed);
  n->run_(n);  // may free n
  const int yields_ran = yields_may_run && w->deferred_.single() ? run_yields(w, gen) : 0;
  tls_pwq = nullptr;

  lk.lock();
  // Spawns before the continuations of yields, in the order they were made.
  // An open outbox means the pool has been full since the item started
  // (whoever stops running empties and closes every outbox), so nobody
  // idle is owed a wake-up for them.
  close_outbox_locked(w);
  link_deferred(w);
  // The item is over for the watchdog before the lock may be dropped to
  // log a hog: it must not judge the logging as the same item running on.
  w->current_ = nullptr;
  rejoin_after_item(w, lk);
  w->current_pwq_ = nullptr;
  // Each continuation run by run_yields() was an item, queued and done.
  items_executed_ += 1 + static_cast<unsigned>(yields_ran);
  q->completed_ += 1 + static_cast<unsigned>(yields_ran);
  q->queued_ += static_cast<unsigned>(yields_ran);
  bool wake_waiters = false;
  if (wk != nullptr) wake_waiters = work_access::finish_run(*wk);
  wq_impl* flushed = retire_item(q, flags, true);
  if (wake_waiters || flushed != nullptr) {
    lk.unlock();
    if (wake_waiters) work_access::wake_waiters(*wk);
    finish_flush_of(flushed);
    lk.lock();
  }
}

int pool::run_yields(worker* w, std::uint32_t gen) noexcept {
  // A yield asks for the pool's other work to go first; with none, going
  // round the worklist would only cost its lock and bookkeeping. The
  // continuation keeps the item's place in flight (its active slot and
  // flush colour), so nothing is counted until the lock is next taken. At
  // most kYieldRunLimit in a row, so the stats keep moving.
  int ran = 0;
  while (ran < kYieldRunLimit && w->deferred_.single()) {
    if (work_gen_.load(std::memory_order_relaxed) != gen) break;
    // Spawns the continuations made go round the worklist first.
    if (w->outbox_len_.load(std::memory_order_relaxed) != 0) break;
    // A blocking scope left open across the yield: the worker is out of
    // nr_running until rejoin_after_item() counts it again.
    if (w->blocking_depth_ != 0) break;
    // Prepared requests go to the kernel, and completions are reaped, on
    // the way round the loop.
    if (ring_->has_unsubmitted()) break;
    if (inflight_.load(std::memory_order_relaxed) != 0 &&
        (ring_->cq_ready_unlocked() || ring_->task_work_pending()))
      break;
    work_node* n = w->deferred_.pop_front();
    w->seq_.store(w->seq_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    n->run_(n);
    ++ran;
  }
  return ran;
}

void pool::worker_sleeping(worker* w) {
  // Requests this worker prepared must not wait behind its block.
  if (w == tls_worker) ring_->submit();
  std::unique_lock lk(lock_);
  // What this worker spawned and deferred must not wait behind its block,
  // its spawns first.
  if (w == tls_worker) {
    close_outbox_locked(w);
    link_deferred(w);
  }
  ++blocking_regions_;
  if (w->counted_) leave_running_locked(w, lk);
}

void pool::leave_running_locked(worker* w, std::unique_lock<spinlock>& lk) {
  w->counted_ = false;
  --nr_running_;
  // The pool is no longer full: what it and the others spawned must not
  // wait for them. The worker kick() wakes takes it.
  close_outboxes_locked();
  // A worker found blocked or hogging, running yields back to back, must
  // go round the worklist to count again.
  bump_work_gen();
  // Pending work gets a worker, and completions someone to reap them.
  kick(lk);
  if (worker* p = kick_poller_locked()) {
    lk.unlock();
    signal_worker(p);
    lk.lock();
  }
}

void pool::complete_from_outside(io_op* op, int res) {
  worker* wake = nullptr;
  {
    std::lock_guard g(lock_);
    op->res_ = res;
    enqueue_locked(op->pwq_, op);
    // The caller is not one of this pool's running workers, and the pool
    // may be idle: someone must run the resumption.
    if (need_more_worker() && (wake = wake_one_idle()) != nullptr)
      signalling_.fetch_add(1, std::memory_order_relaxed);
  }
  if (wake != nullptr) {
    signal_worker(wake);
    signalling_.fetch_sub(1, std::memory_order_release);
  }
}

void pool::wake_for_queued() {
  worker* wake = nullptr;
  {
    std::lock_guard g(lock_);
    if (need_more_worker() && (wake = wake_one_idle()) != nullptr)
      signalling_.fetch_add(1, std::memory_order_relaxed);
  }
  if (wake != nullptr) {
    signal_worker(wake);
    // Pairs with the acquire load in stop_and_join(), as in insert().
    signalling_.fetch_sub(1, std::memory_order_release);
  }
}

void pool::rejoin_after_item(worker* w, std::unique_lock<spinlock>& lk) {
  // A cpu-intensive item, the watchdog, or a blocking scope left open by
  // an item that suspended inside it: the worker counts again now.
  w->blocking_depth_ = 0;
  if (!w->counted_) {
    w->counted_ = true;
    ++nr_running_;
    // Perhaps one too many now: workers running yields back to back give
    // way (keep_working() sends the extra one idle).
    bump_work_gen();
  }
  if (w->hog_) [[unlikely]] {
    w->hog_ = false;
    const auto ran = std::chrono::duration_cast<std::chrono::milliseconds>(
        clock::now() - w->hog_since_);
    std::string what = std::move(w->hog_what_);
    w->hog_what_.clear();
    const void* item = w->current_what_;
    const bool callable = w->current_callable_;
    const std::string wq = w->current_pwq_->wq_->name_;
    lk.unlock();
    // The watchdog names the item outside the lock; an item that ended
    // before the name was in is named here (it is still alive: a callable
    // is finished only after this).
    if (what.empty()) what = describe_item(item, callable);
    report_hog(*rt_, what, wq, ran);
    lk.lock();
  }
}

void pool::worker_running(worker* w) {
  std::lock_guard g(lock_);
  if (w->counted_ || w->idle_) return;
  w->counted_ = true;
  ++nr_running_;
  bump_work_gen();  // as in rejoin_after_item()
}

void pool::idle_cull() {
  std::vector<worker*> to_signal;
  std::vector<worker*> to_join;
  {
    std::lock_guard g(lock_);
    idle_timer_armed_ = false;
    const auto now = clock::now();
    while (!stopping_ && too_many_workers()) {
      worker* oldest = idle_.front();
      const auto expires = oldest->last_active_ + rt_->opts_.idle_timeout;
      if (now < expires) {
        idle_timer_armed_ = true;
        arm_timer_locked(&idle_timer_, expires);
        break;
      }
      idle_.erase(idle_.begin());
      --nr_idle_;
      oldest->idle_ = false;
      oldest->exit_ = true;
      to_signal.push_back(oldest);
    }
    // Join the ones that already left; free the oldest beyond the limit.
    for (auto it = zombies_.begin(); it != zombies_.end();) {
      worker* z = *it;
      // Acquire pairs with the release store at the end of worker_main().
      if (z->thread_.joinable() && z->exited_.load(std::memory_order_acquire)) {
        to_join.push_back(z);
      }
      ++it;
    }
  }
  for (auto* w : to_signal) signal_worker(w);
  for (auto* z : to_join) z->thread_.join();
  std::lock_guard g(lock_);
  while (zombies_.size() > kMaxZombies && !zombies_.front()->thread_.joinable()) {
    delete zombies_.front();
    zombies_.erase(zombies_.begin());
  }
}

void pool::complete_op(io_op* op, int res, unsigned flags) noexcept {
  tsan_acquire(op);
  op->res_ = res;
  op->cqe_flags_ = flags;
  inflight_.fetch_sub(1, std::memory_order_relaxed);
  enqueue_locked(op->pwq_, op);
}

worker* pool::kick_poller_locked() noexcept {
  if (poller_ != nullptr || idle_.empty()) return nullptr;
  // Woken without leaving idle, it finds no poller and becomes it.
  return idle_.back();
}

void pool::arm_timer_locked(timer_node* t, clock::time_point deadline) {
  timers_.arm(t, deadline);
  bump_work_gen();
  // A sleeping poller waits for the old earliest deadline; tell it.
  if (timers_.earliest() == t && poller_ != nullptr &&
      poller_->polling_.load(std::memory_order_relaxed))
    ring_->wake();
  // With no poller, the busy workers fire timers between items, and the
  // watchdog while they are stuck in one: it must be awake to.
  if (poller_ == nullptr) watchdog_->work_waits();
}

void pool::arm_timer(timer_node* t, clock::time_point deadline) {
  std::lock_guard g(lock_);
  arm_timer_locked(t, deadline);
}

bool pool::cancel_timer(timer_node* t) {
  std::lock_guard g(lock_);
  return timers_.cancel(t);
}

int pool::fire_all_timers(void (*fire)(timer_node*)) {
  std::vector<timer_node*> due;
  {
    std::lock_guard g(lock_);
    due = timers_.take_all(fire);
  }
  for (auto* t : due) t->fire_(t);
  return static_cast<int>(due.size());
}

bool pool::poll_locked(std::unique_lock<spinlock>& lk, bool poller) {
  // Pure computation pays nothing for the ring: with no request in flight
  // and no timer armed a running worker has nothing to reap or fire. The
  // poller always reaps: its eventfd read or a cancel's own result left in
  // the CQ would make its next io_uring_enter return at once, for ever.
  if (!poller && inflight_.load(std::memory_order_relaxed) == 0 && timers_.empty()) return false;
  // A running worker about to start an item while nobody sleeps in the
  // ring: should the item block unannounced, only the watchdog can reap
  // what completes or comes due meanwhile, and no queuer may wake it. One
  // relaxed load while it is awake.
  if (!poller && poller_ == nullptr) watchdog_->work_waits();
  bool did = false;
  if (ring_->task_work_pending()) {
    // Cooperative task running: completions wait for us to enter the kernel.
    lk.unlock();
    ring_->flush_overflow();
    lk.lock();
  }
  if (ring_->cq_ready()) {
    if (io_uring_cq_has_overflow(ring_->raw())) {
      lk.unlock();
      ring_->flush_overflow();
      lk.lock();
    }
    bool woken = false;
    const unsigned n = ring_->reap([this](std::uint64_t ud, int res, unsigned flags) {
      if ((ud & kUdSharedTag) != 0) {
        void* s = reinterpret_cast<void*>(ud & ~kUdSharedMask);
        if ((ud & kUdRecvBit) != 0)
          multishot_recv_complete(*this, static_cast<recv_state*>(s), res, flags, (ud & kUdRecvCancelBit) != 0);
        else
          multishot_accept_complete(*this, static_cast<accept_state*>(s), res, flags);
      } else {
        complete_op(reinterpret_cast<io_op*>(ud), res, flags);
      }
    }, &woken);
    did = n != 0;
    if (woken && !poller && poller_ != nullptr) {
      // A wake-up meant for the poller, taken before it re-took the lock.
      // If it had not yet entered the kernel, it would now sleep through
      // it (its eventfd read is spent): a completion of no meaning makes
      // it return. Rare: a wake-up that lands while the poller is between
      // arming its read and sleeping, or before it gets the lock back.
      lk.unlock();
      ring_->post_nop();
      lk.lock();
    }
  }
  if (!timers_.empty()) {
    // Sleepers are queued under the lock; other timers (delayed work, the
    // idle timer) fire after it is dropped, linked in deadline order so
    // that timers due together fire in that order.
    timer_node* due = nullptr;
    timer_node** tail = &due;
    const auto now = clock::now();
    while (timer_node* t = timers_.pop_due(now)) {
      did = true;
      if (t->fire_locked_) {
        // A sleeper: queued right here, under the lock we hold anyway.
        t->fire_(t);
        continue;
      }
      t->next_due_ = nullptr;
      *tail = t;
      tail = &t->next_due_;
    }
    if (due != nullptr) {
      did = true;
      lk.unlock();
      while (due != nullptr) {
        timer_node* t = due;
        due = t->next_due_;
        t->fire_(t);
      }
      lk.lock();
    }
  }
  // Completions and sleepers joined the worklist: an unbound pool may want
  // another worker for them (a CPU's pool already has this one running).
  if (did && need_more_worker()) {
    if (worker* x = wake_one_idle()) {
      lk.unlock();
      signal_worker(x);
      lk.lock();
    }
  }
  return did;
}

void pool::spin_idle(worker* w, std::unique_lock<spinlock>& lk) {
  w->spin_next_ = false;
  w->wake_.store(0, std::memory_order_relaxed);
  w->spinning_.store(true, std::memory_order_relaxed);
  spinner_ = w;
  lk.unlock();
  const auto until = clock::now() + rt_->opts_.idle_spin;
  bool caught = false;
  for (unsigned i = 1;; ++i) {
    // Acquire pairs with the release store in signal_worker().
    if (w->wake_.load(std::memory_order_acquire) != 0) {
      caught = true;
      break;
    }
    // A completion ends the spin too: the ring's reaper gets to it sooner.
    if (ring_->cq_ready_unlocked()) break;
    if (i % 16 == 0 && clock::now() >= until) break;
    cpu_relax();
  }
  w->spinning_.store(false, std::memory_order_relaxed);
  lk.lock();
  if (spinner_ == w) spinner_ = nullptr;
  if (caught) {
    w->spin_next_ = true;
    ++spin_handoffs_;
  }
}

void pool::poll_as_idle(worker* w, std::unique_lock<spinlock>& lk) {
  poller_ = w;
  __kernel_timespec ts{};
  const __kernel_timespec* timeout = nullptr;
  if (timer_node* t = timers_.earliest()) {
    const auto left = std::max(t->deadline_ - clock::now(), clock::duration::zero());
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
    ts.tv_sec = ns / 1'000'000'000;
    ts.tv_nsec = ns % 1'000'000'000;
    timeout = &ts;
  }
  // Release pairs with the acquire load in signal_worker().
  w->polling_.store(true, std::memory_order_release);
  lk.unlock();
  ring_->wait(timeout);
  lk.lock();
  w->polling_.store(false, std::memory_order_relaxed);
  poller_ = nullptr;
  // Nobody fires the timers now: a worker running yields back to back
  // must go round the worklist, where it fires them itself.
  bump_work_gen();
  poll_locked(lk, /*poller=*/true);
  // Work found while polling: run it ourselves rather than wake another.
  if (w->idle_ && !w->exit_ && need_more_worker()) {
    idle_.erase(std::find(idle_.begin(), idle_.end(), w));
    --nr_idle_;
    w->idle_ = false;
    w->counted_ = true;
    ++nr_running_;
  }
}

void pool::stop_and_join() {
  std::vector<worker*> to_signal;
  {
    std::lock_guard g(lock_);
    stopping_ = true;
    bump_work_gen();
    for (auto* w : workers_) {
      w->exit_ = true;
      to_signal.push_back(w);
    }
  }
  for (auto* w : to_signal) {
    w->wake_.store(1, std::memory_order_release);
    futex_wake(&w->wake_, 1);
  }
  ring_->wake();
  // A worker being created has no thread_ to join yet.
  for (;;) {
    {
      std::lock_guard g(lock_);
      if (nr_creating_ == 0) break;
    }
    ::sched_yield();
  }
  std::vector<worker*> all;
  {
    std::lock_guard g(lock_);
    all = workers_;
    all.insert(all.end(), zombies_.begin(), zombies_.end());
  }
  for (auto* w : all)
    if (w->thread_.joinable()) w->thread_.join();
  // stopping_ turns new wakers away; the last ones still touching a worker
  // finish here. Acquire pairs with the release decrement in insert().
  while (signalling_.load(std::memory_order_acquire) != 0) ::sched_yield();
  {
    std::lock_guard g(lock_);
    for (auto* w : zombies_) delete w;
    zombies_.clear();
    // Threads that exited unlinked themselves; nothing else can be left.
    for (auto* w : workers_) delete w;
    workers_.clear();
  }
  log().debug("pool {}: destroyed, {} workers joined", name_, all.size());
}

}  // namespace cowq::detail
