// The non-template parts of <cowq/sync.hpp> and <cowq/task_group.hpp>.
#include <cowq/sync.hpp>
#include <cowq/task_group.hpp>

#include "../log/log.hpp"
#include "../pool/pool.hpp"

#include <atomic>
#include <cstdio>
#include <exception>
#include <string>

namespace cowq::detail {

namespace {

// The waits whose only question under the lock is whether they may go on
// now (ready(), which takes what it finds): otherwise a stop already
// requested ends the wait, and else w queues. True when w must wait.
template <typename Ready>
bool wait_or_queue(std::mutex& m, waiter_list& waiters, sync_waiter* w, stop_hook* hook,
                   std::coroutine_handle<> h, const char* what, Ready ready) {
  bind_waiter(w, h, what);
  hook->arm(&m, w);
  std::lock_guard g(m);
  if (ready()) return false;
  if (hook->stop_requested()) {
    w->stopped_ = true;
    return false;
  }
  waiters.push(w);
  return true;
}

}  // namespace

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

bool semaphore::suspend_acquire(detail::sync_waiter* w, detail::stop_hook* hook,
                                std::coroutine_handle<> h) {
  // A permit may have come back since await_ready looked.
  return detail::wait_or_queue(m_, waiters_, w, hook, h, "cowq::semaphore::acquire", [this] {
    if (count_ == 0) return false;
    --count_;
    return true;
  });
}

void semaphore::release(std::size_t n) noexcept {
  // The first n waiters, in order, chained through next_waiter_ (pop() has
  // taken each off, so a stop request no longer touches it).
  detail::sync_waiter* head = nullptr;
  detail::sync_waiter* tail = nullptr;
  {
    std::lock_guard g(m_);
    for (; n > 0; --n) {
      detail::sync_waiter* w = waiters_.pop();
      if (w == nullptr) break;
      (tail != nullptr ? tail->next_waiter_ : head) = w;
      tail = w;
    }
    count_ += n;
  }
  detail::wake_chain(head);
}

bool semaphore::release_up_to(std::size_t limit) noexcept {
  detail::sync_waiter* w;
  {
    std::lock_guard g(m_);
    w = waiters_.pop();
    if (w == nullptr) {
      if (count_ >= limit) return false;
      ++count_;
    }
  }
  if (w != nullptr) detail::wake_waiter(w);
  return true;
}

void mutex::unlock() noexcept {
  if (!sem_.release_up_to(1)) {
    std::fprintf(stderr, "cowq: mutex::unlock() of a mutex that is not locked\n");
    std::terminate();
  }
}

std::size_t semaphore::available() const noexcept {
  std::lock_guard g(m_);
  return count_;
}

bool event::suspend_wait(detail::sync_waiter* w, detail::stop_hook* hook,
                         std::coroutine_handle<> h) {
  return detail::wait_or_queue(m_, waiters_, w, hook, h, "cowq::event::wait",
                               [this] { return set_; });
}

void event::set() noexcept {
  detail::sync_waiter* to_wake;
  {
    std::lock_guard g(m_);
    set_ = true;
    to_wake = waiters_.take_all();
  }
  detail::wake_chain(to_wake);
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


namespace cowq {

task_group::~task_group() {
  std::lock_guard g(m_);
  if (live_ != 0) {
    // Children would touch the group after it is gone.
    std::fprintf(stderr, "cowq: task_group destroyed with %zu children running; join() it first\n",
                 live_);
    std::terminate();
  }
}

std::size_t task_group::size() const noexcept {
  std::lock_guard g(m_);
  return live_;
}

void task_group::child_failed(std::exception_ptr e) noexcept {
  bool first = false;
  {
    std::lock_guard g(m_);
    if (!first_) {
      first_ = std::move(e);
      first = true;
    }
  }
  if (first) stop_.request_stop();
}

void task_group::child_done() noexcept {
  detail::sync_waiter* joiner = nullptr;
  {
    std::lock_guard g(m_);
    if (--live_ == 0) joiner = std::exchange(joiner_, nullptr);
  }
  if (joiner != nullptr) detail::wake_waiter(joiner);
}

bool task_group::suspend_join(detail::sync_waiter* w, std::coroutine_handle<> h) {
  detail::bind_waiter(w, h, "cowq::task_group::join");
  std::lock_guard g(m_);
  if (live_ == 0) return false;
  if (joiner_ != nullptr) throw std::logic_error("cowq::task_group::join: another join is waiting");
  joiner_ = w;
  return true;
}

void task_group::rethrow_first() {
  std::exception_ptr e;
  {
    std::lock_guard g(m_);
    e = std::exchange(first_, nullptr);
  }
  if (e) std::rethrow_exception(e);
}

}  // namespace cowq
