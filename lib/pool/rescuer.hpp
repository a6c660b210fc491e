// Rescuers: forward progress for guaranteed_progress workqueues.
//
// Each such workqueue owns one rescuer thread, created with the workqueue so
// that it exists before memory or threads run out. When a pool has work
// waiting and can get no worker (thread creation fails, or the pool is at
// its cap), it calls the rescuers of the workqueues whose items wait (a
// mayday). The rescuer attaches to that pool as one more worker, runs that
// workqueue's waiting items there, and detaches: the kernel's rescuer_thread.
#pragma once

#include "pool.hpp"

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

namespace cowq::detail {

class rescuer {
 public:
  explicit rescuer(wq_impl& wq);
  ~rescuer();
  rescuer(const rescuer&) = delete;
  rescuer& operator=(const rescuer&) = delete;

  // Called with q->pool_'s lock held (the lock order is pool lock, then
  // mutex_); q->mayday_ is set by the caller.
  void mayday(pwq* q);
  void stop();

 private:
  void main();
  // Runs q's waiting items on q's pool.
  void rescue(pwq* q);

  worker self_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<pwq*> maydays_;  // mutex_
  bool stop_ = false;         // mutex_
  std::thread thread_;
};

}  // namespace cowq::detail
