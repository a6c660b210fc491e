// The runtime: builds the pools, owns the workqueues, shuts down.
#include "runtime_impl.hpp"

#include "../log/log.hpp"
#include "../net/multishot_recv.hpp"
#include "../net/resolver.hpp"
#include "stats_server.hpp"

#include <algorithm>
#include <cstdio>
#include <stdexcept>
#include <thread>

namespace cowq {
namespace detail {

extern void (*delayed_work_fire)(timer_node*);

void cancel_all_io(pool& p);

namespace {
// The most recent live runtime, for sync_wait(task) without one named.
std::atomic<runtime*> g_current{nullptr};
}  // namespace

runtime_impl::runtime_impl(runtime* self, runtime_options opts)
    : self_(self), opts_(std::move(opts)), topo_(discover_topology(opts_.cpus)) {
  if (opts_.max_workers_per_pool < 2)
    throw std::invalid_argument("cowq: max_workers_per_pool must be at least 2");
  if (opts_.idle_timeout.count() <= 0)
    throw std::invalid_argument("cowq: idle_timeout must be positive");
  if (opts_.idle_spin.count() < 0)
    throw std::invalid_argument("cowq: idle_spin must not be negative");
  if (opts_.watchdog.tick.count() <= 0 || opts_.watchdog.cpu_hog_threshold.count() <= 0)
    throw std::invalid_argument("cowq: watchdog tick and cpu_hog_threshold must be positive");
  {
    const auto& rb = opts_.recv_buffers;
    if (rb.count == 0 || rb.count > 32768 || (rb.count & (rb.count - 1)) != 0)
      throw std::invalid_argument("cowq: recv_buffers.count must be a power of two from 1 to 32768");
    if (rb.size == 0 || rb.size > (1u << 24))
      throw std::invalid_argument("cowq: recv_buffers.size must be from 1 byte to 16 MiB");
  }
  watchdog_ = std::make_unique<watchdog>(*this);
  cpu_index_.fill(-1);
  for (std::size_t i = 0; i < topo_.cpus.size(); ++i)
    cpu_index_[static_cast<std::size_t>(topo_.cpus[i])] = static_cast<int>(i);

  auto make_pool = [&](int cpu, int cpu_index, int node, bool high,
                       const std::vector<int>& cpus) {
    auto p = std::make_unique<pool>();
    p->rt_ = this;
    p->watchdog_ = watchdog_.get();
    p->id_ = static_cast<int>(pools_.size());
    p->cpu_ = cpu;
    p->cpu_index_ = cpu_index;
    p->node_ = node;
    p->highpri_ = high;
    CPU_ZERO(&p->cpumask_);
    for (int c : cpus) CPU_SET(c, &p->cpumask_);
    p->concurrency_ = static_cast<int>(cpus.size());
    p->name_ = (cpu >= 0 ? std::to_string(cpu) : "u" + std::to_string(node)) + (high ? "H" : "");
    pools_.push_back(std::move(p));
    return pools_.back().get();
  };
  for (std::size_t i = 0; i < topo_.cpus.size(); ++i) {
    const int cpu = topo_.cpus[i];
    const int node = topo_.node_of_cpu[i];
    bound_.push_back({make_pool(cpu, static_cast<int>(i), node, false, {cpu}),
                      make_pool(cpu, static_cast<int>(i), node, true, {cpu})});
  }
  for (std::size_t n = 0; n < topo_.nodes.size(); ++n)
    unbound_.push_back({make_pool(-1, -1, static_cast<int>(n), false, topo_.nodes[n]),
                        make_pool(-1, -1, static_cast<int>(n), true, topo_.nodes[n])});
  try {
    for (auto& p : pools_) p->start();
    watchdog_->start();
  } catch (...) {
    for (auto& p : pools_)
      if (p->ring_) p->stop_and_join();
    throw;
  }
  log().info("runtime started: {} CPUs, {} nodes, {} pools", topo_.cpus.size(),
             topo_.nodes.size(), pools_.size());

  system_wq_ = &alloc("events", wq_flags::none, 0);
  system_highpri_wq_ = &alloc("events_highpri", wq_flags::highpri, 0);
  system_unbound_wq_ = &alloc("events_unbound", wq_flags::unbound, wq_max_active);
  system_long_wq_ = &alloc("events_long", wq_flags::none, 0);
  stats_server_ = stats_server::start(*this);
}

runtime_impl::~runtime_impl() { shutdown(); }

resolver_thread& runtime_impl::resolver() {
  std::lock_guard g(resolver_mutex_);
  if (!resolver_) resolver_ = std::make_unique<resolver_thread>(opts_.name + "/resolver");
  return *resolver_;
}

int runtime_impl::cpu_index_for(int cpu) const noexcept {
  if (cpu < 0 || cpu >= CPU_SETSIZE) return -1;
  return cpu_index_[static_cast<std::size_t>(cpu)];
}

workqueue& runtime_impl::alloc(std::string name, wq_flags flags, int max_active) {
  if (max_active < 0 || max_active > wq_max_active)
    throw std::invalid_argument("cowq: max_active must be in [0, " +
                                std::to_string(wq_max_active) + "]");
  if (max_active == 0) max_active = wq_dfl_active;
  if (has(flags, wq_flags::ordered)) {
    flags = flags | wq_flags::unbound;
    max_active = 1;
  }
  if (stopping_.load(std::memory_order_relaxed))
    throw std::logic_error("cowq: the runtime is shutting down");
  auto w = std::make_unique<wq_impl>(this, std::move(name), flags, max_active);
  if (has(flags, wq_flags::guaranteed_progress)) {
    try {
      w->rescuer_ = std::make_unique<rescuer>(*w);
    } catch (const std::system_error& e) {
      throw std::runtime_error("cowq: cannot create the rescuer of workqueue '" + w->name_ +
                               "': " + e.what());
    }
  }
  std::lock_guard g(wqs_mutex_);
  wqs_.push_back(std::move(w));
  return wqs_.back()->facade_;
}

void runtime_impl::shutdown() {
  std::lock_guard sg(shutdown_mutex_);
  if (shut_down_) return;
  if (current_worker() != nullptr)
    throw std::logic_error("cowq: runtime shutdown from one of its own workers");
  stopping_.store(true, std::memory_order_relaxed);

  // Run everything: delayed work fires now, and draining repeats until a
  // whole pass finds every workqueue idle (items may queue to other
  // workqueues as they finish).
  std::vector<wq_impl*> all;
  {
    std::lock_guard g(wqs_mutex_);
    for (auto& w : wqs_) all.push_back(w.get());
  }
  auto fire_delayed = [&] {
    int n = 0;
    for (auto& p : pools_) n += p->fire_all_timers(delayed_work_fire);
    return n;
  };
  auto inflight = [&] {
    std::int64_t n = 0;
    for (auto& p : pools_) n += p->inflight_.load(std::memory_order_relaxed);
    return n;
  };
  int fired = 0;
  bool io_cancelled = false;
  auto next_warning = clock::now() + std::chrono::seconds(1);
  for (unsigned round = 0;; ++round) {
    fired += fire_delayed();
    for (auto* w : all)
      if (!w->destroyed_.load(std::memory_order_relaxed)) w->drain();
    bool quiet = true;
    for (auto* w : all) quiet = quiet && w->idle_now();
    if (!quiet || fire_delayed() != 0) continue;
    if (io_cancelled && inflight() == 0) break;
    if (!io_cancelled) {
      // What still waits for I/O (an idle connection's recv, an accept)
      // or sleeps would wait forever or for long: cancel it, so its
      // coroutine resumes with operation_canceled and cleans up; new
      // operations and sleeps fail at once.
      io_cancelled = true;
      for (auto& p : pools_) cancel_all_io(*p);
      // Likewise Asio's services for objects built on a
      // cowq::asio_executor: their reactor thread stops and handlers still
      // pending are destroyed, as when an io_context is destroyed; what
      // that queues (a use_task await resuming as aborted) is drained here.
      {
        std::lock_guard g(asio_mutex_);
        if (asio_context_) asio_context_->shutdown();
      }
      continue;
    }
    // Cancelled requests complete within microseconds; a request the
    // kernel cannot cancel at once (a file read from a slow disk) is said
    // once a second rather than spun on silently.
    if (clock::now() >= next_warning) {
      if (round > 0) log().warn("shutdown: {} I/O operations still in flight", inflight());
      next_warning = clock::now() + std::chrono::seconds(1);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  if (fired > 0) log().info("shutdown ran {} delayed work items early", fired);


  {
    std::lock_guard g(resolver_mutex_);
    if (resolver_) resolver_->stop();
  }
  if (stats_server_) stats_server_->stop();
  // Nothing is left to watch or rescue.
  watchdog_->stop();
  for (auto* w : all)
    if (w->rescuer_) w->rescuer_->stop();
  for (auto& p : pools_) p->stop_and_join();

  std::int64_t live = foreign_live_.load(std::memory_order_relaxed);
  for (auto& p : pools_) live += p->live_coroutines();
  if (live > 0)
    log().warn(
        "shutdown: {} detached coroutines were still suspended, waiting for "
        "something that can no longer happen; their frames are left allocated",
        live);
  shut_down_ = true;
  runtime* expected = self_;
  g_current.compare_exchange_strong(expected, nullptr);
}

runtime_stats runtime_impl::stats() {
  runtime_stats s;
  s.live_coroutines = foreign_live_.load(std::memory_order_relaxed);
  for (auto& p : pools_) {
    pool_stats ps;
    ps.id = p->id_;
    ps.name = p->name_;
    ps.cpu = p->cpu_;
    ps.node = p->node_;
    ps.highpri = p->highpri_;
    {
      std::lock_guard g(p->lock_);
      ps.workers = p->nr_workers_;
      ps.idle = p->nr_idle_;
      ps.running = p->nr_running_;
      ps.items_executed = p->items_executed_;
      ps.workers_created = p->workers_created_;
      ps.workers_destroyed = p->workers_destroyed_;
      ps.pending = p->nr_pending_;
      ps.timers = static_cast<int>(p->timers_.size());
      ps.peak_workers = p->peak_workers_;
      ps.blocking_regions = p->blocking_regions_;
      ps.blocked_detected = p->blocked_detected_;
      ps.hogs_detected = p->hogs_detected_;
      ps.creation_failures = p->creation_failures_;
      ps.maydays = p->maydays_;
      ps.rescued = p->rescued_;
      ps.recv_buffer_shortages = p->recv_shortages_;
      if (p->bufs_set_up_ != nullptr) ps.recv_buffers_in_use = p->bufs_set_up_->in_use_.load(std::memory_order_relaxed);
    }
    ps.io_in_flight = p->inflight_.load(std::memory_order_relaxed);
    s.live_coroutines += p->live_coroutines();
    s.pools.push_back(std::move(ps));
  }
  std::lock_guard g(wqs_mutex_);
  for (auto& w : wqs_) {
    if (w->destroyed_.load(std::memory_order_relaxed)) continue;
    workqueue_stats ws;
    ws.name = w->name_;
    ws.flags = static_cast<std::uint32_t>(w->flags_);
    ws.max_active = w->max_active_;
    ws.escaped_exceptions = w->escaped_.load(std::memory_order_relaxed);
    for (auto& q : w->pwqs_) {
      std::lock_guard pg(q->pool_->lock_);
      ws.queued += q->queued_;
      ws.active += q->nr_active_;
      ws.inactive += q->nr_inactive_;
      ws.completed += q->completed_;
      ws.rescued += q->rescued_;
    }
    s.workqueues.push_back(std::move(ws));
  }
  return s;
}

void detached_started(workqueue& wq) noexcept {
  if (current_worker() != nullptr)
    note_detached(+1);
  else
    wq.impl().rt_->foreign_live_.fetch_add(1, std::memory_order_relaxed);
}

void detached_finished(workqueue* wq, std::exception_ptr e) noexcept {
  if (current_worker() != nullptr)
    note_detached(-1);
  else
    wq->impl().rt_->foreign_live_.fetch_sub(1, std::memory_order_relaxed);
  if (!e) return;
  wq->impl().escaped_.fetch_add(1, std::memory_order_relaxed);
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    log().error("coroutine spawned on '{}' threw: {}", wq->name(), ex.what());
  } catch (...) {
    log().error("coroutine spawned on '{}' threw a non-std exception", wq->name());
  }
}

}  // namespace detail

runtime::runtime(runtime_options opts)
    : impl_(std::make_unique<detail::runtime_impl>(this, std::move(opts))) {
  detail::g_current.store(this, std::memory_order_release);
}

runtime::~runtime() {
  try {
    impl_->shutdown();
  } catch (const std::exception& e) {
    detail::log().critical("runtime destroyed from its own worker: {}", e.what());
    std::terminate();
  }
  runtime* self = this;
  detail::g_current.compare_exchange_strong(self, nullptr);
}

workqueue& runtime::alloc_workqueue(std::string name, wq_flags flags, int max_active) {
  return impl_->alloc(std::move(name), flags, max_active);
}

void runtime::destroy_workqueue(workqueue& wq) {
  detail::wq_impl& w = wq.impl();
  if (w.rt_ != impl_.get()) throw std::invalid_argument("cowq: workqueue of another runtime");
  if (&wq == impl_->system_wq_ || &wq == impl_->system_highpri_wq_ ||
      &wq == impl_->system_unbound_wq_ || &wq == impl_->system_long_wq_)
    throw std::invalid_argument("cowq: the default workqueues live as long as the runtime");
  w.drain();
  if (w.rescuer_) w.rescuer_->stop();
  // The object stays allocated until the runtime goes: suspended coroutines
  // spawned on it may still hold its pool workqueues.
  w.destroyed_.store(true, std::memory_order_relaxed);
}

workqueue& runtime::system_wq() noexcept { return *impl_->system_wq_; }
workqueue& runtime::system_highpri_wq() noexcept { return *impl_->system_highpri_wq_; }
workqueue& runtime::system_unbound_wq() noexcept { return *impl_->system_unbound_wq_; }
workqueue& runtime::system_long_wq() noexcept { return *impl_->system_long_wq_; }
void runtime::shutdown() { impl_->shutdown(); }
runtime_stats runtime::stats() const { return impl_->stats(); }
std::span<const int> runtime::cpus() const noexcept { return impl_->topo_.cpus; }
int runtime::numa_nodes() const noexcept { return static_cast<int>(impl_->topo_.nodes.size()); }
runtime* runtime::current() noexcept { return detail::g_current.load(std::memory_order_acquire); }

std::string to_string(const runtime_stats& s) {
  std::string out;
  char line[256];
  std::snprintf(line, sizeof line, "%-6s %7s %5s %7s %7s %12s %8s %9s %4s %7s %7s %5s %7s\n",
                "pool", "workers", "idle", "running", "pending", "executed", "created",
                "destroyed", "peak", "marked", "blocked", "hogs", "rescued");
  out += line;
  for (auto& p : s.pools) {
    std::snprintf(line, sizeof line,
                  "%-6s %7d %5d %7d %7d %12llu %8llu %9llu %4d %7llu %7llu %5llu %7llu\n",
                  p.name.c_str(), p.workers, p.idle, p.running, p.pending,
                  static_cast<unsigned long long>(p.items_executed),
                  static_cast<unsigned long long>(p.workers_created),
                  static_cast<unsigned long long>(p.workers_destroyed), p.peak_workers,
                  static_cast<unsigned long long>(p.blocking_regions),
                  static_cast<unsigned long long>(p.blocked_detected),
                  static_cast<unsigned long long>(p.hogs_detected),
                  static_cast<unsigned long long>(p.rescued));
    out += line;
  }
  std::snprintf(line, sizeof line, "%-18s %10s %6s %6s %8s %10s %7s\n", "workqueue", "max_active",
                "active", "inact", "queued", "completed", "escaped");
  out += line;
  for (auto& w : s.workqueues) {
    std::snprintf(line, sizeof line, "%-18s %10d %6d %6d %8llu %10llu %7llu\n", w.name.c_str(),
                  w.max_active, w.active, w.inactive, static_cast<unsigned long long>(w.queued),
                  static_cast<unsigned long long>(w.completed),
                  static_cast<unsigned long long>(w.escaped_exceptions));
    out += line;
  }
  std::snprintf(line, sizeof line, "live detached coroutines: %lld\n",
                static_cast<long long>(s.live_coroutines));
  out += line;
  return out;
}

std::string to_json(const runtime_stats& s) {
  std::string out = "{";
  auto key = [&](const char* k) {
    out += '"';
    out += k;
    out += "\":";
  };
  auto num = [&](const char* k, auto v) {
    key(k);
    out += std::to_string(v);
    out += ',';
  };
  auto text = [&](const char* k, const std::string& v) {
    key(k);
    detail::append_json_string(out, v);
    out += ',';
  };
  // Replaces the comma after the last member, if any, with c.
  auto close = [&](char c) {
    if (out.back() == ',')
      out.back() = c;
    else
      out += c;
  };
  out += "\"pools\":[";
  for (auto& p : s.pools) {
    out += '{';
    num("id", p.id);
    text("name", p.name);
    num("cpu", p.cpu);
    num("node", p.node);
    key("highpri");
    out += p.highpri ? "true," : "false,";
    num("workers", p.workers);
    num("idle", p.idle);
    num("running", p.running);
    num("items_executed", p.items_executed);
    num("workers_created", p.workers_created);
    num("workers_destroyed", p.workers_destroyed);
    num("pending", p.pending);
    num("timers", p.timers);
    num("io_in_flight", p.io_in_flight);
    num("peak_workers", p.peak_workers);
    num("blocking_regions", p.blocking_regions);
    num("blocked_detected", p.blocked_detected);
    num("hogs_detected", p.hogs_detected);
    num("creation_failures", p.creation_failures);
    num("maydays", p.maydays);
    num("rescued", p.rescued);
    num("recv_buffers_in_use", p.recv_buffers_in_use);
    num("recv_buffer_shortages", p.recv_buffer_shortages);
    close('}');
    out += ',';
  }
  close(']');
  out += ",\"workqueues\":[";
  for (auto& w : s.workqueues) {
    out += '{';
    text("name", w.name);
    num("flags", w.flags);
    num("max_active", w.max_active);
    num("queued", w.queued);
    num("active", w.active);
    num("inactive", w.inactive);
    num("completed", w.completed);
    num("escaped_exceptions", w.escaped_exceptions);
    num("rescued", w.rescued);
    close('}');
    out += ',';
  }
  close(']');
  out += ',';
  num("live_coroutines", s.live_coroutines);
  close('}');
  return out;
}

}  // namespace cowq
