// Marked blocking regions: the worker leaves nr_running for their duration.
#include "pool.hpp"

#include <cowq/blocking.hpp>

namespace cowq {

blocking_scope::blocking_scope() noexcept : worker_(detail::current_worker()), item_(0) {
  if (worker_ == nullptr) return;
  item_ = worker_->seq_.load(std::memory_order_relaxed);
  // Only the outermost scope acts; blocking_depth_ is the worker's own.
  if (worker_->blocking_depth_++ == 0) worker_->pool_->worker_sleeping(worker_);
}

blocking_scope::~blocking_scope() {
  // Ended on another thread or in a later item: the item that opened the
  // scope has ended, and with it the scope's effect (rejoin_after_item).
  if (worker_ == nullptr || worker_ != detail::current_worker() ||
      worker_->seq_.load(std::memory_order_relaxed) != item_)
    return;
  if (--worker_->blocking_depth_ == 0) worker_->pool_->worker_running(worker_);
}

}  // namespace cowq
