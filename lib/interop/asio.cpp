// The library side of <cowq/asio.hpp>: queueing a coroutine back where it
// left from Asio's threads, and the execution context Asio's services use.
#include <cowq/asio.hpp>

#include "../log/log.hpp"
#include "../pool/pool.hpp"
#include "../runtime/runtime_impl.hpp"
#include "../wq/wq_impl.hpp"

#include <atomic>
#include <mutex>

namespace cowq::detail {

bool bind_to_current(work_node* n) noexcept {
  pwq* q = current_pwq();
  if (q == nullptr) return false;
  n->pwq_ = q;
  return true;
}

bool resume_bound(work_node* n) noexcept {
  pwq* q = n->pwq_;
  if (q->pool_->insert(q, n)) return true;
  // Too late: the pools have stopped. The coroutine stays suspended and
  // shows up in the shutdown's count of stranded coroutines.
  static std::atomic<bool> said{false};
  if (!said.exchange(true, std::memory_order_relaxed))
    log().warn("an Asio operation awaited with cowq::use_task completed after its runtime "
               "stopped; the awaiting coroutine cannot resume (stop the io_context before "
               "shutting the runtime down)");
  return false;
}

bool running_item_of(const workqueue& wq) noexcept {
  pwq* q = current_pwq();
  return q != nullptr && q->wq_ == &wq.impl();
}

asio::execution_context& asio_context_of(workqueue& wq) {
  runtime_impl& rt = *wq.impl().rt_;
  std::lock_guard g(rt.asio_mutex_);
  if (!rt.asio_context_) rt.asio_context_ = std::make_unique<runtime_asio_context>();
  return *rt.asio_context_;
}

}  // namespace cowq::detail

namespace cowq::detail {

bool spawn_for_asio(workqueue& wq, task<void> t) noexcept {
  auto h = t.release();
  auto& p = h.promise();
  p.detached_wq_ = &wq;
  p.start_node_.handle_ = h;
  wq_impl& w = wq.impl();
  // Not queue_checked(): a runtime that is shutting down still takes
  // completions while its pools run, or Asio's thread would meet an
  // exception it cannot handle.
  if (!w.destroyed_.load(std::memory_order_relaxed)) {
    pwq* q = w.select(-1);
    if (q->pool_->insert(q, &p.start_node_)) {
      detached_started(wq);
      return true;
    }
  }
  h.destroy();
  log().warn("a function given to cowq::asio_executor for workqueue '{}' was dropped: {}",
             w.name_, w.destroyed_.load(std::memory_order_relaxed)
                          ? "the workqueue was destroyed"
                          : "the runtime has stopped");
  return false;
}

}  // namespace cowq::detail
