// Waiting between coroutines: semaphore, mutex, event and a bounded channel.
//
// A coroutine that has to wait suspends; its worker goes on with other
// items. The waiter lives in the awaiting coroutine's frame (waiting
// allocates nothing) and joins the primitive's queue; whoever lets it go
// queues the coroutine back as a work item of the pool and workqueue it
// waited on, as an I/O completion does. Waiters are served in the order
// they came.
//
// Await them from coroutines running on cowq workers (std::logic_error
// otherwise). Releasing, setting, sending and closing work from any thread.
// Every wait takes an optional std::stop_token: a stop requested while the
// coroutine waits takes it off the queue and resumes it with the "stopped"
// result (false, an empty guard or std::nullopt), having taken nothing; a
// stop racing a release resumes it exactly once, one way or the other.
// A primitive must outlive the coroutines waiting on it. A coroutine
// destroyed while it waits leaves its queue; one destroyed after it was let
// go but before it resumed leaves a resumption pointing at freed memory,
// as it would with I/O in flight.
#pragma once

#include <cowq/scheduling.hpp>
#include <cowq/task.hpp>
#include <cowq/work_node.hpp>

#include <atomic>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <stop_token>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <vector>

namespace cowq {
namespace detail {

// Queues a waiter bound by bind_to_current() back on its pool, from any
// thread. After the runtime has stopped its pools the coroutine cannot
// resume; that is logged once.
void wake_waiter(work_node* n) noexcept;

class waiter_list;

// A suspended coroutine queued on a primitive. Every field belongs to the
// primitive's lock while the waiter is queued; the coroutine reads them
// once it has been resumed (the pool lock its resumption went through
// orders that).
struct sync_waiter : resume_node {
  // Who resumes a queued waiter: a release (or close, set, hand-off) and a
  // stop request race for it with one compare-exchange from kQueued, so
  // exactly one of them does, and a stop request that loses never touches
  // the primitive (which may be gone by then). kIdle while not queued: a
  // stop request then leaves it alone, and the waiter sees the stop under
  // the primitive's lock before it would queue.
  enum : std::uint8_t { kIdle, kQueued, kReleased, kStopped };
  std::atomic<std::uint8_t> claim_{kIdle};
  sync_waiter* next_waiter_ = nullptr;
  sync_waiter* prev_waiter_ = nullptr;
  waiter_list* list_ = nullptr;  // the list it is on; null once taken off
  bool stopped_ = false;         // resumed by a stop request
};

// First in, first out; guarded by the owning primitive's lock.
class waiter_list {
 public:
  waiter_list() noexcept = default;
  waiter_list(const waiter_list&) = delete;
  waiter_list& operator=(const waiter_list&) = delete;
  bool empty() const noexcept { return head_ == nullptr; }
  void push(sync_waiter* w) noexcept {
    w->claim_.store(sync_waiter::kQueued, std::memory_order_relaxed);
    w->next_waiter_ = nullptr;
    w->prev_waiter_ = tail_;
    w->list_ = this;
    if (tail_ != nullptr)
      tail_->next_waiter_ = w;
    else
      head_ = w;
    tail_ = w;
  }
  // The longest waiter, claimed for release; waiters a stop request has
  // claimed are taken off and left to it.
  sync_waiter* pop() noexcept {
    while (sync_waiter* w = head_) {
      remove(w);
      std::uint8_t expect = sync_waiter::kQueued;
      // acq_rel pairs with the canceller's compare-exchange.
      if (w->claim_.compare_exchange_strong(expect, sync_waiter::kReleased,
                                            std::memory_order_acq_rel))
        return w;
    }
    return nullptr;
  }
  void remove(sync_waiter* w) noexcept {
    (w->prev_waiter_ != nullptr ? w->prev_waiter_->next_waiter_ : head_) = w->next_waiter_;
    (w->next_waiter_ != nullptr ? w->next_waiter_->prev_waiter_ : tail_) = w->prev_waiter_;
    w->next_waiter_ = w->prev_waiter_ = nullptr;
    w->list_ = nullptr;
  }
  // Takes every waiter off, under the lock, as a chain for wake_chain():
  // a stop request that comes now finds them taken already.
  sync_waiter* take_all() noexcept {
    sync_waiter* chain = nullptr;
    sync_waiter* last = nullptr;
    while (sync_waiter* w = pop()) {
      (last != nullptr ? last->next_waiter_ : chain) = w;
      last = w;
    }
    return chain;
  }

 private:
  sync_waiter* head_ = nullptr;
  sync_waiter* tail_ = nullptr;
};

// Wakes a chain of waiters taken off their list, outside the lock. The next
// pointer is read before each wake: a woken coroutine may run, and free
// its waiter, at once.
inline void wake_chain(sync_waiter* w) noexcept {
  while (w != nullptr) {
    sync_waiter* next = w->next_waiter_;
    wake_waiter(w);
    w = next;
  }
}

// Takes a waiter off its queue when a stop is requested. It races the
// releases for the waiter's claim_; only the winner resumes it, and a
// canceller that loses does not touch the primitive (or its lock m).
struct waiter_canceller {
  std::mutex* m;
  sync_waiter* w;
  void operator()() const noexcept {
    std::uint8_t expect = sync_waiter::kQueued;
    // acq_rel pairs with the compare-exchange in waiter_list::pop(). Lost:
    // a release has it, and the primitive must not be touched again.
    if (!w->claim_.compare_exchange_strong(expect, sync_waiter::kStopped,
                                           std::memory_order_acq_rel))
      return;
    {
      std::lock_guard g(*m);
      // A release may have taken it off (and skipped it) meanwhile.
      if (w->list_ != nullptr) w->list_->remove(w);
      w->stopped_ = true;
    }
    wake_waiter(w);
  }
};

// The part of every awaiter that a stop token reaches. The callback is
// registered before the waiter is queued (registering after would touch a
// frame that may already run elsewhere) and unregistered on resuming,
// which waits for a callback running on another thread to finish.
struct stop_hook {
  std::stop_token stop_;
  std::optional<std::stop_callback<waiter_canceller>> cb_{};

  void arm(std::mutex* m, sync_waiter* w) {
    if (stop_.stop_possible()) cb_.emplace(stop_, waiter_canceller{m, w});
  }
  // Under m, before queueing: a stop requested already means no wait.
  bool stop_requested() const noexcept { return stop_.stop_requested(); }
  void disarm() noexcept { cb_.reset(); }
};

// For the awaiters' destructors: a coroutine destroyed while it waits
// takes its waiter off the queue.
inline void abandon_wait(std::mutex& m, sync_waiter& w, stop_hook& hook) noexcept {
  hook.disarm();
  std::lock_guard g(m);
  if (w.list_ != nullptr) w.list_->remove(&w);
}
// Resumed: the waiter is nobody's but the coroutine's again.
inline void end_wait(sync_waiter& w, stop_hook& hook) noexcept {
  hook.disarm();
  w.claim_.store(sync_waiter::kIdle, std::memory_order_relaxed);
}

// Binds w to the running item before it is published anywhere: a throw
// here leaves nothing queued.
void bind_waiter(sync_waiter* w, std::coroutine_handle<> h, const char* what);

}  // namespace detail

// A counting semaphore.
class semaphore {
 public:
  explicit semaphore(std::size_t permits = 0) noexcept : count_(permits) {}
  semaphore(const semaphore&) = delete;
  semaphore& operator=(const semaphore&) = delete;

  // co_await sem.acquire(): takes a permit, waiting for one if none is
  // free. True when it took one; false when stop was requested first.
  auto acquire(std::stop_token stop = {}) noexcept {
    return acquire_awaiter{this, {}, {std::move(stop)}};
  }
  bool try_acquire() noexcept;
  // Gives n permits back; each goes straight to the longest waiter, if any.
  void release(std::size_t n = 1) noexcept;
  // Permits free now (a snapshot).
  std::size_t available() const noexcept;

 private:
  friend class mutex;
  // release(1), unless that would make more than `limit` permits free.
  bool release_up_to(std::size_t limit) noexcept;

 private:
  struct acquire_awaiter {
    semaphore* sem_;
    detail::sync_waiter waiter_;
    detail::stop_hook hook_;
    bool await_ready() noexcept { return sem_->try_acquire(); }
    bool await_suspend(std::coroutine_handle<> h) {
      return sem_->suspend_acquire(&waiter_, &hook_, h);
    }
    bool await_resume() noexcept {
      detail::end_wait(waiter_, hook_);
      return !waiter_.stopped_;
    }
    ~acquire_awaiter() {
      if (waiter_.claim_.load(std::memory_order_relaxed) != detail::sync_waiter::kIdle)
        detail::abandon_wait(sem_->m_, waiter_, hook_);
    }
  };
  bool suspend_acquire(detail::sync_waiter* w, detail::stop_hook* hook, std::coroutine_handle<> h);

  mutable std::mutex m_;
  std::size_t count_;            // m_
  detail::waiter_list waiters_;  // m_; non-empty only while count_ is 0
};

class mutex;

// Holds a cowq::mutex; unlocks it when destroyed.
class [[nodiscard]] mutex_guard {
 public:
  explicit mutex_guard(mutex* m) noexcept : m_(m) {}
  mutex_guard(mutex_guard&& o) noexcept : m_(std::exchange(o.m_, nullptr)) {}
  mutex_guard& operator=(mutex_guard&& o) noexcept;
  ~mutex_guard();
  // Unlocks now rather than at the end of the scope.
  void unlock() noexcept;
  // False for the guard of a scoped_lock() that was stopped.
  bool owns_lock() const noexcept { return m_ != nullptr; }
  explicit operator bool() const noexcept { return owns_lock(); }

 private:
  mutex* m_;
};

// A mutex for coroutines: waiting for it suspends the coroutine, never the
// worker, so it may be held across co_await. Not recursive. Handed over in
// arrival order: unlock() gives it straight to the longest waiter.
class mutex {
 public:
  mutex() noexcept = default;

  // co_await m.lock(); ... m.unlock(); false (not locked) when stopped.
  auto lock(std::stop_token stop = {}) noexcept { return sem_.acquire(std::move(stop)); }
  // auto g = co_await m.scoped_lock(); unlocks when g goes out of scope.
  // Stopped, the guard owns nothing.
  [[nodiscard]] auto scoped_lock(std::stop_token stop = {}) noexcept {
    struct awaiter {
      decltype(std::declval<semaphore&>().acquire()) inner_;
      mutex* m_;
      bool await_ready() noexcept { return inner_.await_ready(); }
      bool await_suspend(std::coroutine_handle<> h) { return inner_.await_suspend(h); }
      mutex_guard await_resume() noexcept {
        return mutex_guard(inner_.await_resume() ? m_ : nullptr);
      }
    };
    return awaiter{sem_.acquire(std::move(stop)), this};
  }
  bool try_lock() noexcept { return sem_.try_acquire(); }
  // Unlocking a mutex nobody holds (say after a lock() that a stop
  // refused) would let two in at once: it terminates instead.
  void unlock() noexcept;

 private:
  semaphore sem_{1};
};

inline mutex_guard& mutex_guard::operator=(mutex_guard&& o) noexcept {
  if (this != &o) {
    unlock();
    m_ = std::exchange(o.m_, nullptr);
  }
  return *this;
}
inline mutex_guard::~mutex_guard() { unlock(); }
inline void mutex_guard::unlock() noexcept {
  if (m_ != nullptr) std::exchange(m_, nullptr)->unlock();
}

// A manual-reset event: set() lets every waiter go, and wait() returns at
// once until reset().
class event {
 public:
  explicit event(bool set = false) noexcept : set_(set) {}
  event(const event&) = delete;
  event& operator=(const event&) = delete;

  // True once set; false when stop was requested first.
  auto wait(std::stop_token stop = {}) noexcept { return wait_awaiter{this, {}, {std::move(stop)}}; }
  void set() noexcept;
  void reset() noexcept;
  bool is_set() const noexcept;

 private:
  struct wait_awaiter {
    event* ev_;
    detail::sync_waiter waiter_;
    detail::stop_hook hook_;
    bool await_ready() const noexcept { return ev_->is_set(); }
    bool await_suspend(std::coroutine_handle<> h) { return ev_->suspend_wait(&waiter_, &hook_, h); }
    bool await_resume() noexcept {
      detail::end_wait(waiter_, hook_);
      return !waiter_.stopped_;
    }
    ~wait_awaiter() {
      if (waiter_.claim_.load(std::memory_order_relaxed) != detail::sync_waiter::kIdle)
        detail::abandon_wait(ev_->m_, waiter_, hook_);
    }
  };
  bool suspend_wait(detail::sync_waiter* w, detail::stop_hook* hook, std::coroutine_handle<> h);

  mutable std::mutex m_;
  bool set_;                     // m_
  detail::waiter_list waiters_;  // m_; empty while set_
};

// A bounded multi-producer, multi-consumer channel of T.
//
//   cowq::channel<int> ch(64);
//   bool ok = co_await ch.send(42);        // false once closed (or stopped)
//   std::optional<int> v = co_await ch.recv();  // nullopt once closed and empty (or stopped)
//
// send() waits while the channel holds `capacity` values; recv() waits
// while it is empty. A value handed to a waiting receiver skips the
// buffer. close() wakes everyone: waiting senders get false (their value
// is dropped) and receivers get what is still buffered, then nullopt.
template <typename T>
class channel {
  static_assert(std::is_nothrow_move_constructible_v<T>,
                "cowq::channel moves values while it holds its lock");

 public:
  explicit channel(std::size_t capacity) : buf_(capacity) {
    if (capacity == 0) throw std::invalid_argument("cowq::channel: capacity must be at least 1");
  }
  channel(const channel&) = delete;
  channel& operator=(const channel&) = delete;

  // A send that is refused or stopped drops its value.
  auto send(T value, std::stop_token stop = {}) noexcept {
    return send_awaiter{this, send_waiter(std::move(value)), {std::move(stop)}};
  }
  [[nodiscard]] auto recv(std::stop_token stop = {}) noexcept {
    return recv_awaiter{this, {}, {std::move(stop)}};
  }
  // Without waiting, from any thread: sends v if a receiver waits or the
  // buffer has room, and only then moves from it; false when full or closed.
  bool try_send(T&& v) noexcept {
    recv_waiter* to_wake = nullptr;
    {
      std::lock_guard g(m_);
      if (closed_) return false;
      if (detail::sync_waiter* r = receivers_.pop()) {
        to_wake = static_cast<recv_waiter*>(r);
        to_wake->value_.emplace(std::move(v));
      } else if (count_ < buf_.size()) {
        buf_[(head_ + count_) % buf_.size()].emplace(std::move(v));
        ++count_;
      } else {
        return false;
      }
    }
    if (to_wake != nullptr) detail::wake_waiter(to_wake);
    return true;
  }
  // Without waiting, from any thread: the oldest value, or nullopt when the
  // buffer is empty.
  std::optional<T> try_recv() noexcept {
    std::optional<T> out;
    send_waiter* to_wake = nullptr;
    {
      std::lock_guard g(m_);
      if (count_ == 0) return out;
      take_front(out);
      to_wake = refill_from_sender();
    }
    if (to_wake != nullptr) detail::wake_waiter(to_wake);
    return out;
  }
  // Refuses further sends and wakes every waiter. Idempotent.
  void close() noexcept {
    detail::sync_waiter* senders;
    detail::sync_waiter* receivers;
    {
      std::lock_guard g(m_);
      if (closed_) return;
      closed_ = true;
      senders = senders_.take_all();
      receivers = receivers_.take_all();
    }
    detail::wake_chain(senders);
    detail::wake_chain(receivers);
  }
  bool closed() const noexcept {
    std::lock_guard g(m_);
    return closed_;
  }
  // Values buffered now (a snapshot).
  std::size_t size() const noexcept {
    std::lock_guard g(m_);
    return count_;
  }
  std::size_t capacity() const noexcept { return buf_.size(); }

 private:
  struct send_waiter : detail::sync_waiter {
    explicit send_waiter(T&& v) noexcept : value_(std::move(v)) {}
    T value_;
    bool sent_ = false;
  };
  struct recv_waiter : detail::sync_waiter {
    std::optional<T> value_;
  };

  struct send_awaiter {
    channel* ch_;
    send_waiter waiter_;
    detail::stop_hook hook_;
    bool await_ready() const noexcept { return false; }
    bool await_suspend(std::coroutine_handle<> h) { return ch_->suspend_send(&waiter_, &hook_, h); }
    bool await_resume() noexcept {
      detail::end_wait(waiter_, hook_);
      return waiter_.sent_;
    }
    ~send_awaiter() {
      if (waiter_.claim_.load(std::memory_order_relaxed) != detail::sync_waiter::kIdle)
        detail::abandon_wait(ch_->m_, waiter_, hook_);
    }
  };
  struct recv_awaiter {
    channel* ch_;
    recv_waiter waiter_;
    detail::stop_hook hook_;
    bool await_ready() const noexcept { return false; }
    bool await_suspend(std::coroutine_handle<> h) { return ch_->suspend_recv(&waiter_, &hook_, h); }
    std::optional<T> await_resume() noexcept {
      detail::end_wait(waiter_, hook_);
      return std::move(waiter_.value_);
    }
    ~recv_awaiter() {
      if (waiter_.claim_.load(std::memory_order_relaxed) != detail::sync_waiter::kIdle)
        detail::abandon_wait(ch_->m_, waiter_, hook_);
    }
  };

  // Returns true when w must wait. Whoever a value goes to is woken after
  // the lock is dropped.
  bool suspend_send(send_waiter* w, detail::stop_hook* hook, std::coroutine_handle<> h) {
    detail::bind_waiter(w, h, "cowq::channel::send");
    hook->arm(&m_, w);
    recv_waiter* to_wake = nullptr;
    {
      std::lock_guard g(m_);
      if (closed_) return false;
      if (detail::sync_waiter* r = receivers_.pop()) {
        // A receiver waits only on an empty buffer: hand the value over.
        to_wake = static_cast<recv_waiter*>(r);
        to_wake->value_.emplace(std::move(w->value_));
      } else if (count_ < buf_.size()) {
        buf_[(head_ + count_) % buf_.size()].emplace(std::move(w->value_));
        ++count_;
      } else if (hook->stop_requested()) {
        return false;
      } else {
        senders_.push(w);
        return true;
      }
      w->sent_ = true;
    }
    if (to_wake != nullptr) detail::wake_waiter(to_wake);
    return false;
  }

  bool suspend_recv(recv_waiter* w, detail::stop_hook* hook, std::coroutine_handle<> h) {
    detail::bind_waiter(w, h, "cowq::channel::recv");
    hook->arm(&m_, w);
    send_waiter* to_wake = nullptr;
    {
      std::lock_guard g(m_);
      if (count_ == 0) {
        // Senders wait only on a full buffer, so none waits here.
        if (closed_ || hook->stop_requested()) return false;
        receivers_.push(w);
        return true;
      }
      take_front(w->value_);
      to_wake = refill_from_sender();
    }
    if (to_wake != nullptr) detail::wake_waiter(to_wake);
    return false;
  }

  // m_ held, count_ > 0.
  void take_front(std::optional<T>& out) noexcept {
    std::optional<T>& front = buf_[head_];
    out.emplace(std::move(*front));
    front.reset();
    head_ = (head_ + 1) % buf_.size();
    --count_;
  }
  // m_ held, just after take_front(): the room made goes to the longest
  // waiting sender, returned for waking once the lock is dropped.
  send_waiter* refill_from_sender() noexcept {
    detail::sync_waiter* s = senders_.pop();
    if (s == nullptr) return nullptr;
    auto* w = static_cast<send_waiter*>(s);
    buf_[(head_ + count_) % buf_.size()].emplace(std::move(w->value_));
    ++count_;
    w->sent_ = true;
    return w;
  }

  mutable std::mutex m_;
  std::vector<std::optional<T>> buf_;  // a ring: count_ values from head_; m_
  std::size_t head_ = 0;               // m_
  std::size_t count_ = 0;              // m_
  bool closed_ = false;                // m_
  detail::waiter_list senders_;        // m_; non-empty only while the buffer is full
  detail::waiter_list receivers_;      // m_; non-empty only while the buffer is empty
};

}  // namespace cowq
