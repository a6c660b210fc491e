// The watchdog thread and its look at each pool; see watchdog.hpp.
#include "watchdog.hpp"

#include "../log/log.hpp"
#include "../runtime/runtime_impl.hpp"
#include "../util/futex.hpp"
#include "../wq/wq_impl.hpp"
#include "pool.hpp"

#include <cxxabi.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

namespace cowq::detail {

namespace {

// Ticks in a row with no work waiting before the watchdog sleeps for good.
constexpr int kQuietTicks = 20;
// A pool whose worker creation failed is retried this often, not every tick.
constexpr auto kCreateCooldown = std::chrono::milliseconds(10);
// Workers examined per pool and tick; any others wait for the next tick.
constexpr std::size_t kMaxSuspects = 8;

// Ticks a cached stat file may go unread before it is closed.
constexpr std::uint64_t kStatFileKeepTicks = 1000;

// The scheduler state in a stat line: the name may hold spaces and
// parentheses, so the state is what follows the last ')'.
char parse_state(const char* stat) {
  const char* close = std::strrchr(stat, ')');
  return close != nullptr && close[1] == ' ' && close[2] != '\0' ? close[2] : '?';
}

int open_task_stat(pid_t tid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/self/task/%d/stat", static_cast<int>(tid));
  return ::open(path, O_RDONLY | O_CLOEXEC);
}

// CPU time the thread has used, in nanoseconds; UINT64_MAX if unknown.
// The thread's CPU clock costs one system call and no descriptor. Its id
// is the kernel's encoding of a per-thread scheduler clock (what
// pthread_getcpuclockid() computes), made from the TID because the
// watchdog knows workers by TID.
std::uint64_t thread_cpu_ns(pid_t tid) {
  const clockid_t clock = static_cast<clockid_t>((~static_cast<unsigned>(tid) << 3) | 6u);
  timespec ts{};
  if (::clock_gettime(clock, &ts) != 0) return UINT64_MAX;
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(ts.tv_nsec);
}

std::string demangle(const char* name) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> out(
      abi::__cxa_demangle(name, nullptr, nullptr, &status), &std::free);
  return status == 0 && out ? std::string(out.get()) : std::string(name);
}

}  // namespace

char task_stat_files::state(pid_t tid) {
  auto it = std::find_if(files_.begin(), files_.end(), [tid](const entry& e) { return e.tid == tid; });
  char buf[512];
  // A descriptor names the task, not the number: once the thread has exited
  // reads fail, and a new thread given the same TID needs a fresh open.
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (it == files_.end()) {
      const int fd = open_task_stat(tid);
      if (fd < 0) return '?';
      files_.push_back({tid, fd, now_});
      it = files_.end() - 1;
    }
    const ssize_t n = ::pread(it->fd, buf, sizeof buf - 1, 0);
    if (n > 0) {
      it->used = now_;
      buf[n] = '\0';
      return parse_state(buf);
    }
    ::close(it->fd);
    files_.erase(it);
    it = files_.end();
  }
  return '?';
}

void task_stat_files::tick() {
  ++now_;
  std::erase_if(files_, [this](const entry& e) {
    if (now_ - e.used < kStatFileKeepTicks) return false;
    ::close(e.fd);
    return true;
  });
}

void task_stat_files::close_all() noexcept {
  for (const entry& e : files_) ::close(e.fd);
  files_.clear();
}

std::string describe_item(const void* what, bool callable) {
  if (callable) return work_access::describe(*static_cast<const work*>(what));
  Dl_info info{};
  if (::dladdr(what, &info) != 0 && info.dli_sname != nullptr)
    return "coroutine " + demangle(info.dli_sname);
  char buf[256];
  if (info.dli_fname != nullptr)
    std::snprintf(buf, sizeof buf, "coroutine resumed at %s+%#lx", info.dli_fname,
                  static_cast<unsigned long>(reinterpret_cast<std::uintptr_t>(what) -
                                             reinterpret_cast<std::uintptr_t>(info.dli_fbase)));
  else
    std::snprintf(buf, sizeof buf, "coroutine resumed at %p", what);
  return buf;
}

void report_hog(runtime_impl& rt, const std::string& what, const std::string& wq,
                std::chrono::milliseconds ran) {
  {
    std::lock_guard g(rt.hogs_mutex_);
    if (!rt.hogs_reported_.insert(what + '\0' + wq).second) return;
  }
  log().warn(
      "{} on workqueue '{}' ran {} ms on a CPU without sleeping (more than {} us); it "
      "was counted as cpu-intensive. Queue it on a cpu_intensive workqueue, or split it "
      "with co_await cowq::yield(). Reported once.",
      what, wq, ran.count(), rt.opts_.watchdog.cpu_hog_threshold.count());
}

bool pool::watchdog_tick(clock::time_point now, task_stat_files& stat_files) {
  const watchdog_options& opts = rt_->opts_.watchdog;
  struct suspect {
    worker* w;
    pid_t tid;
    std::uint64_t seq;
    bool hog_check;
  };
  std::array<suspect, kMaxSuspects> suspects;
  std::size_t nr_suspects = 0;

  std::unique_lock lk(lock_);
  if (stopping_) return false;
  // Completions are reaped by running workers between items and by the
  // idle poller. With every runner stuck in an item and no poller (its
  // worker was woken to run), nobody would reap them: the watchdog does,
  // under the pool lock like any reaper, and the worklist takes over.
  // Sleepers and delayed work coming due are the poller's to fire, and
  // the watchdog's likewise when there is none.
  const timer_node* next_timer = timers_.earliest();
  const bool timer_due = next_timer != nullptr && next_timer->deadline_ <= now;
  if (poller_ == nullptr && (ring_->cq_ready() || timer_due) && poll_locked(lk)) kick(lk);
  // Requests prepared but not submitted wait as much as queued items do:
  // behind a blocked worker they would never reach the kernel.
  // So do completions nobody reaped.
  // And so do spawns in the outbox of a worker stuck in the item that made
  // them (relaxed: see outbox_push()).
  bool outbox_waiting = false;
  if (concurrency_ > 1)
    for (const worker* w : workers_)
      outbox_waiting |= w->current_ != nullptr && w->outbox_len_.load(std::memory_order_relaxed) != 0;
  const bool waiting =
      !worklist_.empty() || ring_->has_unsubmitted() || ring_->cq_ready() || outbox_waiting;

  // The mayday timer's part: work waits, nothing runs it, nobody is idle.
  if (need_more_worker() && nr_idle_ + nr_starting_ == 0 && !manager_active_) {
    if (now >= next_create_retry_) {
      manage_workers(lk);
      if (nr_idle_ + nr_starting_ == 0) next_create_retry_ = now + kCreateCooldown;
    } else {
      send_mayday_locked();
    }
  }

  // A pool that finished at most one item since the last tick while work
  // waited may have a worker that blocked as soon as it started its item:
  // look at once rather than a tick later. A pool that moves along does
  // not pay for the look.
  const bool stalled = waiting && items_executed_ - wd_executed_ <= 1;
  wd_executed_ = items_executed_;

  const auto hog_after = std::chrono::duration_cast<clock::duration>(opts.cpu_hog_threshold);
  for (worker* w : workers_) {
    if (w->current_ == nullptr) continue;
    const std::uint64_t seq = w->seq_.load(std::memory_order_relaxed);
    bool new_item = false;
    if (seq != w->wd_seq_) {
      w->wd_seq_ = seq;
      w->wd_since_ = now;
      new_item = true;
    }
    if (!opts.detect_blocking) continue;
    const bool blocked_check = waiting && w->counted_ && (!new_item || stalled);
    // A hog must have stayed on one item past the threshold. A worker that
    // no longer counts (found blocked, in a marked region) holds nothing
    // back: it is not read about every tick.
    const bool hog_check = !new_item && w->counted_ && !w->hog_ &&
                           now - w->wd_since_ >= hog_after &&
                           !has(w->current_pwq_->wq_->flags_, wq_flags::cpu_intensive);
    if ((blocked_check || hog_check) && nr_suspects < suspects.size())
      suspects[nr_suspects++] = {w, w->tid_, seq, hog_check};
  }
  // While workers are busy and nobody sleeps in the ring, stay awake: if
  // they are stuck in items, a completion arriving or a timer coming due
  // is found only by the look above. The pool wakes us when it gets into
  // this state (poll_locked()).
  const bool keep_watching =
      waiting || (poller_ == nullptr && nr_workers_ > nr_idle_ &&
                  (inflight_.load(std::memory_order_relaxed) > 0 || !timers_.empty()));
  if (nr_suspects == 0) return keep_watching;

  // Ask the kernel without holding the lock.
  lk.unlock();
  std::array<char, kMaxSuspects> state{};
  std::array<std::uint64_t, kMaxSuspects> cpu_ns{};
  for (std::size_t i = 0; i < nr_suspects; ++i) {
    state[i] = stat_files.state(suspects[i].tid);
    if (suspects[i].hog_check) cpu_ns[i] = thread_cpu_ns(suspects[i].tid);
  }
  lk.lock();

  // Named after the lock is dropped; copied only when someone reads them.
  const bool log_blocked = log().should_log(spdlog::level::debug);
  std::vector<std::string> blocked_names;
  for (std::size_t i = 0; i < nr_suspects; ++i) {
    suspect& s = suspects[i];
    // Re-validate: the worker may have exited, or moved on to another item.
    if (std::find(workers_.begin(), workers_.end(), s.w) == workers_.end()) continue;
    worker* w = s.w;
    if (w->current_ == nullptr || w->seq_.load(std::memory_order_relaxed) != s.seq) continue;
    if (state[i] == 'S' || state[i] == 'D') {
      if (!w->counted_) continue;
      // What it spawned before blocking counts as work waiting.
      if (w->outbox_len_.load(std::memory_order_relaxed) != 0) drain_outbox_locked(w, true);
      // Completions a blocked worker would have reaped between items: the
      // watchdog reaps them, under the pool lock like any reaper.
      if (worklist_.empty() && ring_->cq_ready()) poll_locked(lk);
      if (worklist_.empty() && !ring_->has_unsubmitted()) continue;
      // Blocked: what the kernel's wq_worker_sleeping() would have done.
      ++blocked_detected_;
      if (log_blocked) blocked_names.push_back(w->name_);
      leave_running_locked(w, lk);
      // With nothing queued, leaving wakes nobody; the requests it left
      // prepared need a worker to submit them all the same.
      if (worklist_.empty() && ring_->has_unsubmitted()) {
        if (worker* x = wake_one_idle()) {
          lk.unlock();
          signal_worker(x);
          lk.lock();
        }
      }
    } else if (state[i] == 'R' && s.hog_check && !w->hog_ && cpu_ns[i] != UINT64_MAX) {
      // Running now is not enough (a polling loop is running at times):
      // a hog used at least half the CPU time since the last look.
      if (w->wd_cpu_seq_ != s.seq) {
        w->wd_cpu_seq_ = s.seq;
        w->wd_cpu_ns_ = cpu_ns[i];
        w->wd_cpu_at_ = now;
        continue;
      }
      const auto wall = std::chrono::duration_cast<std::chrono::nanoseconds>(now - w->wd_cpu_at_);
      if (wall.count() <= 0 ||
          cpu_ns[i] - w->wd_cpu_ns_ < static_cast<std::uint64_t>(wall.count()) / 2) {
        w->wd_cpu_ns_ = cpu_ns[i];
        w->wd_cpu_at_ = now;
        continue;
      }
      ++hogs_detected_;
      w->hog_ = true;
      w->hog_since_ = w->wd_since_;
      const void* what = w->current_what_;
      const bool callable = w->current_callable_;
      if (w->counted_) leave_running_locked(w, lk);
      // Named outside the lock (dladdr, demangling); the worker logs it
      // when the item ends and reads hog_what_ under the lock then.
      lk.unlock();
      std::string name = describe_item(what, callable);
      lk.lock();
      if (std::find(workers_.begin(), workers_.end(), w) != workers_.end() && w->hog_)
        w->hog_what_ = std::move(name);
    }
  }
  if (!blocked_names.empty()) {
    lk.unlock();
    for (auto& n : blocked_names)
      log().debug("pool {}: worker {} blocked in its item; it no longer counts as running",
                  name_, n);
  }
  return keep_watching;
}

watchdog::watchdog(runtime_impl& rt) : rt_(rt) {}

watchdog::~watchdog() { stop(); }

void watchdog::start() { thread_ = std::thread(&watchdog::main, this); }

void watchdog::stop() {
  if (!thread_.joinable()) return;
  // Both seq_cst, against the two in main() before its deep sleep: either
  // the watchdog sees stop_ set, or it sleeps before asleep_ goes to 0 and
  // the wake below reaches it.
  stop_.store(1, std::memory_order_seq_cst);
  futex_wake(&stop_);
  asleep_.store(0, std::memory_order_seq_cst);
  futex_wake(&asleep_);
  thread_.join();
}

void watchdog::wake() noexcept {
  if (asleep_.exchange(0, std::memory_order_acq_rel) == 1) futex_wake(&asleep_);
}

bool watchdog::tick() {
  ticks_.fetch_add(1, std::memory_order_relaxed);
  const auto now = clock::now();
  bool waiting = false;
  for (auto& p : rt_.pools_) waiting |= p->watchdog_tick(now, stat_files_);
  stat_files_.tick();
  return waiting;
}

void watchdog::main() {
  ::pthread_setname_np(::pthread_self(), (rt_.opts_.name + "/watchdog").substr(0, 15).c_str());
  // The default 50 us of timer slack is a tenth of a tick.
  ::prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
  const auto tick_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(rt_.opts_.watchdog.tick).count();
  timespec next{};
  auto schedule_from_now = [&] { ::clock_gettime(CLOCK_MONOTONIC, &next); };
  auto advance = [&] {
    next.tv_nsec += tick_ns % 1'000'000'000;
    next.tv_sec += static_cast<time_t>(tick_ns / 1'000'000'000 + next.tv_nsec / 1'000'000'000);
    next.tv_nsec %= 1'000'000'000;
  };
  schedule_from_now();
  int quiet = 0;
  // Acquire pairs with the release store in stop().
  while (stop_.load(std::memory_order_acquire) == 0) {
    quiet = tick() ? 0 : quiet + 1;
    if (quiet >= kQuietTicks) {
      // Nothing to watch: sleep until work waits somewhere. The store comes
      // before the look at each pool under its lock; a queuer that adds
      // work after that look holds the same lock later, so it sees 1 and
      // wakes us (watchdog::work_waits).
      asleep_.store(1, std::memory_order_seq_cst);
      // Pairs with the fence in work_waits_unlocked().
      std::atomic_thread_fence(std::memory_order_seq_cst);
      if (tick()) {
        asleep_.store(0, std::memory_order_relaxed);
        quiet = 0;
        continue;
      }
      // Acquire pairs with the acq_rel exchange in wake(); the seq_cst load
      // of stop_ with the stores in stop().
      stat_files_.close_all();
      while (asleep_.load(std::memory_order_acquire) == 1 &&
             stop_.load(std::memory_order_seq_cst) == 0)
        futex_wait(&asleep_, 1);
      quiet = 0;
      schedule_from_now();
      continue;
    }
    // Ticks keep their period whatever a tick's work took; after a long
    // stall (a preempted watchdog) the schedule restarts from now.
    advance();
    timespec now{};
    ::clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec > next.tv_sec + 1) {
      next = now;
      advance();
    }
    futex_wait_until(&stop_, 0, next);
  }
}

}  // namespace cowq::detail
