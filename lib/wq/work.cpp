// Callable work items: the pending bit, non-reentrancy, flush and cancel.
//
// Ownership of the pending bit decides who may link a work: whoever sets it
// (a queuer, or a canceller) owns it until the run starts (the worker clears
// it under the pool lock) or the canceller releases it. While a pending run
// sits in the timer heap, the timer owns the bit; cancelling the timer
// hands it to the canceller.
#include "../log/log.hpp"
#include "../pool/pool.hpp"
#include "../runtime/runtime_impl.hpp"
#include "../util/futex.hpp"
#include "wq_impl.hpp"

#include <cowq/work.hpp>

#include <cxxabi.h>
#include <sched.h>
#include <cstdlib>
#include <stdexcept>

namespace cowq::detail {

namespace {
constexpr std::uint32_t kPending = 1;
}

// start_run and finish_run run under the lock of w.pool_.
void work_access::start_run(work& w, worker* on) noexcept {
  w.running_on_ = on;
  ++w.started_;
  // Release pairs with the acq_rel fetch_or in ops::own_pending(): a queuer
  // that sets the bit again sees this run as started.
  w.state_.fetch_and(~kPending, std::memory_order_release);
}

bool work_access::finish_run(work& w) noexcept {
  w.running_on_ = nullptr;
  // Release pairs with the acquire load in ops::wait_finished().
  w.finished_.fetch_add(1, std::memory_order_release);
  const bool wake = w.waiters_;
  w.waiters_ = false;
  return wake;
}

void work_access::wake_waiters(work& w) noexcept { futex_wake(&w.finished_); }
worker* work_access::running_on(const work& w) noexcept { return w.running_on_; }

std::string work_access::describe(const work& w) {
  int status = 0;
  char* name = abi::__cxa_demangle(w.fn_.target_type().name(), nullptr, nullptr, &status);
  std::string out = "cowq::work running ";
  out += status == 0 && name != nullptr ? name : w.fn_.target_type().name();
  std::free(name);
  return out;
}

// Everything else about work's state, kept next to it.
struct work_ops {
  static bool own_pending(work& w) noexcept {
    return (w.state_.fetch_or(kPending, std::memory_order_acq_rel) & kPending) == 0;
  }
  static void release_pending(work& w) noexcept {
    w.state_.fetch_and(~kPending, std::memory_order_release);
  }

  static void check(wq_impl& wq) {
    if (wq.destroyed_.load(std::memory_order_relaxed))
      throw std::logic_error("cowq: workqueue '" + wq.name_ + "' was destroyed");
    if (wq.rt_->stopping_.load(std::memory_order_relaxed) && current_worker() == nullptr)
      throw std::logic_error("cowq: the runtime is shutting down");
  }

  // Links w, whose pending bit the caller owns, on wq.
  static void enqueue_owned(work& w, wq_impl& wq, int cpu) {
    try {
      pwq* q = nullptr;
      pool* last = w.pool_.load(std::memory_order_acquire);
      if (last != nullptr) {
        // Non-reentrancy across pools: while it runs for this workqueue on
        // the pool it last ran on, it goes back there to run after that run,
        // whatever CPU was asked for. This also keeps running_on_ under the
        // lock of the one pool that pool_ names.
        std::lock_guard g(last->lock_);
        if (w.running_on_ != nullptr && w.running_on_->current_pwq_->wq_ == &wq)
          q = w.running_on_->current_pwq_;
      }
      if (q == nullptr) q = wq.select(cpu);
      // Release pairs with the acquire loads of pool_ in flush and cancel.
      w.pool_.store(q->pool_, std::memory_order_release);
      if (!q->pool_->insert(q, &w.node_))
        throw std::logic_error("cowq: the runtime has stopped");
    } catch (...) {
      release_pending(w);
      throw;
    }
  }

  static bool running_itself(const work& w) noexcept {
    worker* self = current_worker();
    return self != nullptr && self->current_ == &w.node_;
  }

  // The pool whose heap holds the delayed work's timer, if any. Written by
  // the owner of the pending bit before arming.
  static pool* timer_pool(const work& w) noexcept { return w.timer_pool_; }
  static bool cancel_timer(work& w) {
    pool* p = timer_pool(w);
    return p != nullptr && p->cancel_timer(&w.timer_);
  }
  static bool timer_armed(work& w) {
    pool* p = timer_pool(w);
    if (p == nullptr) return false;
    std::lock_guard g(p->lock_);
    return w.timer_.armed();
  }

  // Takes the pending bit from wherever it is (timer or a list) or sets it.
  // Returns whether a pending run was removed; the caller owns the bit.
  static bool grab_pending(work& w) {
    for (;;) {
      if (own_pending(w)) return false;
      if (cancel_timer(w)) return true;
      if (pool* p = w.pool_.load(std::memory_order_acquire)) {
        wq_impl* flushed = nullptr;
        bool removed = false;
        bool wake = false;
        {
          std::lock_guard g(p->lock_);
          if (w.pool_.load(std::memory_order_relaxed) == p &&
              p->unlink_pending(&w.node_, w.running_on_, &flushed)) {
            removed = true;
            // A cancelled run counts as started and finished, so flushers
            // waiting for it are released.
            ++w.started_;
            w.finished_.fetch_add(1, std::memory_order_release);
            wake = std::exchange(w.waiters_, false);
          }
        }
        finish_flush_of(flushed);
        if (wake) futex_wake(&w.finished_);
        if (removed) return true;
      }
      // In transit: a queuer or the timer is linking it right now.
      ::sched_yield();
    }
  }

  // The caller has set waiters_ under the lock of w.pool_.
  static void wait_finished(work& w, std::uint32_t target) noexcept {
    for (;;) {
      // Acquire pairs with the release increments of finished_.
      const std::uint32_t f = w.finished_.load(std::memory_order_acquire);
      if (static_cast<std::int32_t>(f - target) >= 0) return;
      futex_wait(&w.finished_, f);
      // The run that woke us cleared waiters_; it may not be the run we
      // wait for (a flush behind a pending run is woken when the running
      // one ends). Register again before looking, or the next finish would
      // not wake us.
      register_waiter(w);
    }
  }

  static void register_waiter(work& w) noexcept {
    for (;;) {
      pool* p = w.pool_.load(std::memory_order_acquire);
      std::lock_guard g(p->lock_);
      if (w.pool_.load(std::memory_order_relaxed) != p) continue;
      w.waiters_ = true;
      return;
    }
  }

  enum class flush_plan { none, wait, retry };

  // Under the pool lock: what a flush must wait for. in_timer was read
  // just before, under the timer pool's lock (never both locks at once).
  static flush_plan plan_flush(work& w, bool in_timer, std::uint32_t* target) {
    const bool linked = where(&w.node_) != node_where::none;
    if (linked) {
      *target = w.started_ + 1;
      return flush_plan::wait;
    }
    if (w.pending() && !in_timer) return flush_plan::retry;  // in transit
    if (w.running_on_ == nullptr) return flush_plan::none;
    *target = w.started_;
    return flush_plan::wait;
  }

  static bool flush(work& w) {
    for (;;) {
      pool* p = w.pool_.load(std::memory_order_acquire);
      if (p == nullptr) return false;
      std::uint32_t target = 0;
      flush_plan plan;
      const bool in_timer = timer_armed(w);
      {
        std::lock_guard g(p->lock_);
        if (w.pool_.load(std::memory_order_relaxed) != p) continue;
        plan = plan_flush(w, in_timer, &target);
        if (plan == flush_plan::wait) w.waiters_ = true;
      }
      switch (plan) {
        case flush_plan::none:
          return false;
        case flush_plan::wait:
          wait_finished(w, target);
          return true;
        case flush_plan::retry:
          ::sched_yield();
          break;
      }
    }
  }

  static void wait_running(work& w) {
    pool* p = w.pool_.load(std::memory_order_acquire);
    if (p == nullptr) return;
    std::uint32_t target;
    {
      std::lock_guard g(p->lock_);
      if (w.running_on_ == nullptr) return;
      target = w.started_;
      w.waiters_ = true;
    }
    wait_finished(w, target);
  }

  static void run(work_node* n) noexcept {
    work& w = *static_cast<work_item_node*>(n)->self_;
    try {
      w.fn_();
    } catch (const std::exception& e) {
      escaped(e.what());
    } catch (...) {
      escaped("a non-std exception");
    }
  }

  static void escaped(const char* what) noexcept {
    wq_impl* wq = current_pwq()->wq_;
    wq->escaped_.fetch_add(1, std::memory_order_relaxed);
    log().error("work item on '{}' threw: {}", wq->name_, what);
  }

  static void fire(timer_node* t) {
    work& w = *static_cast<work_timer*>(t)->self_;
    try {
      enqueue_owned(w, w.delayed_wq_->impl(), w.delayed_cpu_);
    } catch (const std::exception& e) {
      log().error("delayed work on '{}' was dropped: {}", w.delayed_wq_->name(), e.what());
    }
  }

  static void arm(int cpu, workqueue& wq, delayed_work& w, std::chrono::nanoseconds delay) {
    w.delayed_wq_ = &wq;
    w.delayed_cpu_ = cpu;
    if (delay <= std::chrono::nanoseconds::zero()) {
      enqueue_owned(w, wq.impl(), cpu);
      return;
    }
    // The timer lives on the pool the work will most likely run on.
    pool* p = wq.impl().select(cpu)->pool_;
    w.timer_pool_ = p;
    p->arm_timer(&w.timer_, std::chrono::steady_clock::now() + delay);
  }

  static bool flush_delayed(delayed_work& w) {
    // Cancelling the timer hands us its pending bit: queue the run now.
    const bool fired_early = cancel_timer(w);
    if (fired_early) enqueue_owned(w, w.delayed_wq_->impl(), w.delayed_cpu_);
    // The run we queued may finish before flush() looks; it still counts.
    return flush(w) || fired_early;
  }

  static void init(work& w) noexcept {
    w.node_.self_ = &w;
    w.node_.run_ = &run;
    w.node_.flags_ = node_callable;
    w.timer_.self_ = &w;
    w.timer_.fire_ = &fire;
  }
};

void (*delayed_work_fire)(timer_node*) = &work_ops::fire;

}  // namespace cowq::detail

namespace cowq {

using detail::work_ops;

work::work(std::function<void()> fn) : fn_(std::move(fn)) { work_ops::init(*this); }

work::~work() {
  if (pending())
    detail::log().error("a cowq::work was destroyed while pending; cancel_work_sync it first");
}

bool work::pending() const noexcept {
  return (state_.load(std::memory_order_acquire) & detail::kPending) != 0;
}

delayed_work::delayed_work(std::function<void()> fn) : work(std::move(fn)) {}

bool queue_work_on(int cpu, workqueue& wq, work& w) {
  work_ops::check(wq.impl());
  if (!work_ops::own_pending(w)) return false;
  work_ops::enqueue_owned(w, wq.impl(), cpu);
  return true;
}

bool queue_work(workqueue& wq, work& w) { return queue_work_on(-1, wq, w); }

bool queue_delayed_work_on(int cpu, workqueue& wq, delayed_work& w,
                           std::chrono::nanoseconds delay) {
  work_ops::check(wq.impl());
  if (!work_ops::own_pending(w)) return false;
  work_ops::arm(cpu, wq, w, delay);
  return true;
}

bool queue_delayed_work(workqueue& wq, delayed_work& w, std::chrono::nanoseconds delay) {
  return queue_delayed_work_on(-1, wq, w, delay);
}

bool mod_delayed_work(workqueue& wq, delayed_work& w, std::chrono::nanoseconds delay) {
  work_ops::check(wq.impl());
  const bool was_pending = work_ops::grab_pending(w);
  work_ops::arm(-1, wq, w, delay);
  return was_pending;
}

bool flush_work(work& w) {
  if (work_ops::running_itself(w))
    throw std::logic_error("cowq: flush_work called from the work's own run");
  return work_ops::flush(w);
}

bool flush_delayed_work(delayed_work& w) {
  if (work_ops::running_itself(w))
    throw std::logic_error("cowq: flush_delayed_work called from the work's own run");
  return work_ops::flush_delayed(w);
}

bool cancel_delayed_work(delayed_work& w) {
  const bool was_pending = work_ops::grab_pending(w);
  work_ops::release_pending(w);
  return was_pending;
}

bool cancel_work_sync(work& w) {
  if (work_ops::running_itself(w))
    throw std::logic_error("cowq: cancel_work_sync called from the work's own run");
  const bool was_pending = work_ops::grab_pending(w);
  // Holding the pending bit keeps anyone from queueing it again meanwhile.
  work_ops::wait_running(w);
  work_ops::release_pending(w);
  return was_pending;
}

bool cancel_delayed_work_sync(delayed_work& w) { return cancel_work_sync(w); }

}  // namespace cowq
