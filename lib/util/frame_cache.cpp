// A per-thread cache of coroutine frames.
//
// Spawning many short coroutines allocates and frees a frame each; glibc's
// per-thread cache holds only 7 blocks per size, so a burst of thousands
// goes through the allocator's slow path. Frames are kept here per size
// class instead, on the thread that freed them, up to a bound, and handed
// back on the next allocation of that class. A frame freed on another
// thread than the one that allocated it simply joins that thread's cache.
//
// Under AddressSanitizer or ThreadSanitizer the cache is bypassed, so
// that their allocators see every frame's lifetime.
#include <cowq/task.hpp>

#include <cstdlib>
#include <new>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define COWQ_FRAME_CACHE 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define COWQ_FRAME_CACHE 0
#endif
#endif
#ifndef COWQ_FRAME_CACHE
#define COWQ_FRAME_CACHE 1
#endif

namespace cowq::detail {

#if COWQ_FRAME_CACHE
namespace {

// Frames up to 1 KiB, in 64-byte classes; larger ones go to the allocator.
constexpr std::size_t kGranule = 64;
constexpr std::size_t kClasses = 16;
// What one thread may keep, all classes together: enough for a burst of
// ten thousand small coroutines, small beside a thread's stack.
constexpr std::size_t kMaxCachedBytes = 2 << 20;

struct free_block {
  free_block* next;
};

// Trivially destructible, so reaching it is one %fs-relative load: a
// thread_local with a destructor also needs its registration guard, a
// global-dynamic TLS variable read through __tls_get_addr on every access.
struct cache {
  free_block* head[kClasses];
  std::size_t bytes;
};

[[gnu::tls_model("initial-exec")]] thread_local cache t_cache;

// Returns the cached blocks when the thread exits. Touched only when a
// thread first caches a block, so its guard is off the hot path.
struct cache_owner {
  bool armed = false;
  ~cache_owner() {
    for (std::size_t c = 0; c < kClasses; ++c)
      while (free_block* b = t_cache.head[c]) {
        t_cache.head[c] = b->next;
        std::free(b);
      }
    t_cache.bytes = 0;
  }
};

void arm_cache_owner() {
  static thread_local cache_owner owner;
  owner.armed = true;
}

inline std::size_t class_of(std::size_t size) noexcept { return (size - 1) / kGranule; }

}  // namespace

void* frame_alloc(std::size_t size) {
  const std::size_t c = class_of(size);
  if (c < kClasses) {
    cache& k = t_cache;
    if (free_block* b = k.head[c]) {
      k.head[c] = b->next;
      k.bytes -= (c + 1) * kGranule;
      return b;
    }
    if (void* p = std::malloc((c + 1) * kGranule)) return p;
    throw std::bad_alloc();
  }
  if (void* p = std::malloc(size)) return p;
  throw std::bad_alloc();
}

void frame_free(void* p, std::size_t size) noexcept {
  const std::size_t c = class_of(size);
  if (c < kClasses) {
    cache& k = t_cache;
    if (k.bytes < kMaxCachedBytes) {
      if (k.bytes == 0) arm_cache_owner();
      auto* b = static_cast<free_block*>(p);
      b->next = k.head[c];
      k.head[c] = b;
      k.bytes += (c + 1) * kGranule;
      return;
    }
  }
  std::free(p);
}
#else
void* frame_alloc(std::size_t size) { return ::operator new(size); }
void frame_free(void* p, std::size_t) noexcept { ::operator delete(p); }
#endif

}  // namespace cowq::detail
