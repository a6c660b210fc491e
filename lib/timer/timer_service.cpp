#include "timer_service.hpp"

#include <pthread.h>

namespace cowq::detail {

namespace {
// Enough for typical delayed-work counts without growing.
constexpr std::size_t kHeapReserve = 1024;
constexpr std::size_t kNone = static_cast<std::size_t>(-1);
}  // namespace

timer_service::timer_service(const std::string& thread_name) {
  heap_.reserve(kHeapReserve);
  thread_ = std::thread([this, thread_name] {
    ::pthread_setname_np(::pthread_self(), thread_name.substr(0, 15).c_str());
    run();
  });
}

timer_service::~timer_service() { stop(); }

void timer_service::stop() {
  {
    std::lock_guard g(mu_);
    stop_ = true;
    for (auto* n : heap_) n->heap_index_ = kNone;
    heap_.clear();
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void timer_service::place(std::size_t i, timer_node* n) {
  heap_[i] = n;
  n->heap_index_ = i;
}

void timer_service::sift_up(std::size_t i) {
  timer_node* n = heap_[i];
  while (i > 0) {
    std::size_t parent = (i - 1) / 2;
    if (heap_[parent]->deadline_ <= n->deadline_) break;
    place(i, heap_[parent]);
    i = parent;
  }
  place(i, n);
}

void timer_service::sift_down(std::size_t i) {
  timer_node* n = heap_[i];
  const std::size_t size = heap_.size();
  for (;;) {
    std::size_t c = 2 * i + 1;
    if (c >= size) break;
    if (c + 1 < size && heap_[c + 1]->deadline_ < heap_[c]->deadline_) ++c;
    if (n->deadline_ <= heap_[c]->deadline_) break;
    place(i, heap_[c]);
    i = c;
  }
  place(i, n);
}

void timer_service::remove_at(std::size_t i) {
  timer_node* n = heap_[i];
  timer_node* last = heap_.back();
  heap_.pop_back();
  n->heap_index_ = kNone;
  if (i < heap_.size()) {
    place(i, last);
    sift_up(i);
    sift_down(last->heap_index_);
  }
}

bool timer_service::arm(timer_node* n, clock::time_point deadline) {
  bool was_armed;
  bool new_earliest;
  {
    std::lock_guard g(mu_);
    if (stop_) return false;
    was_armed = n->armed();
    if (was_armed) remove_at(n->heap_index_);
    n->deadline_ = deadline;
    heap_.push_back(n);
    sift_up(heap_.size() - 1);
    new_earliest = heap_.front() == n;
  }
  // Only a new earliest deadline changes how long the thread must sleep.
  if (new_earliest) cv_.notify_one();
  return was_armed;
}

bool timer_service::cancel(timer_node* n) {
  std::lock_guard g(mu_);
  if (!n->armed()) return false;
  remove_at(n->heap_index_);
  return true;
}

bool timer_service::armed(const timer_node* n) {
  std::lock_guard g(mu_);
  return n->armed();
}

int timer_service::fire_all(void (*fire)(timer_node*)) {
  std::vector<timer_node*> due;
  {
    std::lock_guard g(mu_);
    for (auto* n : heap_)
      if (n->fire_ == fire) due.push_back(n);
    for (auto* n : due) remove_at(n->heap_index_);
  }
  for (auto* n : due) n->fire_(n);
  return static_cast<int>(due.size());
}

void timer_service::run() {
  std::unique_lock lk(mu_);
  while (!stop_) {
    if (heap_.empty()) {
      cv_.wait(lk);
      continue;
    }
    auto now = clock::now();
    timer_node* n = heap_.front();
    if (n->deadline_ > now) {
      cv_.wait_until(lk, n->deadline_);
      continue;
    }
    remove_at(0);
    // The callback may re-arm this or other timers, so the lock is dropped;
    // cancel() returning false from here on tells the canceller it raced
    // with the firing.
    lk.unlock();
    n->fire_(n);
    lk.lock();
  }
}

}  // namespace cowq::detail
