// An intrusive binary min-heap of deadlines; the owner provides the lock.
#pragma once

#include <cowq/work.hpp>

#include <chrono>
#include <vector>

namespace cowq::detail {

// Arming and cancelling are O(log n); nodes live in whatever they time
// (a delayed work, a sleeping coroutine's awaiter, a pool), so arming
// allocates only when the heap outgrows its reserve. Each pool owns one,
// under its lock: however many coroutines sleep, the pool waits for the
// earliest deadline only.
class timer_heap {
 public:
  using clock = std::chrono::steady_clock;

  timer_heap() { heap_.reserve(kReserve); }

  bool empty() const noexcept { return heap_.empty(); }
  std::size_t size() const noexcept { return heap_.size(); }
  timer_node* earliest() const noexcept { return heap_.empty() ? nullptr : heap_.front(); }

  // (Re)arms n; returns true if it was armed before.
  bool arm(timer_node* n, clock::time_point deadline) {
    const bool was = n->armed();
    if (was) remove_at(n->heap_index_);
    n->deadline_ = deadline;
    heap_.push_back(n);
    sift_up(heap_.size() - 1);
    return was;
  }

  // Disarms n; true if it was armed.
  bool cancel(timer_node* n) noexcept {
    if (!n->armed()) return false;
    remove_at(n->heap_index_);
    return true;
  }

  // Removes and returns the earliest node if due by now, else null.
  timer_node* pop_due(clock::time_point now) noexcept {
    if (heap_.empty() || heap_.front()->deadline_ > now) return nullptr;
    timer_node* n = heap_.front();
    remove_at(0);
    return n;
  }

  // Removes every node whose callback is fire and returns them.
  std::vector<timer_node*> take_all(void (*fire)(timer_node*)) {
    std::vector<timer_node*> out;
    for (auto* n : heap_)
      if (n->fire_ == fire) out.push_back(n);
    for (auto* n : out) remove_at(n->heap_index_);
    return out;
  }

 private:
  static constexpr std::size_t kReserve = 1024;
  static constexpr std::size_t kNone = static_cast<std::size_t>(-1);

  void place(std::size_t i, timer_node* n) noexcept {
    heap_[i] = n;
    n->heap_index_ = i;
  }
  void sift_up(std::size_t i) noexcept {
    timer_node* n = heap_[i];
    while (i > 0) {
      const std::size_t parent = (i - 1) / 2;
      if (heap_[parent]->deadline_ <= n->deadline_) break;
      place(i, heap_[parent]);
      i = parent;
    }
    place(i, n);
  }
  void sift_down(std::size_t i) noexcept {
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
  void remove_at(std::size_t i) noexcept {
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

  std::vector<timer_node*> heap_;
};

}  // namespace cowq::detail
