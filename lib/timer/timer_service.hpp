// One thread and one heap of deadlines for the whole runtime.
#pragma once

#include <cowq/work.hpp>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace cowq::detail {

// Delayed work and idle-worker reaping arm deadlines here. Arming and
// cancelling are O(log n) and allocate only when the heap outgrows its
// reserve. Callbacks run on the timer thread with no lock held and must be
// short: they queue work or wake workers, nothing more.
//
// Thread safety: arm/cancel from any thread; callbacks on the timer thread.
class timer_service {
 public:
  using clock = std::chrono::steady_clock;

  explicit timer_service(const std::string& thread_name);
  ~timer_service();

  // (Re)arms n for deadline. Returns true if it was armed before.
  bool arm(timer_node* n, clock::time_point deadline);
  // Disarms n; true if it was armed (its callback then never runs).
  bool cancel(timer_node* n);
  bool armed(const timer_node* n);
  // Fires every armed timer whose callback is `fire` now, on the caller's
  // thread; returns how many. Used at shutdown for delayed work.
  int fire_all(void (*fire)(timer_node*));
  // Stops the thread; armed timers are dropped.
  void stop();

 private:
  void run();
  void sift_up(std::size_t i);
  void sift_down(std::size_t i);
  void remove_at(std::size_t i);
  void place(std::size_t i, timer_node* n);

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<timer_node*> heap_;  // mu_: min-heap on deadline_
  bool stop_ = false;              // mu_
  std::thread thread_;
};

}  // namespace cowq::detail
