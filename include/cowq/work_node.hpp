// The intrusive node every work item is built on.
#pragma once

#include <cstdint>

namespace cowq {
namespace detail {

struct pwq;

// A work item as the pools see it. It lives inside whatever is being queued
// (a coroutine frame, an awaiter, a `cowq::work`), so queueing allocates
// nothing. While queued, every field belongs to the lock of the pool the
// item is queued on; the worker copies `pwq_` out before running the item
// because the item may free itself while it runs.
struct work_node {
  work_node* next_ = nullptr;
  work_node* prev_ = nullptr;
  void (*run_)(work_node*) = nullptr;
  pwq* pwq_ = nullptr;
  std::uint32_t flags_ = 0;
};

// flags_ bits.
inline constexpr std::uint32_t node_callable = 1u << 0;  // a cowq::work: non-reentrant
inline constexpr std::uint32_t node_color = 1u << 1;     // flush colour of this queueing

}  // namespace detail
}  // namespace cowq
