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
// A primitive must outlive the coroutines waiting on it.
#pragma once

#include <cowq/task.hpp>
#include <cowq/work_node.hpp>

#include <coroutine>
#include <cstddef>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <vector>

namespace cowq {
namespace detail {

// Records in n where the current item runs (its pool and workqueue), so it
// can be queued back there later from any thread. False off a worker.
bool bind_to_current(work_node* n) noexcept;
// Queues a waiter bound by bind_to_current() back on its pool, from any
// thread. After the runtime has stopped its pools the coroutine cannot
// resume; that is logged once.
void wake_waiter(work_node* n) noexcept;

// A suspended coroutine queued on a primitive.
struct sync_waiter : resume_node {
  sync_waiter* next_waiter_ = nullptr;  // the primitive's lock
};

// First in, first out; guarded by the owning primitive's lock.
class waiter_list {
 public:
  bool empty() const noexcept { return head_ == nullptr; }
  void push(sync_waiter* w) noexcept {
    w->next_waiter_ = nullptr;
    if (tail_ != nullptr)
      tail_->next_waiter_ = w;
    else
      head_ = w;
    tail_ = w;
  }
  sync_waiter* pop() noexcept {
    sync_waiter* w = head_;
    if (w != nullptr) {
      head_ = w->next_waiter_;
      if (head_ == nullptr) tail_ = nullptr;
    }
    return w;
  }
  // Wakes every waiter of the list, outside any lock. The next pointer is
  // read before each wake: a woken coroutine may run, and free its waiter,
  // at once.
  void wake_all() noexcept {
    while (sync_waiter* w = pop()) wake_waiter(w);
  }

 private:
  sync_waiter* head_ = nullptr;
  sync_waiter* tail_ = nullptr;
};

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

  // co_await sem.acquire(): takes a permit, waiting for one if none is free.
  [[nodiscard]] auto acquire() noexcept { return acquire_awaiter{this, {}}; }
  bool try_acquire() noexcept;
  // Gives n permits back; each goes straight to the longest waiter, if any.
  void release(std::size_t n = 1) noexcept;
  // Permits free now (a snapshot).
  std::size_t available() const noexcept;

 private:
  struct acquire_awaiter {
    semaphore* sem_;
    detail::sync_waiter waiter_;
    bool await_ready() noexcept { return sem_->try_acquire(); }
    bool await_suspend(std::coroutine_handle<> h) { return sem_->suspend_acquire(&waiter_, h); }
    void await_resume() const noexcept {}
  };
  bool suspend_acquire(detail::sync_waiter* w, std::coroutine_handle<> h);

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

 private:
  mutex* m_;
};

// A mutex for coroutines: waiting for it suspends the coroutine, never the
// worker, so it may be held across co_await. Not recursive. Handed over in
// arrival order: unlock() gives it straight to the longest waiter.
class mutex {
 public:
  mutex() noexcept = default;

  // co_await m.lock(); ... m.unlock();
  [[nodiscard]] auto lock() noexcept { return sem_.acquire(); }
  // auto g = co_await m.scoped_lock(); unlocks when g goes out of scope.
  [[nodiscard]] auto scoped_lock() noexcept {
    struct awaiter {
      decltype(std::declval<semaphore&>().acquire()) inner_;
      mutex* m_;
      bool await_ready() noexcept { return inner_.await_ready(); }
      bool await_suspend(std::coroutine_handle<> h) { return inner_.await_suspend(h); }
      mutex_guard await_resume() const noexcept { return mutex_guard(m_); }
    };
    return awaiter{sem_.acquire(), this};
  }
  bool try_lock() noexcept { return sem_.try_acquire(); }
  void unlock() noexcept { sem_.release(); }

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

  [[nodiscard]] auto wait() noexcept { return wait_awaiter{this, {}}; }
  void set() noexcept;
  void reset() noexcept;
  bool is_set() const noexcept;

 private:
  struct wait_awaiter {
    event* ev_;
    detail::sync_waiter waiter_;
    bool await_ready() const noexcept { return ev_->is_set(); }
    bool await_suspend(std::coroutine_handle<> h) { return ev_->suspend_wait(&waiter_, h); }
    void await_resume() const noexcept {}
  };
  bool suspend_wait(detail::sync_waiter* w, std::coroutine_handle<> h);

  mutable std::mutex m_;
  bool set_;                     // m_
  detail::waiter_list waiters_;  // m_; empty while set_
};

// A bounded multi-producer, multi-consumer channel of T.
//
//   cowq::channel<int> ch(64);
//   bool ok = co_await ch.send(42);        // false once closed
//   std::optional<int> v = co_await ch.recv();  // nullopt once closed and empty
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

  [[nodiscard]] auto send(T value) noexcept(std::is_nothrow_move_constructible_v<T>) {
    return send_awaiter{this, send_waiter(std::move(value))};
  }
  [[nodiscard]] auto recv() noexcept { return recv_awaiter{this, {}}; }
  // Refuses further sends and wakes every waiter. Idempotent.
  void close() noexcept {
    detail::waiter_list senders, receivers;
    {
      std::lock_guard g(m_);
      if (closed_) return;
      closed_ = true;
      std::swap(senders, senders_);
      std::swap(receivers, receivers_);
    }
    senders.wake_all();
    receivers.wake_all();
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
    bool await_ready() const noexcept { return false; }
    bool await_suspend(std::coroutine_handle<> h) { return ch_->suspend_send(&waiter_, h); }
    bool await_resume() const noexcept { return waiter_.sent_; }
  };
  struct recv_awaiter {
    channel* ch_;
    recv_waiter waiter_;
    bool await_ready() const noexcept { return false; }
    bool await_suspend(std::coroutine_handle<> h) { return ch_->suspend_recv(&waiter_, h); }
    std::optional<T> await_resume() noexcept { return std::move(waiter_.value_); }
  };

  // Returns true when w must wait. Whoever a value goes to is woken after
  // the lock is dropped.
  bool suspend_send(send_waiter* w, std::coroutine_handle<> h) {
    detail::bind_waiter(w, h, "cowq::channel::send");
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
      } else {
        senders_.push(w);
        return true;
      }
      w->sent_ = true;
    }
    if (to_wake != nullptr) detail::wake_waiter(to_wake);
    return false;
  }

  bool suspend_recv(recv_waiter* w, std::coroutine_handle<> h) {
    detail::bind_waiter(w, h, "cowq::channel::recv");
    send_waiter* to_wake = nullptr;
    {
      std::lock_guard g(m_);
      if (count_ == 0) {
        // Senders wait only on a full buffer, so none waits here.
        if (closed_) return false;
        receivers_.push(w);
        return true;
      }
      std::optional<T>& front = buf_[head_];
      w->value_.emplace(std::move(*front));
      front.reset();
      head_ = (head_ + 1) % buf_.size();
      --count_;
      // The room just made goes to the longest waiting sender.
      if (detail::sync_waiter* s = senders_.pop()) {
        to_wake = static_cast<send_waiter*>(s);
        buf_[(head_ + count_) % buf_.size()].emplace(std::move(to_wake->value_));
        ++count_;
        to_wake->sent_ = true;
      }
    }
    if (to_wake != nullptr) detail::wake_waiter(to_wake);
    return false;
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
