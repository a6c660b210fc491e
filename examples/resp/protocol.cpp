// RESP2 request parsing and reply encoding (see protocol.hpp).
//
// Error texts follow Redis 7's networking.c where Redis has the same check,
// so clients and tests that match on them see the same words.
#include "protocol.hpp"

#include <algorithm>
#include <charconv>
#include <climits>
#include <cstring>

namespace resp {

namespace {

// Redis's isspace() set, as sdssplitargs uses it.
bool is_blank(char c) noexcept {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Position of the first '\r' in [from, len), or len.
std::size_t find_cr(const char* data, std::size_t from, std::size_t len) noexcept {
  if (from >= len) return len;
  const void* p = std::memchr(data + from, '\r', len - from);
  return p != nullptr ? static_cast<std::size_t>(static_cast<const char*>(p) - data) : len;
}

}  // namespace

bool parse_int64(std::string_view s, std::int64_t& out) noexcept {
  // 20 characters: "-9223372036854775808".
  if (s.empty() || s.size() > 20) return false;
  if (s.size() == 1 && s[0] == '0') {
    out = 0;
    return true;
  }
  std::size_t i = 0;
  const bool negative = s[0] == '-';
  if (negative && ++i == s.size()) return false;
  if (s[i] < '1' || s[i] > '9') return false;
  std::uint64_t v = 0;
  for (; i < s.size(); ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    const auto d = static_cast<std::uint64_t>(s[i] - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
  }
  if (negative) {
    if (v > static_cast<std::uint64_t>(INT64_MAX) + 1) return false;
    out = v == static_cast<std::uint64_t>(INT64_MAX) + 1 ? INT64_MIN : -static_cast<std::int64_t>(v);
  } else {
    if (v > static_cast<std::uint64_t>(INT64_MAX)) return false;
    out = static_cast<std::int64_t>(v);
  }
  return true;
}

bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'a' && x <= 'z') x = static_cast<char>(x - 32);
    if (y >= 'a' && y <= 'z') y = static_cast<char>(y - 32);
    if (x != y) return false;
  }
  return true;
}

bool split_inline(std::string_view line, std::string& scratch, std::vector<std::string_view>& out) {
  out.clear();
  scratch.clear();
  // Unescaping only shrinks, so the views into scratch never move.
  scratch.reserve(line.size());
  const char* p = line.data();
  const char* const end = p + line.size();
  for (;;) {
    while (p != end && is_blank(*p)) ++p;
    if (p == end) return true;
    const std::size_t start = scratch.size();
    bool in_dq = false, in_sq = false, done = false;
    while (!done) {
      if (in_dq) {
        if (p == end) return false;
        if (*p == '\\' && end - p >= 4 && p[1] == 'x' && hex_value(p[2]) >= 0 && hex_value(p[3]) >= 0) {
          scratch.push_back(static_cast<char>(hex_value(p[2]) * 16 + hex_value(p[3])));
          p += 3;
        } else if (*p == '\\' && end - p >= 2) {
          ++p;
          char c = *p;
          switch (c) {
            case 'n': c = '\n'; break;
            case 'r': c = '\r'; break;
            case 't': c = '\t'; break;
            case 'b': c = '\b'; break;
            case 'a': c = '\a'; break;
            default: break;
          }
          scratch.push_back(c);
        } else if (*p == '"') {
          if (end - p >= 2 && !is_blank(p[1])) return false;
          done = true;
        } else {
          scratch.push_back(*p);
        }
      } else if (in_sq) {
        if (p == end) return false;
        if (*p == '\\' && end - p >= 2 && p[1] == '\'') {
          ++p;
          scratch.push_back('\'');
        } else if (*p == '\'') {
          if (end - p >= 2 && !is_blank(p[1])) return false;
          done = true;
        } else {
          scratch.push_back(*p);
        }
      } else if (p == end) {
        done = true;
      } else {
        switch (*p) {
          case ' ': case '\n': case '\r': case '\t': case '\0': done = true; break;
          case '"': in_dq = true; break;
          case '\'': in_sq = true; break;
          default: scratch.push_back(*p); break;
        }
      }
      if (p != end) ++p;
    }
    out.emplace_back(scratch.data() + start, scratch.size() - start);
  }
}

void request_parser::reset() noexcept {
  in_multibulk_ = false;
  pos_ = 0;
  args_expected_ = 0;
  bulk_len_ = -1;
  arg_offs_.clear();
}

request_parser::status request_parser::fail(std::string msg) {
  error_ = std::move(msg);
  reset();
  return status::error;
}

request_parser::status request_parser::parse(const char* data, std::size_t len) {
  consumed_ = 0;
  if (!in_multibulk_) {
    if (len == 0) {
      needed_ = 1;
      return status::need_more;
    }
    if (data[0] != '*') return parse_inline(data, len);
    in_multibulk_ = true;
    pos_ = 0;
  }
  return parse_multibulk(data, len);
}

request_parser::status request_parser::parse_multibulk(const char* data, std::size_t len) {
  if (pos_ == 0) {
    const std::size_t cr = find_cr(data, 1, len);
    if (cr + 1 >= len) {
      if (len > limits_.max_inline_len) return fail("Protocol error: too big mbulk count string");
      needed_ = len + 1;
      return status::need_more;
    }
    if (data[cr + 1] != '\n') return fail("Protocol error: expected '\\n' after '\\r' in multibulk length");
    std::int64_t n = 0;
    if (!parse_int64({data + 1, cr - 1}, n) || n > static_cast<std::int64_t>(limits_.max_multibulk_len) ||
        n < -1)
      return fail("Protocol error: invalid multibulk length");
    if (n <= 0) {
      // "*0" and the null array "*-1": no command, as in Redis.
      consumed_ = cr + 2;
      reset();
      return status::empty;
    }
    args_expected_ = n;
    pos_ = cr + 2;
    arg_offs_.clear();
    // Not reserved for the announced count: only arguments that arrive
    // take memory, so a bogus "*1000000" costs nothing by itself.
    arg_offs_.reserve(static_cast<std::size_t>(std::min<std::int64_t>(n, 64)));
  }
  while (static_cast<std::int64_t>(arg_offs_.size()) < args_expected_) {
    if (bulk_len_ < 0) {
      if (pos_ >= len) {
        needed_ = pos_ + 1;
        break;
      }
      if (data[pos_] != '$') {
        std::string msg = "Protocol error: expected '$', got '";
        msg += data[pos_] == '\r' || data[pos_] == '\n' ? ' ' : data[pos_];
        msg += "'";
        return fail(std::move(msg));
      }
      const std::size_t cr = find_cr(data, pos_ + 1, len);
      if (cr + 1 >= len) {
        if (len - pos_ > limits_.max_inline_len) return fail("Protocol error: too big bulk count string");
        needed_ = len + 1;
        break;
      }
      if (data[cr + 1] != '\n') return fail("Protocol error: expected '\\n' after '\\r' in bulk length");
      std::int64_t n = 0;
      if (!parse_int64({data + pos_ + 1, cr - pos_ - 1}, n) || n < 0 ||
          static_cast<std::uint64_t>(n) > limits_.max_bulk_len)
        return fail("Protocol error: invalid bulk length");
      bulk_len_ = n;
      pos_ = cr + 2;
    }
    const auto n = static_cast<std::size_t>(bulk_len_);
    if (len < pos_ + n + 2) {
      needed_ = pos_ + n + 2;
      break;
    }
    if (data[pos_ + n] != '\r' || data[pos_ + n + 1] != '\n')
      return fail("Protocol error: expected CRLF after a bulk string of the announced length");
    arg_offs_.push_back({pos_, n});
    pos_ += n + 2;
    bulk_len_ = -1;
  }
  if (static_cast<std::int64_t>(arg_offs_.size()) < args_expected_) {
    if (needed_ > limits_.max_request_len)
      return fail("Protocol error: request larger than the query buffer limit");
    return status::need_more;
  }
  argv_.clear();
  for (const auto& a : arg_offs_) argv_.emplace_back(data + a.off, a.len);
  consumed_ = pos_;
  reset();
  return status::command;
}

request_parser::status request_parser::parse_inline(const char* data, std::size_t len) {
  const void* nl = std::memchr(data, '\n', std::min(len, limits_.max_inline_len + 1));
  if (nl == nullptr) {
    if (len > limits_.max_inline_len) return fail("Protocol error: too big inline request");
    needed_ = len + 1;
    return status::need_more;
  }
  const auto nl_pos = static_cast<std::size_t>(static_cast<const char*>(nl) - data);
  std::size_t line_len = nl_pos;
  if (line_len > 0 && data[line_len - 1] == '\r') --line_len;
  if (!split_inline({data, line_len}, inline_scratch_, argv_))
    return fail("Protocol error: unbalanced quotes in request");
  consumed_ = nl_pos + 1;
  return argv_.empty() ? status::empty : status::command;
}

void reply_buffer::grow(std::size_t need) {
  std::size_t cap = std::max<std::size_t>({need, cap_ * 2, 4096});
  auto d = std::make_unique_for_overwrite<char[]>(cap);
  if (size_ != 0) std::memcpy(d.get(), data_.get(), size_);
  data_ = std::move(d);
  cap_ = cap;
}

void reply_buffer::shrink_to(std::size_t cap) {
  if (cap_ <= cap || size_ > cap) return;
  auto d = std::make_unique_for_overwrite<char[]>(cap);
  if (size_ != 0) std::memcpy(d.get(), data_.get(), size_);
  data_ = std::move(d);
  cap_ = cap;
}

void reply_buffer::header(char type, std::int64_t v) {
  // Type byte, up to 20 characters of number, CRLF.
  if (cap_ - size_ < 23) grow(size_ + 23);
  char* p = data_.get() + size_;
  *p++ = type;
  p = std::to_chars(p, p + 20, v).ptr;
  *p++ = '\r';
  *p++ = '\n';
  size_ = static_cast<std::size_t>(p - data_.get());
}

void reply_buffer::simple(std::string_view s) {
  raw("+");
  raw(s);
  raw("\r\n");
}

void reply_buffer::error_prefixed(std::string_view code, std::string_view msg) {
  raw("-");
  raw(code);
  const std::size_t start = size_;
  raw(msg);
  // A CR or LF would end the error line early and desynchronise the
  // client; Redis replaces them with blanks too.
  std::replace_if(data_.get() + start, data_.get() + size_,
                  [](char c) { return c == '\r' || c == '\n'; }, ' ');
  raw("\r\n");
}

}  // namespace resp
