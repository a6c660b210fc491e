// An HTTP/1.1 request-head parser (RFC 9112): the request line and the
// header fields, in place in the connection's read buffer.
//
// It allocates nothing and is resumable: fed the same request again with
// more bytes behind it, it goes on from the first line it has not finished,
// so a client that sends its head a byte at a time costs linear, not
// quadratic, time. It keeps offsets rather than pointers, so the caller may
// move the unparsed bytes (compacting its buffer) between two calls.
//
// Only what a server needs to route and frame a request is kept: the
// method, the target, the version, Content-Length, whether there was a
// Transfer-Encoding, and what Connection asks for.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace http {

enum class method : std::uint8_t {
  get, head, post, put, del, connect, options, trace, patch,
};

struct request {
  http::method method = method::get;
  // Offsets from the start of the request (the first byte of its line).
  std::uint32_t target_offset = 0;
  std::uint32_t target_length = 0;
  int minor_version = 1;  // HTTP/1.0 or HTTP/1.1
  bool keep_alive = true;  // the version's default, after Connection
  std::uint64_t content_length = 0;

  // The target as sent, and its path and query (the path of an
  // absolute-form target "http://host/p?q" is "/p").
  std::string_view target(const char* base) const noexcept {
    return {base + target_offset, target_length};
  }
  std::string_view path(const char* base) const noexcept;
  std::string_view query(const char* base) const noexcept;
};

enum class parse_status : std::uint8_t { incomplete, complete, error };

struct parse_result {
  parse_status status = parse_status::incomplete;
  // When status is error: 400 (malformed), 431 (head over the limit),
  // 501 (unknown method, Transfer-Encoding), 505 (HTTP version).
  int error_status = 0;
  // When status is complete: bytes of the head, final empty line included.
  std::size_t head_bytes = 0;
};

class request_parser {
 public:
  explicit request_parser(std::size_t max_head_bytes) noexcept : max_head_(max_head_bytes) {}

  // Parses the request whose first byte is base[0], of which avail bytes
  // are buffered. Call again with the same request (possibly moved) and
  // more bytes after an incomplete result; call reset() before the next
  // request. Errors are found as early as the bytes allow: a request line
  // of binary garbage is refused before its end arrives.
  parse_result parse(const char* base, std::size_t avail) noexcept;
  // What the last complete parse found.
  const request& get() const noexcept { return req_; }
  void reset() noexcept;

 private:
  parse_result fail(int status) noexcept {
    failed_ = status;
    return {parse_status::error, status, 0};
  }
  int parse_request_line(const char* line, std::size_t len) noexcept;
  int parse_field(const char* line, std::size_t len) noexcept;
  int finish() noexcept;

  std::size_t max_head_;
  request req_;
  std::size_t next_line_ = 0;  // offset of the first line not yet parsed
  std::size_t checked_ = 0;    // bytes of an unfinished request line already checked
  bool in_fields_ = false;     // the request line is done
  int failed_ = 0;
  // What the fields said so far.
  int hosts_ = 0;
  bool has_length_ = false;
  bool transfer_encoding_ = false;
  bool conn_close_ = false;
  bool conn_keep_alive_ = false;
  std::uint64_t length_ = 0;
};

}  // namespace http
