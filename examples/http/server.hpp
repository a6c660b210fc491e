// A small HTTP/1.1 server on cowq: one coroutine per connection on the
// per-CPU pools, keep-alive and pipelining, timeouts, bounded memory.
//
//   GET|HEAD /              200 "Hello, World!" (the TechEmpower plaintext response)
//   GET|HEAD /block?ms=N    blocks its worker in a plain nanosleep() for N ms
//                           (0..max_block_ms), with no annotation: cowq's
//                           watchdog notices and the pool's other requests go on
//   GET|HEAD /stats         the counters below and the runtime's pool table
//   anything else           404; other methods 405, bad requests 4xx/5xx
//
// Every request in a read is answered in order and the answers go out in
// one send; the connection reads nothing more until that send is done, so a
// client that pipelines without reading cannot make the server buffer more
// than a read buffer's worth of answers. After an error answer, or one to
// "Connection: close", the server shuts its side down, drains what the
// client still sends (briefly), and closes.
#pragma once

#include <cowq/net.hpp>
#include <cowq/runtime.hpp>
#include <cowq/task.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <stop_token>
#include <string>

namespace http {

struct http_options {
  // A connection with no request in progress is closed after this long.
  std::chrono::milliseconds idle_timeout{10'000};
  // From a request's first byte to the end of its head (a client trickling
  // its header lines, slowloris, is answered 408 and closed).
  std::chrono::milliseconds header_timeout{10'000};
  // One send of answers, and one read of a body, may take this long; a
  // client that stops reading is dropped after it. Timeouts are checked
  // every quarter of the shortest of these three (10 ms to 1 s), so each
  // fires between 1 and 1.25 times its length.
  std::chrono::milliseconds send_timeout{10'000};
  // After an error answer: how long the client's remaining input is
  // drained before the close (closing with unread input would send a reset
  // that can destroy the answer before the client reads it).
  std::chrono::milliseconds linger_timeout{2'000};
  // Request line and header fields together (431 beyond).
  std::size_t max_head_bytes = 8192;
  // Bodies (Content-Length) are read and discarded up to this (413 beyond).
  std::uint64_t max_body_bytes = 1 << 20;
  // Per connection: the read buffer (at least max_head_bytes + 1) and the
  // buffer answers are gathered in before a send.
  std::size_t read_buffer_bytes = 16384;
  std::size_t write_buffer_bytes = 16384;
  int max_block_ms = 10'000;
  // Hand accepted connections to the CPUs in turn (each connection then
  // stays on its CPU's pool); otherwise they stay on the accepting CPU.
  bool spread_connections = true;
};

// Counters, readable at any time from any thread. Answers are counted per
// CPU and summed when read, so serving adds no shared cache line per request.
class http_stats {
 public:
  static constexpr std::array<int, 10> statuses = {200, 400, 404, 405, 408, 413, 431, 500, 501, 505};
  // Where status is counted; statuses not in the list count as 500.
  static constexpr int status_index(int status) noexcept {
    for (std::size_t i = 0; i < statuses.size(); ++i)
      if (statuses[i] == status) return static_cast<int>(i);
    return status == 500 ? -1 : status_index(500);
  }

  std::uint64_t responses(int status) const noexcept;
  std::uint64_t responses() const noexcept;  // all statuses

  std::atomic<std::uint64_t> connections_accepted{0};
  std::atomic<std::int64_t> connections_open{0};
  std::atomic<std::uint64_t> idle_closed{0};      // closed by idle_timeout
  std::atomic<std::uint64_t> timed_out{0};        // header, body or send timeout
  std::atomic<std::int64_t> blocking_now{0};      // /block handlers inside their sleep
  std::atomic<std::uint64_t> accept_errors{0};

  // Adds counts[i] answers of statuses[i], on the calling CPU's shard.
  void add_responses(const std::array<std::uint32_t, statuses.size()>& counts) noexcept;

  // "name value" lines, for /stats and logs.
  std::string to_text() const;

 private:
  static constexpr std::size_t kShards = 64;
  struct alignas(64) shard {
    std::array<std::atomic<std::uint64_t>, statuses.size()> by_status{};
  };
  std::array<shard, kShards> shards_{};
};

static_assert(http_stats::status_index(500) >= 0, "500 counts the statuses not listed");

// Accepts connections on listener and serves each in a coroutine of
// rt.system_wq(), until stop is requested; then stops accepting, ends
// every connection's read (answers being sent still go out, within
// send_timeout), and completes once every connection it started has
// closed. opts, stats and listener must outlive the task; the
// runtime must not be shut down before the task completes.
//
// Thread safety: opts is only read; several serve() tasks may share one
// http_stats.
cowq::task<void> serve(cowq::runtime& rt, cowq::net::tcp_listener& listener, const http_options& opts,
                       http_stats& stats, std::stop_token stop);

}  // namespace http
