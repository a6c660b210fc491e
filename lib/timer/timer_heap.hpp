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
  timer_node* earliest() const noexcept { return heap_.empty() ? nullptr : heap_.front().node; }

  // (Re)arms n; returns true if it was armed before.
  bool arm(timer_node* n, clock::time_point deadline) {
    const bool was = n->armed();
    if (was) remove_at(n->heap_index_);
    n->deadline_ = deadline;
    heap_.push_back({deadline, n});
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
    if (heap_.empty() || heap_.front().deadline > now) return nullptr;
    timer_node* n = heap_.front().node;
    remove_at(0);
    return n;
  }

  // Removes every node whose callback is fire and returns them.
  std::vector<timer_node*> take_all(void (*fire)(timer_node*)) {
    std::vector<timer_node*> out;
    for (auto& e : heap_)
      if (e.node->fire_ == fire) out.push_back(e.node);
    for (auto* n : out) remove_at(n->heap_index_);
    return out;
  }

 private:
  static constexpr std::size_t kReserve = 1024;
  static constexpr std::size_t kNone = static_cast<std::size_t>(-1);

  // The deadline is kept next to the pointer so that sifting compares
  // within the array instead of loading every node's deadline from its
  // coroutine frame: with 100,000 sleepers that is a cache miss per level.
  struct entry {
    clock::time_point deadline;
    timer_node* node;
  };

  void place(std::size_t i, entry e) noexcept {
    heap_[i] = e;
    e.node->heap_index_ = i;
  }
  void sift_up(std::size_t i) noexcept {
    const entry e = heap_[i];
    while (i > 0) {
      const std::size_t parent = (i - 1) / 2;
      if (heap_[parent].deadline <= e.deadline) break;
      place(i, heap_[parent]);
      i = parent;
    }
    place(i, e);
  }
  void sift_down(std::size_t i) noexcept {
    const entry e = heap_[i];
    const std::size_t size = heap_.size();
    for (;;) {
      std::size_t c = 2 * i + 1;
      if (c >= size) break;
      if (c + 1 < size && heap_[c + 1].deadline < heap_[c].deadline) ++c;
      if (e.deadline <= heap_[c].deadline) break;
      place(i, heap_[c]);
      i = c;
    }
    place(i, e);
  }
  void remove_at(std::size_t i) noexcept {
    timer_node* n = heap_[i].node;
    const entry last = heap_.back();
    heap_.pop_back();
    n->heap_index_ = kNone;
    if (i < heap_.size()) {
      place(i, last);
      sift_up(i);
      sift_down(last.node->heap_index_);
    }
  }

  std::vector<entry> heap_;
};

}  // namespace cowq::detail
