#include "ring.hpp"

#include "../log/log.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sys/eventfd.h>
#include <sys/utsname.h>
#include <system_error>
#include <unistd.h>

namespace cowq::detail {

namespace {

std::string read_first_line(const char* path) {
  std::ifstream f(path);
  std::string s;
  std::getline(f, s);
  return s;
}

[[noreturn]] void refuse(int err) {
  std::string why;
  switch (err) {
    case ENOSYS:
      why = "this kernel has no io_uring (ENOSYS): cowq needs Linux 5.10 or newer built with CONFIG_IO_URING";
      break;
    case EPERM:
    case EACCES: {
      const std::string disabled = read_first_line("/proc/sys/kernel/io_uring_disabled");
      why = "io_uring is not permitted (" + std::string(err == EPERM ? "EPERM" : "EACCES") + "): ";
      if (disabled == "2")
        why += "kernel.io_uring_disabled=2 disables it for everyone; set it to 0 (sysctl -w kernel.io_uring_disabled=0)";
      else if (disabled == "1")
        why += "kernel.io_uring_disabled=1 allows it only to the group in kernel.io_uring_group; add this user to it or set the sysctl to 0";
      else
        why += "a seccomp filter (container runtimes such as Docker block io_uring_setup by default) refuses it; allow io_uring_setup, io_uring_enter and io_uring_register in the seccomp profile";
      break;
    }
    case ENOMEM:
      why = "cannot set up an io_uring (ENOMEM): raise RLIMIT_MEMLOCK (ulimit -l) or reduce the number of CPUs the runtime uses";
      break;
    case EMFILE:
    case ENFILE:
      why = "cannot set up an io_uring: out of file descriptors; raise RLIMIT_NOFILE";
      break;
    default:
      why = "cannot set up an io_uring: " + std::string(std::strerror(err));
  }
  throw std::system_error(err, std::generic_category(), "cowq: " + why);
}

bool kernel_at_least(int major, int minor) {
  utsname u{};
  if (::uname(&u) != 0) return false;
  int ma = 0, mi = 0;
  if (std::sscanf(u.release, "%d.%d", &ma, &mi) != 2) return false;
  return ma > major || (ma == major && mi >= minor);
}

ring_features g_features;
std::once_flag g_probe_once;

void probe(const io_uring& r) {
  g_features.ext_arg = (r.features & IORING_FEAT_EXT_ARG) != 0;
  g_features.nodrop = (r.features & IORING_FEAT_NODROP) != 0;
  io_uring_probe* p = io_uring_get_probe_ring(const_cast<io_uring*>(&r));
  const bool has_socket = p != nullptr && io_uring_opcode_supported(p, IORING_OP_SOCKET);
  // Multishot accept and cancel-any arrived with IORING_OP_SOCKET in 5.19;
  // opcode probing cannot see flags, so the opcode of the same release
  // stands in for them, checked against the version as well.
  g_features.op_socket = has_socket;
  g_features.multishot_accept = has_socket && kernel_at_least(5, 19);
  g_features.async_cancel_any = has_socket && kernel_at_least(5, 19);
  g_features.buf_ring = has_socket && kernel_at_least(5, 19);
  // Multishot receive (a flag) came in 6.0, as did IORING_OP_SEND_ZC: the
  // opcode stands in for the flag.
  g_features.multishot_recv = g_features.buf_ring && p != nullptr &&
                              io_uring_opcode_supported(p, IORING_OP_SEND_ZC) && kernel_at_least(6, 0);
  if (p != nullptr) io_uring_free_probe(p);
}

}  // namespace

std::string ring_features::describe() const {
  std::string s;
  auto add = [&](bool on, const char* name) {
    s += std::string(s.empty() ? "" : " ") + (on ? "+" : "-") + name;
  };
  add(ext_arg, "ext_arg");
  add(nodrop, "nodrop");
  add(coop_taskrun, "coop_taskrun");
  add(multishot_accept, "multishot_accept");
  add(async_cancel_any, "cancel_any");
  add(buf_ring, "buf_ring");
  add(multishot_recv, "multishot_recv");
  return s;
}

const ring_features& ring::features() { return g_features; }

ring::ring(unsigned entries) {
  io_uring_params params{};
  // Completions are plentiful (a CQE per op, more for multishot), so the CQ
  // is larger than the SQ; the kernel keeps any overflow (NODROP).
  params.flags = IORING_SETUP_CQSIZE | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
  params.cq_entries = entries * 8;
  int rc = io_uring_queue_init_params(entries, &ring_, &params);
  bool coop = rc == 0;
  if (rc == -EINVAL) {
    // Older kernels: no cooperative task running.
    params = io_uring_params{};
    params.flags = IORING_SETUP_CQSIZE;
    params.cq_entries = entries * 8;
    rc = io_uring_queue_init_params(entries, &ring_, &params);
  }
  if (rc < 0) refuse(-rc);
  event_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (event_fd_ < 0) {
    const int err = errno;
    io_uring_queue_exit(&ring_);
    refuse(err);
  }
  std::call_once(g_probe_once, [&] {
    probe(ring_);
    g_features.coop_taskrun = coop;
    if (!g_features.ext_arg)
      log().warn("io_uring without IORING_FEAT_EXT_ARG: timed waits use a timeout request");
    log().info("io_uring features: {}", g_features.describe());
    // What the kernel lacks costs something; say what, once.
    if (!g_features.coop_taskrun)
      log().info("io_uring: no IORING_SETUP_COOP_TASKRUN (Linux < 5.19); completions "
                 "interrupt workers with task work");
    if (!g_features.multishot_accept)
      log().info("io_uring: no multishot accept (Linux < 5.19); each accept is a request "
                 "of its own");
    if (!g_features.buf_ring)
      log().info("io_uring: no provided buffer rings (Linux < 5.19); a receiver receives "
                 "into a buffer of its own per recv");
    else if (!g_features.multishot_recv)
      log().info("io_uring: no multishot receive (Linux < 6.0); a receiver makes a request "
                 "per recv");
    if (!g_features.async_cancel_any)
      log().info("io_uring: no IORING_ASYNC_CANCEL_ANY (Linux < 5.19); requests still "
                 "in flight at shutdown cannot be cancelled");
    if (!g_features.nodrop)
      log().warn("io_uring without IORING_FEAT_NODROP (Linux < 5.5): a completion "
                 "queue overflow would lose completions");
  });
}

ring::~ring() {
  if (event_fd_ >= 0) ::close(event_fd_);
  io_uring_queue_exit(&ring_);
}

io_uring_sqe* ring::sqe_locked(unsigned need) {
  for (int attempt = 0;; ++attempt) {
    if (io_uring_sq_space_left(&ring_) >= need) {
      unsubmitted_.store(true, std::memory_order_relaxed);
      return io_uring_get_sqe(&ring_);
    }
    // Full: hand what is queued to the kernel and try again.
    const int rc = io_uring_submit(&ring_);
    if (rc == -EBUSY || rc == -EAGAIN) {
      // The kernel holds completions back; let it flush them.
      io_uring_get_events(&ring_);
      if (attempt > 1000) return nullptr;
    } else if (rc < 0) {
      log().error("io_uring_submit failed: {}", std::strerror(-rc));
      return nullptr;
    }
  }
}

int ring::submit_locked() {
  unsubmitted_.store(false, std::memory_order_relaxed);
  for (;;) {
    const int rc = io_uring_submit(&ring_);
    if (rc >= 0 || rc != -EINTR) {
      if (rc == -EBUSY || rc == -EAGAIN) {
        io_uring_get_events(&ring_);
        continue;
      }
      if (rc < 0) log().error("io_uring_submit failed: {}", std::strerror(-rc));
      return rc;
    }
  }
}

void ring::submit() {
  if (!has_unsubmitted()) return;
  std::lock_guard g(sq_lock_);
  if (has_unsubmitted()) submit_locked();
}

void ring::flush_overflow() { io_uring_get_events(&ring_); }

void ring::wait(const __kernel_timespec* timeout) {
  const wait_hook hook = wait_hook_.load(std::memory_order_acquire);
  if (hook != nullptr) [[unlikely]] hook(wait_hook_arg_, false);
  unsigned to_submit = 0;
  {
    std::lock_guard g(sq_lock_);
    if (!efd_armed_.load(std::memory_order_relaxed)) {
      io_uring_sqe* sqe = sqe_locked();
      if (sqe != nullptr) {
        io_uring_prep_read(sqe, event_fd_, &efd_value_, sizeof efd_value_, 0);
        io_uring_sqe_set_data64(sqe, kUdEventFd);
        efd_armed_.store(true, std::memory_order_relaxed);
      }
    }
    if (!g_features.ext_arg && timeout != nullptr) {
      // No timed wait: a timeout request ends the sleep instead.
      if (io_uring_sqe* sqe = sqe_locked()) {
        io_uring_prep_timeout(sqe, const_cast<__kernel_timespec*>(timeout), 1, 0);
        io_uring_sqe_set_data64(sqe, kUdIgnore);
      }
    }
    // What is prepared goes in with the sleep itself, one system call for
    // both; published here, under the lock, entered below without it.
    if (has_unsubmitted()) to_submit = flush_locked();
  }
  if (hook != nullptr) [[unlikely]] hook(wait_hook_arg_, true);
  // A bare io_uring_enter: liburing's wait helpers peek at the CQ head,
  // which the worker reaping under the pool lock may be advancing at the
  // same moment. The kernel returns at once if completions are waiting.
  //
  // Another thread may enter the published entries first (its count,
  // tail - head, includes them): the kernel then submits fewer than asked
  // and returns without sleeping, and the poller simply comes round again.
  // An entry the kernel refused to take stays in the SQ and is counted by
  // whoever enters next, as with io_uring_submit().
  if (timeout != nullptr && g_features.ext_arg) {
    io_uring_getevents_arg arg{};
    arg.ts = reinterpret_cast<std::uint64_t>(timeout);
    io_uring_enter2(static_cast<unsigned>(ring_.ring_fd), to_submit, 1,
                    IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG,
                    reinterpret_cast<sigset_t*>(&arg), sizeof arg);
  } else {
    io_uring_enter(static_cast<unsigned>(ring_.ring_fd), to_submit, 1, IORING_ENTER_GETEVENTS,
                   nullptr);
  }
}

unsigned ring::flush_locked() noexcept {
  unsubmitted_.store(false, std::memory_order_relaxed);
  io_uring_sq& sq = ring_.sq;
  const unsigned tail = sq.sqe_tail;
  if (sq.sqe_head != tail) {
    sq.sqe_head = tail;
    // Release: the SQEs written before are visible to the kernel, which
    // reads the tail with an acquire load.
    io_uring_smp_store_release(sq.ktail, tail);
  }
  // Acquire pairs with the kernel's release store of the head as it
  // consumes entries.
  return tail - io_uring_smp_load_acquire(sq.khead);
}

void ring::wake() noexcept {
  const std::uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(event_fd_, &one, sizeof one);
}

void ring::post_nop() {
  std::lock_guard g(sq_lock_);
  if (io_uring_sqe* sqe = sqe_locked()) {
    io_uring_prep_nop(sqe);
    io_uring_sqe_set_data64(sqe, kUdIgnore);
  }
  submit_locked();
}

}  // namespace cowq::detail
