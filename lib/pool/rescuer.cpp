// Rescuers and maydays; see rescuer.hpp.
#include "rescuer.hpp"

#include "../log/log.hpp"
#include "../runtime/runtime_impl.hpp"
#include "../wq/wq_impl.hpp"

#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace cowq::detail {

void pool::send_mayday_locked() {
  for (work_node* n = worklist_.front(); n != nullptr; n = n->next_) {
    pwq* q = n->pwq_;
    rescuer* r = q->wq_->rescuer_.get();
    if (r == nullptr || q->mayday_) continue;
    q->mayday_ = true;
    ++maydays_;
    r->mayday(q);
  }
}

rescuer::rescuer(wq_impl& wq) {
  self_.rescuer_ = true;
  self_.name_ = wq.rt_->opts_.name + "/r:" + wq.name_;
  // Created now, while threads can still be had.
  thread_ = std::thread(&rescuer::main, this);
}

rescuer::~rescuer() { stop(); }

void rescuer::stop() {
  {
    std::lock_guard g(mutex_);
    stop_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
}

void rescuer::mayday(pwq* q) {
  {
    std::lock_guard g(mutex_);
    maydays_.push_back(q);
  }
  cv_.notify_one();
}

void rescuer::main() {
  ::pthread_setname_np(::pthread_self(), self_.name_.substr(0, 15).c_str());
  self_.tid_ = static_cast<pid_t>(::syscall(SYS_gettid));
  set_current_worker(&self_);
  for (;;) {
    pwq* q;
    {
      std::unique_lock g(mutex_);
      cv_.wait(g, [&] { return stop_ || !maydays_.empty(); });
      if (maydays_.empty()) break;  // stopping with nothing asked of us
      q = maydays_.front();
      maydays_.pop_front();
    }
    rescue(q);
  }
  set_current_worker(nullptr);
}

void rescuer::rescue(pwq* q) {
  pool* p = q->pool_;
  if (self_.pool_ != p) {
    // Run where the pool's own workers run.
    self_.pool_ = p;
    ::sched_setaffinity(0, sizeof p->cpumask_, &p->cpumask_);
  }
  std::unique_lock lk(p->lock_);
  q->mayday_ = false;
  if (p->stopping_) return;
  // Attached, the rescuer is one more running worker of the pool (it is not
  // on workers_: the watchdog and the idle timer leave it alone).
  self_.counted_ = true;
  ++p->nr_running_;
  bool again = true;
  while (again) {
    // Take the workqueue's waiting items, in order.
    for (work_node* n = p->worklist_.front(); n != nullptr;) {
      work_node* next = n->next_;
      if (n->pwq_ == q) {
        p->worklist_.remove(n);
        --p->nr_pending_;
        worker* owner = nullptr;
        if ((n->flags_ & node_callable) != 0)
          owner = work_access::running_on(*static_cast<work_item_node*>(n)->self_);
        // A callable running elsewhere runs after that run, on its worker.
        set_where(n, node_where::scheduled);
        (owner != nullptr ? owner : &self_)->scheduled_.push_back(n);
      }
      n = next;
    }
    if (self_.scheduled_.empty()) break;
    while (work_node* n = self_.scheduled_.pop_front()) {
      ++p->rescued_;
      ++q->rescued_;
      p->process_one(&self_, n, lk);
    }
    // Items of q queued meanwhile are ours too while the pool still
    // cannot get a worker of its own.
    again = p->need_more_worker() && p->nr_idle_ + p->nr_starting_ == 0;
  }
  self_.counted_ = false;
  --p->nr_running_;
  // Coroutines started or finished here count with the pool's retired
  // workers, where live_coroutines() sums them.
  p->retired_live_ += self_.live_delta_.load(std::memory_order_relaxed);
  self_.live_delta_.store(0, std::memory_order_relaxed);
  // Whatever else waits: the pool's own machinery, and another mayday if
  // it still cannot get a worker.
  p->kick(lk);
}

}  // namespace cowq::detail
