// The non-template parts of <cowq/sync.hpp>.
#include <cowq/sync.hpp>

#include "../log/log.hpp"
#include "../pool/pool.hpp"

#include <atomic>
#include <string>

namespace cowq::detail {

void bind_waiter(sync_waiter* w, std::coroutine_handle<> h, const char* what) {
  w->handle_ = h;
  if (!bind_to_current(w))
    throw std::logic_error(std::string(what) +
                           " must be awaited by a coroutine running on a cowq worker");
}

void wake_waiter(work_node* n) noexcept {
  pwq* q = n->pwq_;
  if (q->pool_->insert(q, n)) return;
  // The pools have stopped: the coroutine stays suspended and shows up in
  // the shutdown's count of stranded coroutines.
  static std::atomic<bool> said{false};
  if (!said.exchange(true, std::memory_order_relaxed))
    log().warn("a coroutine waiting on a cowq semaphore, mutex, event or channel was let go "
               "after its runtime stopped; it cannot resume");
}

}  // namespace cowq::detail

namespace cowq {

bool semaphore::try_acquire() noexcept {
  std::lock_guard g(m_);
  if (count_ == 0) return false;
  --count_;
  return true;
}

bool semaphore::suspend_acquire(detail::sync_waiter* w, std::coroutine_handle<> h) {
  detail::bind_waiter(w, h, "cowq::semaphore::acquire");
  std::lock_guard g(m_);
  // A permit may have come back since await_ready looked.
  if (count_ > 0) {
    --count_;
    return false;
  }
  waiters_.push(w);
  return true;
}

void semaphore::release(std::size_t n) noexcept {
  detail::waiter_list to_wake;
  {
    std::lock_guard g(m_);
    for (; n > 0; --n) {
      detail::sync_waiter* w = waiters_.pop();
      if (w == nullptr) break;
      to_wake.push(w);
    }
    count_ += n;
  }
  to_wake.wake_all();
}

std::size_t semaphore::available() const noexcept {
  std::lock_guard g(m_);
  return count_;
}

bool event::suspend_wait(detail::sync_waiter* w, std::coroutine_handle<> h) {
  detail::bind_waiter(w, h, "cowq::event::wait");
  std::lock_guard g(m_);
  if (set_) return false;
  waiters_.push(w);
  return true;
}

void event::set() noexcept {
  detail::waiter_list to_wake;
  {
    std::lock_guard g(m_);
    set_ = true;
    std::swap(to_wake, waiters_);
  }
  to_wake.wake_all();
}

void event::reset() noexcept {
  std::lock_guard g(m_);
  set_ = false;
}

bool event::is_set() const noexcept {
  std::lock_guard g(m_);
  return set_;
}

}  // namespace cowq
