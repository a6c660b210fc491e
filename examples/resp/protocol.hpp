// RESP2, the Redis protocol: an incremental request parser (multibulk and
// inline commands) and a reply writer.
//
// The parser never copies a multibulk argument: a parsed command is a list
// of views into the caller's read buffer. It keeps its progress through a
// command that has not fully arrived as offsets from the command's first
// byte, so the caller may move the unconsumed bytes (compact or grow the
// buffer) between two calls without the parser starting over.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace resp {

struct parser_limits {
  // Largest bulk string in a request (Redis's proto-max-bulk-len, 512 MiB
  // there; bounded lower here so one client cannot claim that much).
  std::size_t max_bulk_len = std::size_t{64} << 20;
  // Most arguments in one multibulk request (Redis allows INT_MAX; every
  // argument costs an offset pair here even before its bytes arrive).
  std::size_t max_multibulk_len = std::size_t{1} << 20;
  // Longest inline command, and longest "*N" / "$N" line (Redis's
  // PROTO_INLINE_MAX_SIZE).
  std::size_t max_inline_len = std::size_t{64} << 10;
  // Most bytes one request may occupy in the read buffer (Redis's
  // client-query-buffer-limit, 1 GiB there). Bounds a connection's input
  // memory: the buffer never grows past this.
  std::size_t max_request_len = std::size_t{128} << 20;
};

// Parses one request at a time from the bytes of a connection.
//
// Thread safety: none; one per connection.
class request_parser {
 public:
  enum class status {
    command,    // a whole request: args() and consumed() describe it
    need_more,  // incomplete; call again with the same bytes and more
    empty,      // consumed() bytes carried no command (blank inline line, "*0")
    error,      // protocol error: error() says what; the connection must close
  };

  explicit request_parser(parser_limits limits = {}) : limits_(limits) {}

  // data points at the first unconsumed byte of the connection (the start
  // of the request in progress), len is how many bytes follow it.
  status parse(const char* data, std::size_t len);

  // After status::command: the arguments, valid until the next parse() or
  // until the bytes move. After command or empty: bytes to drop.
  const std::vector<std::string_view>& args() const noexcept { return argv_; }
  std::size_t consumed() const noexcept { return consumed_; }
  // After status::error: the message, without "-ERR " and CRLF.
  const std::string& error() const noexcept { return error_; }
  // After status::need_more: bytes the request is known to need from its
  // first byte on (at least len + 1), so the caller can grow its buffer to
  // fit a large bulk string in one go.
  std::size_t needed() const noexcept { return needed_; }
  const parser_limits& limits() const noexcept { return limits_; }

 private:
  status parse_multibulk(const char* data, std::size_t len);
  status parse_inline(const char* data, std::size_t len);
  status fail(std::string msg);
  void reset() noexcept;

  parser_limits limits_;
  // Progress through a multibulk request that has not fully arrived.
  // Offsets count from the request's first byte.
  bool in_multibulk_ = false;
  std::size_t pos_ = 0;            // next byte to look at
  std::int64_t args_expected_ = 0;
  std::int64_t bulk_len_ = -1;     // length of the bulk whose "$N" was read, or -1
  struct span_off {
    std::size_t off, len;
  };
  std::vector<span_off> arg_offs_;
  // Results.
  std::vector<std::string_view> argv_;
  std::string inline_scratch_;  // unescaped inline arguments (argv_ points here)
  std::size_t consumed_ = 0;
  std::size_t needed_ = 0;
  std::string error_;
};

// Splits an inline command line as Redis's sdssplitargs does: blanks
// separate arguments, "double quotes" take C escapes (\n, \xHH, ...),
// 'single quotes' take only \'. A closing quote must be followed by a blank
// or the end. Unescaped bytes go to scratch (reserved up front so the views
// stay valid). Returns false on unbalanced quotes.
bool split_inline(std::string_view line, std::string& scratch, std::vector<std::string_view>& out);

// Builds replies into one growing buffer, sent in one go per batch.
//
// Thread safety: none; one per connection.
class reply_buffer {
 public:
  reply_buffer() = default;
  explicit reply_buffer(std::size_t reserve) { grow(reserve); }

  const char* data() const noexcept { return data_.get(); }
  std::size_t size() const noexcept { return size_; }
  std::size_t capacity() const noexcept { return cap_; }
  bool empty() const noexcept { return size_ == 0; }
  void clear() noexcept { size_ = 0; }
  // Gives back memory a large reply left behind.
  void shrink_to(std::size_t cap);

  void raw(std::string_view s) {
    if (cap_ - size_ < s.size()) grow(size_ + s.size());
    if (!s.empty()) std::memcpy(data_.get() + size_, s.data(), s.size());
    size_ += s.size();
  }
  void ok() { raw("+OK\r\n"); }
  void simple(std::string_view s);
  // "-ERR msg": msg must not contain CR or LF (error() takes care of it).
  void error(std::string_view msg) { error_prefixed("ERR ", msg); }
  // msg starts with its own code ("NOPROTO ...", "WRONGTYPE ...").
  void error_code(std::string_view msg) { error_prefixed("", msg); }
  void integer(std::int64_t v) { header(':', v); }
  void bulk(std::string_view s) {
    header('$', static_cast<std::int64_t>(s.size()));
    raw(s);
    raw("\r\n");
  }
  void null_bulk() { raw("$-1\r\n"); }
  void array(std::size_t n) { header('*', static_cast<std::int64_t>(n)); }

 private:
  void header(char type, std::int64_t v);
  void error_prefixed(std::string_view code, std::string_view msg);
  void grow(std::size_t need);

  std::unique_ptr<char[]> data_;
  std::size_t size_ = 0;
  std::size_t cap_ = 0;
};

// Redis's string2ll: an optional '-', then digits without leading zeros
// (except "0" itself), no blanks, no '+', within int64. False otherwise.
bool parse_int64(std::string_view s, std::int64_t& out) noexcept;

// ASCII case-insensitive equality, for command names and options.
bool iequals(std::string_view a, std::string_view b) noexcept;

}  // namespace resp
