// Happens-before edges that ThreadSanitizer cannot see on its own.
#pragma once

#if defined(__SANITIZE_THREAD__)
#define COWQ_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define COWQ_TSAN 1
#endif
#endif

#ifdef COWQ_TSAN
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
#endif

namespace cowq::detail {

// The kernel orders an operation's submission before its completion, and
// the reaping worker may not be the submitting one: release at submit,
// acquire at reap, on the operation object.
inline void tsan_release(void* addr) noexcept {
#ifdef COWQ_TSAN
  __tsan_release(addr);
#else
  (void)addr;
#endif
}
inline void tsan_acquire(void* addr) noexcept {
#ifdef COWQ_TSAN
  __tsan_acquire(addr);
#else
  (void)addr;
#endif
}

}  // namespace cowq::detail
