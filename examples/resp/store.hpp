// The key-value store behind resp_server: binary-safe string keys and
// values in a hash map split into shards, one lock per shard, with
// per-key expiry.
//
// Expiry is checked lazily whenever a key is touched, and a periodic sweep
// (sweep_expired, driven by the server) removes keys nobody touches. Each
// shard keeps its keys that have a deadline in an ordered index by
// deadline, so a sweep visits only keys that are due, and a key that
// loses or changes its deadline leaves the index at once: the index is
// never larger than the shard's keys.
//
// Deadlines are on the steady clock, in milliseconds: a TTL is a duration
// from now, immune to wall-clock steps (unlike Redis, which uses the wall
// clock and supports absolute times).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

namespace resp {

// Milliseconds on the steady clock.
std::int64_t now_ms() noexcept;

// A key with its hash computed once: the hash picks the shard and, inside
// the shard, the bucket.
struct hashed_key {
  std::string_view key;
  std::size_t hash;
  explicit hashed_key(std::string_view k) noexcept;
};

// Thread safety: every member function may be called from any thread.
// Multi-key operations take the locks of every shard they touch, in
// ascending shard order, so each one is atomic as in Redis.
class store {
 public:
  // 256 shards: with a few dozen CPUs two commands meet on one lock rarely,
  // and an empty shard costs about 200 bytes.
  static constexpr std::size_t shard_count = 256;

  enum class set_cond { always, if_absent, if_present };
  // What SET does with the key's deadline.
  enum class set_ttl { clear, keep, set };

  store();
  store(const store&) = delete;
  store& operator=(const store&) = delete;

  // Calls f(std::string_view value) under the shard lock if key exists and
  // is live, and returns whether it did. f must not call into the store.
  template <typename F>
  bool get(const hashed_key& k, F&& f) {
    shard& s = shard_of(k);
    std::lock_guard lock(s.mu);
    entry* e = s.find_live(k, s.lazy_now());
    if (e == nullptr) return false;
    f(std::string_view(e->value));
    return true;
  }

  // SET: false when the condition (NX/XX) was not met and nothing changed.
  // expire_at_ms (steady ms) is used with set_ttl::set.
  bool set(const hashed_key& k, std::string_view value, set_cond cond, set_ttl ttl,
           std::int64_t expire_at_ms);

  // INCRBY: the new value, or why not.
  enum class incr_status { ok, not_integer, overflow };
  incr_status incr_by(const hashed_key& k, std::int64_t delta, std::int64_t& result);

  // Each key counts once per occurrence, as in Redis (EXISTS a a == 2).
  std::size_t del(std::span<const hashed_key> keys);
  std::size_t exists(std::span<const hashed_key> keys);

  // MGET: f(index, value or nullptr) for each key, in order, all under the
  // locks of the keys' shards.
  template <typename F>
  void mget(std::span<const hashed_key> keys, F&& f) {
    multi_lock locks(*this, keys);
    std::int64_t now = 0;
    for (std::size_t i = 0; i < keys.size(); ++i) {
      shard& s = shard_of(keys[i]);
      entry* e = s.find_live(keys[i], s.has_deadlines() ? (now != 0 ? now : now = now_ms()) : 0);
      if (e != nullptr) {
        std::string_view v(e->value);
        f(i, &v);
      } else {
        f(i, static_cast<const std::string_view*>(nullptr));
      }
    }
  }
  // MSET: pairs of key and value; clears their deadlines.
  void mset(std::span<const hashed_key> keys, std::span<const std::string_view> values);

  // Remaining time to live: -2 no such key, -1 no deadline, else ms.
  std::int64_t pttl(const hashed_key& k);
  // Keys held, counting expired ones not yet removed (as Redis's DBSIZE).
  std::size_t size();
  void clear();

  // Removes up to budget due keys per shard; returns how many it removed,
  // and in has_deadlines whether any key with a deadline remains.
  struct sweep_result {
    std::size_t removed = 0;
    bool budget_hit = false;  // some shard had more due keys than budget
    bool has_deadlines = false;
  };
  sweep_result sweep_expired(std::size_t budget_per_shard);

  // The sweeper's hand-over: a SET that gave a key a deadline calls this
  // afterwards; true means no sweep is scheduled and the caller must start
  // one. The sweeper calls sweeper_idle() when it found no deadlines left,
  // and must then re-check (sweep once more): see the comment there.
  bool claim_sweeper() noexcept;
  void sweeper_idle() noexcept;

 private:
  struct entry {
    std::string value;
    std::int64_t expire_at = 0;  // steady ms; 0 = none
  };
  struct hasher {
    using is_transparent = void;
    std::size_t operator()(const std::string& s) const noexcept;
    std::size_t operator()(const hashed_key& k) const noexcept { return k.hash; }
  };
  struct key_eq {
    using is_transparent = void;
    bool operator()(const std::string& a, const std::string& b) const noexcept { return a == b; }
    bool operator()(const hashed_key& a, const std::string& b) const noexcept { return a.key == b; }
    bool operator()(const std::string& a, const hashed_key& b) const noexcept { return a == b.key; }
  };
  using map_type = std::unordered_map<std::string, entry, hasher, key_eq>;
  // Deadline index: (deadline, the map node's key). Node-based maps keep a
  // key's address until it is erased, and every erase updates the index
  // first, so the pointer never dangles.
  using deadline_index = std::set<std::pair<std::int64_t, const std::string*>>;

  struct alignas(64) shard {
    // mu protects everything below.
    std::mutex mu;
    map_type map;
    deadline_index deadlines;

    bool has_deadlines() const noexcept { return !deadlines.empty(); }
    // The time for expiry checks, read from the clock only when some key
    // of the shard has a deadline (0 otherwise: nothing can be expired).
    std::int64_t lazy_now() const noexcept { return has_deadlines() ? now_ms() : 0; }
    // The live entry for k, erasing it first if it has expired.
    entry* find_live(const hashed_key& k, std::int64_t now);
    void erase(map_type::iterator it);
    void set_deadline(map_type::iterator it, std::int64_t at);
  };

  // Locks the shards of a set of keys in ascending order; one lock when
  // they share a shard.
  class multi_lock {
   public:
    multi_lock(store& st, std::span<const hashed_key> keys);
    ~multi_lock();
    multi_lock(const multi_lock&) = delete;
    multi_lock& operator=(const multi_lock&) = delete;

   private:
    store& st_;
    std::array<std::uint64_t, shard_count / 64> mask_{};
  };

  static std::size_t shard_index(const hashed_key& k) noexcept {
    // The top bits: the map picks buckets by the hash modulo a prime, which
    // leans on the low bits.
    return (k.hash * 0x9E3779B97F4A7C15ull) >> 56;
  }
  shard& shard_of(const hashed_key& k) noexcept { return shards_[shard_index(k)]; }

  std::unique_ptr<shard[]> shards_;
  // True while a sweep is scheduled (see claim_sweeper). Written with
  // exchange/store; the hand-over's ordering comes from the shard locks.
  std::atomic<bool> sweeper_claimed_{false};
};

static_assert(store::shard_count == 256, "shard_index takes the hash's top 8 bits");

}  // namespace resp
