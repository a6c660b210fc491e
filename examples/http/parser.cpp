// The HTTP/1.1 request-head parser (see parser.hpp).
#include "parser.hpp"

#include <array>
#include <cstring>

namespace http {

namespace {

// tchar (RFC 9110 5.6.2): what method and field names are made of.
constexpr std::array<bool, 256> make_tchar() {
  std::array<bool, 256> t{};
  for (int c = '0'; c <= '9'; ++c) t[c] = true;
  for (int c = 'a'; c <= 'z'; ++c) t[c] = true;
  for (int c = 'A'; c <= 'Z'; ++c) t[c] = true;
  for (char c : std::string_view("!#$%&'*+-.^_`|~")) t[static_cast<unsigned char>(c)] = true;
  return t;
}
constexpr std::array<bool, 256> kTchar = make_tchar();

bool is_tchar(char c) noexcept { return kTchar[static_cast<unsigned char>(c)]; }

// Visible ASCII, no space: what a request target may hold.
bool is_target_char(char c) noexcept {
  const auto u = static_cast<unsigned char>(c);
  return u > 0x20 && u < 0x7f;
}

// Field values: visible ASCII, space, tab and obs-text; no other controls.
bool is_value_char(char c) noexcept {
  const auto u = static_cast<unsigned char>(c);
  return u == '\t' || (u >= 0x20 && u != 0x7f);
}

bool is_ows(char c) noexcept { return c == ' ' || c == '\t'; }

// Case-insensitive comparison with a lower-case literal of letters and
// '-': | 0x20 folds only a letter's capital onto it, and only CR onto '-',
// which no caller's input holds.
bool iequals(std::string_view s, std::string_view lower) noexcept {
  if (s.size() != lower.size()) return false;
  for (std::size_t i = 0; i < s.size(); ++i)
    if ((static_cast<unsigned char>(s[i]) | 0x20) != static_cast<unsigned char>(lower[i])) return false;
  return true;
}

std::string_view trim_ows(std::string_view s) noexcept {
  while (!s.empty() && is_ows(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_ows(s.back())) s.remove_suffix(1);
  return s;
}

// "http://" or "https://", any case: the start of an absolute-form target.
std::size_t scheme_length(std::string_view t) noexcept {
  const std::size_t sep = t.find("://");
  if (sep == std::string_view::npos) return 0;
  const std::string_view scheme = t.substr(0, sep);
  return iequals(scheme, "http") || iequals(scheme, "https") ? sep + 3 : 0;
}

// The request's path and query, before the '?' and after it.
std::string_view path_and_query(std::string_view t) noexcept {
  if (!t.empty() && t.front() == '/') return t;
  if (const std::size_t n = scheme_length(t)) {
    t.remove_prefix(n);
    const std::size_t p = t.find_first_of("/?");
    return p == std::string_view::npos ? std::string_view{} : t.substr(p);
  }
  return t;  // "*"
}

bool parse_method(std::string_view m, method& out) noexcept {
  switch (m.size()) {
    case 3:
      if (m == "GET") return out = method::get, true;
      if (m == "PUT") return out = method::put, true;
      break;
    case 4:
      if (m == "HEAD") return out = method::head, true;
      if (m == "POST") return out = method::post, true;
      break;
    case 5:
      if (m == "PATCH") return out = method::patch, true;
      if (m == "TRACE") return out = method::trace, true;
      break;
    case 6:
      if (m == "DELETE") return out = method::del, true;
      break;
    case 7:
      if (m == "OPTIONS") return out = method::options, true;
      if (m == "CONNECT") return out = method::connect, true;
      break;
    default:
      break;
  }
  return false;
}

}  // namespace

std::string_view request::path(const char* base) const noexcept {
  std::string_view pq = path_and_query(target(base));
  if (pq.empty() || pq.front() == '?') return "/";
  return pq.substr(0, pq.find('?'));
}

std::string_view request::query(const char* base) const noexcept {
  std::string_view pq = path_and_query(target(base));
  const std::size_t q = pq.find('?');
  return q == std::string_view::npos ? std::string_view{} : pq.substr(q + 1);
}

void request_parser::reset() noexcept { *this = request_parser(max_head_); }

parse_result request_parser::parse(const char* base, std::size_t avail) noexcept {
  if (failed_ != 0) return {parse_status::error, failed_, 0};
  for (;;) {
    const std::size_t from = next_line_;
    const void* nl = avail > from ? std::memchr(base + from, '\n', avail - from) : nullptr;
    if (nl == nullptr) {
      if (avail > max_head_) return fail(431);
      if (!in_fields_) {
        // A request line still arriving: refuse what can never become one
        // (TLS, binary) now rather than when the line or the limit ends.
        std::size_t i = checked_ > from ? checked_ : from;
        for (; i < avail; ++i) {
          const char c = base[i];
          const bool ok = (c == '\r' && i + 1 == avail) ||
                          (i == from ? is_tchar(c) : c == ' ' || is_target_char(c));
          if (!ok) return fail(400);
        }
        checked_ = avail;
      }
      return {};
    }
    const std::size_t end = static_cast<std::size_t>(static_cast<const char*>(nl) - base);
    if (end + 1 > max_head_) return fail(431);
    std::size_t len = end - from;
    if (len > 0 && base[end - 1] == '\r') --len;
    const char* line = base + from;
    next_line_ = end + 1;
    if (!in_fields_) {
      // RFC 9112 2.2: empty lines before a request line are ignored (some
      // clients send a CRLF after a body).
      if (len == 0) continue;
      if (int st = parse_request_line(line, len)) return fail(st);
      req_.target_offset += static_cast<std::uint32_t>(from);
      in_fields_ = true;
      continue;
    }
    if (len == 0) {
      if (int st = finish()) return fail(st);
      return {parse_status::complete, 0, end + 1};
    }
    if (int st = parse_field(line, len)) return fail(st);
  }
}

int request_parser::parse_request_line(const char* line, std::size_t len) noexcept {
  const std::string_view l(line, len);
  const std::size_t sp1 = l.find(' ');
  if (sp1 == 0 || sp1 == std::string_view::npos) return 400;
  const std::size_t sp2 = l.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || sp2 == sp1 + 1) return 400;  // no version (HTTP/0.9), or two spaces
  const std::string_view name = l.substr(0, sp1);
  const std::string_view target = l.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = l.substr(sp2 + 1);
  for (char c : name)
    if (!is_tchar(c)) return 400;
  for (char c : target)
    if (!is_target_char(c)) return 400;
  if (target.front() != '/' && target != "*" && scheme_length(target) == 0) return 400;

  if (version.size() < 6 || version.substr(0, 5) != "HTTP/") return 400;
  const std::string_view num = version.substr(5);
  if (num.size() == 3 && num[0] >= '0' && num[0] <= '9' && num[1] == '.' && num[2] >= '0' && num[2] <= '9') {
    if (num[0] != '1') return 505;
    // HTTP/1.2 and later minors are served as 1.1 (RFC 9110 2.5).
    req_.minor_version = num[2] == '0' ? 0 : 1;
  } else {
    // "HTTP/2", "HTTP/3.0": a version, just not ours; anything else is noise.
    for (char c : num)
      if (!(c == '.' || (c >= '0' && c <= '9'))) return 400;
    return 505;
  }
  if (!parse_method(name, req_.method)) return 501;
  req_.target_offset = static_cast<std::uint32_t>(sp1 + 1);
  req_.target_length = static_cast<std::uint32_t>(target.size());
  return 0;
}

int request_parser::parse_field(const char* line, std::size_t len) noexcept {
  const std::string_view l(line, len);
  // A line starting with white space continues the previous field (obs-fold),
  // which RFC 9112 5.2 lets a server refuse.
  if (is_ows(l.front())) return 400;
  const std::size_t colon = l.find(':');
  if (colon == 0 || colon == std::string_view::npos) return 400;
  const std::string_view name = l.substr(0, colon);
  for (char c : name)
    if (!is_tchar(c)) return 400;  // also "Name : value" (RFC 9112 5.1)
  const std::string_view value = trim_ows(l.substr(colon + 1));
  for (char c : value)
    if (!is_value_char(c)) return 400;

  switch (name.size()) {
    case 4:
      if (iequals(name, "host")) ++hosts_;
      break;
    case 10:
      if (iequals(name, "connection")) {
        std::string_view rest = value;
        while (!rest.empty()) {
          const std::size_t comma = rest.find(',');
          const std::string_view tok = trim_ows(rest.substr(0, comma));
          if (iequals(tok, "close")) conn_close_ = true;
          else if (iequals(tok, "keep-alive")) conn_keep_alive_ = true;
          if (comma == std::string_view::npos) break;
          rest.remove_prefix(comma + 1);
        }
      }
      break;
    case 14:
      if (iequals(name, "content-length")) {
        // Digits only, and no list: "5, 5" or two differing fields are
        // how request smuggling starts (RFC 9112 6.3).
        if (value.empty() || value.size() > 18) return 400;
        std::uint64_t n = 0;
        for (char c : value) {
          if (c < '0' || c > '9') return 400;
          n = n * 10 + static_cast<std::uint64_t>(c - '0');
        }
        if (has_length_ && n != length_) return 400;
        has_length_ = true;
        length_ = n;
      }
      break;
    case 17:
      if (iequals(name, "transfer-encoding")) transfer_encoding_ = true;
      break;
    default:
      break;
  }
  return 0;
}

int request_parser::finish() noexcept {
  // No transfer coding is implemented (chunked bodies included): refused
  // rather than misframed.
  if (transfer_encoding_) return 501;
  // RFC 9112 3.2: exactly one Host in HTTP/1.1.
  if (req_.minor_version == 1 ? hosts_ != 1 : hosts_ > 1) return 400;
  req_.content_length = has_length_ ? length_ : 0;
  req_.keep_alive = req_.minor_version == 1 ? !conn_close_ : conn_keep_alive_ && !conn_close_;
  return 0;
}

}  // namespace http
