// The sharded key-value store (see store.hpp).
#include "store.hpp"

#include "protocol.hpp"

#include <charconv>
#include <functional>

namespace resp {

namespace {

// A value whose buffer is this much larger than the new contents is
// reallocated rather than reused, so that overwriting a large value with a
// small one gives the memory back.
constexpr std::size_t reuse_slack_bytes = 4096;

void assign_value(std::string& dst, std::string_view v) {
  if (dst.capacity() > reuse_slack_bytes && dst.capacity() / 2 > v.size()) {
    dst = std::string(v);
  } else {
    dst.assign(v);
  }
}

// Redis's rule: a key is expired once the clock has passed its deadline.
bool expired(std::int64_t at, std::int64_t now) noexcept { return at != 0 && now > at; }

}  // namespace

std::int64_t now_ms() noexcept {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

hashed_key::hashed_key(std::string_view k) noexcept : key(k), hash(std::hash<std::string_view>{}(k)) {}

std::size_t store::hasher::operator()(const std::string& s) const noexcept {
  return std::hash<std::string_view>{}(s);
}

store::store() : shards_(std::make_unique<shard[]>(shard_count)) {}

store::entry* store::shard::find_live(const hashed_key& k, std::int64_t now) {
  auto it = map.find(k);
  if (it == map.end()) return nullptr;
  if (expired(it->second.expire_at, now)) {
    erase(it);
    return nullptr;
  }
  return &it->second;
}

void store::shard::erase(map_type::iterator it) {
  if (it->second.expire_at != 0) deadlines.erase({it->second.expire_at, &it->first});
  map.erase(it);
}

void store::shard::set_deadline(map_type::iterator it, std::int64_t at) {
  entry& e = it->second;
  if (e.expire_at == at) return;
  if (e.expire_at != 0) deadlines.erase({e.expire_at, &it->first});
  e.expire_at = at;
  if (at != 0) deadlines.emplace(at, &it->first);
}

store::multi_lock::multi_lock(store& st, std::span<const hashed_key> keys) : st_(st) {
  for (const auto& k : keys) {
    const std::size_t i = shard_index(k);
    mask_[i / 64] |= std::uint64_t{1} << (i % 64);
  }
  // Ascending order everywhere: two multi-key commands cannot deadlock.
  for (std::size_t w = 0; w < mask_.size(); ++w)
    for (std::uint64_t m = mask_[w]; m != 0; m &= m - 1)
      st_.shards_[w * 64 + static_cast<std::size_t>(__builtin_ctzll(m))].mu.lock();
}

store::multi_lock::~multi_lock() {
  for (std::size_t w = 0; w < mask_.size(); ++w)
    for (std::uint64_t m = mask_[w]; m != 0; m &= m - 1)
      st_.shards_[w * 64 + static_cast<std::size_t>(__builtin_ctzll(m))].mu.unlock();
}

bool store::set(const hashed_key& k, std::string_view value, set_cond cond, set_ttl ttl,
                std::int64_t expire_at_ms) {
  shard& s = shard_of(k);
  std::lock_guard lock(s.mu);
  auto it = s.map.find(k);
  if (it != s.map.end() && expired(it->second.expire_at, s.lazy_now())) {
    s.erase(it);
    it = s.map.end();
  }
  if (cond == set_cond::if_absent && it != s.map.end()) return false;
  if (cond == set_cond::if_present && it == s.map.end()) return false;
  if (it == s.map.end()) {
    it = s.map.emplace(std::string(k.key), entry{}).first;
  }
  assign_value(it->second.value, value);
  if (ttl == set_ttl::clear) {
    s.set_deadline(it, 0);
  } else if (ttl == set_ttl::set) {
    s.set_deadline(it, expire_at_ms);
  }
  return true;
}

store::incr_status store::incr_by(const hashed_key& k, std::int64_t delta, std::int64_t& result) {
  shard& s = shard_of(k);
  std::lock_guard lock(s.mu);
  entry* e = s.find_live(k, s.lazy_now());
  std::int64_t old = 0;
  if (e != nullptr && !parse_int64(e->value, old)) return incr_status::not_integer;
  if ((delta < 0 && old < 0 && delta < INT64_MIN - old) ||
      (delta > 0 && old > 0 && delta > INT64_MAX - old))
    return incr_status::overflow;
  result = old + delta;
  char buf[24];
  const auto len = static_cast<std::size_t>(std::to_chars(buf, buf + sizeof buf, result).ptr - buf);
  if (e == nullptr) {
    // A new key has no deadline; an existing one keeps its own, as in Redis.
    s.map.emplace(std::string(k.key), entry{std::string(buf, len), 0});
  } else {
    e->value.assign(buf, len);
  }
  return incr_status::ok;
}

std::size_t store::del(std::span<const hashed_key> keys) {
  multi_lock locks(*this, keys);
  std::size_t n = 0;
  for (const auto& k : keys) {
    shard& s = shard_of(k);
    auto it = s.map.find(k);
    if (it == s.map.end()) continue;
    const bool live = !expired(it->second.expire_at, s.lazy_now());
    s.erase(it);
    if (live) ++n;
  }
  return n;
}

std::size_t store::exists(std::span<const hashed_key> keys) {
  multi_lock locks(*this, keys);
  std::size_t n = 0;
  for (const auto& k : keys) {
    shard& s = shard_of(k);
    if (s.find_live(k, s.lazy_now()) != nullptr) ++n;
  }
  return n;
}

void store::mset(std::span<const hashed_key> keys, std::span<const std::string_view> values) {
  multi_lock locks(*this, keys);
  for (std::size_t i = 0; i < keys.size(); ++i) {
    shard& s = shard_of(keys[i]);
    auto it = s.map.find(keys[i]);
    if (it == s.map.end()) it = s.map.emplace(std::string(keys[i].key), entry{}).first;
    assign_value(it->second.value, values[i]);
    s.set_deadline(it, 0);
  }
}

std::int64_t store::pttl(const hashed_key& k) {
  shard& s = shard_of(k);
  std::lock_guard lock(s.mu);
  const std::int64_t now = s.lazy_now();
  entry* e = s.find_live(k, now);
  if (e == nullptr) return -2;
  if (e->expire_at == 0) return -1;
  return e->expire_at - now;
}

std::size_t store::size() {
  std::size_t n = 0;
  for (std::size_t i = 0; i < shard_count; ++i) {
    shard& s = shards_[i];
    std::lock_guard lock(s.mu);
    n += s.map.size();
  }
  return n;
}

void store::clear() {
  for (std::size_t i = 0; i < shard_count; ++i) {
    shard& s = shards_[i];
    std::lock_guard lock(s.mu);
    s.deadlines.clear();
    s.map.clear();
  }
}

store::sweep_result store::sweep_expired(std::size_t budget_per_shard) {
  sweep_result r;
  for (std::size_t i = 0; i < shard_count; ++i) {
    shard& s = shards_[i];
    std::lock_guard lock(s.mu);
    if (!s.has_deadlines()) continue;
    const std::int64_t now = now_ms();
    std::size_t n = 0;
    while (!s.deadlines.empty() && expired(s.deadlines.begin()->first, now)) {
      if (n == budget_per_shard) {
        r.budget_hit = true;
        break;
      }
      s.erase(s.map.find(*s.deadlines.begin()->second));
      ++n;
    }
    r.removed += n;
    r.has_deadlines = r.has_deadlines || s.has_deadlines();
  }
  return r;
}

bool store::claim_sweeper() noexcept {
  // The plain load keeps the common case (a sweeper already scheduled)
  // from writing the shared line.
  if (sweeper_claimed_.load(std::memory_order_relaxed)) return false;
  return !sweeper_claimed_.exchange(true, std::memory_order_relaxed);
}

void store::sweeper_idle() noexcept {
  // A SET that added a deadline before this store, and read the flag still
  // true, unlocked its shard before that read; the sweeper's re-check,
  // which locks every shard after this store, therefore sees its key. A SET
  // whose shard lock follows the re-check's reads false and claims.
  // Relaxed suffices: the shard mutexes order both sides.
  sweeper_claimed_.store(false, std::memory_order_relaxed);
}

}  // namespace resp
