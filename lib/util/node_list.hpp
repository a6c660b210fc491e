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

  work_node* pop_front() noexcept {
    work_node* n = head_;
    if (n == nullptr) return nullptr;
    head_ = n->next_;
    if (head_ != nullptr)
      head_->prev_ = nullptr;
    else
      tail_ = nullptr;
    n->next_ = n->prev_ = nullptr;
    return n;
  }

  void remove(work_node* n) noexcept {
    if (n->prev_ != nullptr)
      n->prev_->next_ = n->next_;
    else
      head_ = n->next_;
    if (n->next_ != nullptr)
      n->next_->prev_ = n->prev_;
    else
      tail_ = n->prev_;
    n->next_ = n->prev_ = nullptr;
  }

 private:
  work_node* head_ = nullptr;
  work_node* tail_ = nullptr;
};

}  // namespace cowq::detail
