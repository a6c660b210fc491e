// Intrusive FIFO of work nodes; the caller provides the locking.
#pragma once

#include <cowq/work_node.hpp>

namespace cowq::detail {

// Where a queued node is linked, kept in work_node::flags_ so a cancel can
// unlink it in O(1). Under the pool lock.
inline constexpr std::uint32_t node_where_shift = 4;
inline constexpr std::uint32_t node_where_mask = 3u << node_where_shift;
enum class node_where : std::uint32_t { none = 0, worklist = 1, inactive = 2, scheduled = 3 };

inline node_where where(const work_node* n) noexcept {
  return node_where((n->flags_ & node_where_mask) >> node_where_shift);
}
inline void set_where(work_node* n, node_where w) noexcept {
  n->flags_ = (n->flags_ & ~node_where_mask) | (std::uint32_t(w) << node_where_shift);
}

class node_list {
 public:
  bool empty() const noexcept { return head_ == nullptr; }
  work_node* front() const noexcept { return head_; }
  bool single() const noexcept { return head_ != nullptr && head_ == tail_; }

  void push_back(work_node* n) noexcept {
    n->next_ = nullptr;
    n->prev_ = tail_;
    if (tail_ != nullptr)
      tail_->next_ = n;
    else
      head_ = n;
    tail_ = n;
  }

  // Touches only the node it returns: the new head's prev_ is left stale
  // (remove() knows the head by head_, not by a null prev_). On a long list
  // the next node is cold, and writing to it here would stall the caller
  // under the pool lock; it is prefetched instead, for the next pop.
  work_node* pop_front() noexcept {
    work_node* n = head_;
    if (n == nullptr) return nullptr;
    head_ = n->next_;
    if (head_ != nullptr)
      __builtin_prefetch(head_, 1);
    else
      tail_ = nullptr;
    n->next_ = n->prev_ = nullptr;
    return n;
  }

  void remove(work_node* n) noexcept {
    const bool was_head = n == head_;
    work_node* next = n->next_;
    work_node* prev = was_head ? nullptr : n->prev_;  // a head's prev_ may be stale
    if (was_head)
      head_ = next;
    else
      prev->next_ = next;
    if (next != nullptr)
      next->prev_ = prev;
    else
      tail_ = prev;
    n->next_ = n->prev_ = nullptr;
  }

 private:
  work_node* head_ = nullptr;
  work_node* tail_ = nullptr;
};

}  // namespace cowq::detail
