// Files on io_uring: open, read and write at an offset, fsync, statx, close.
#pragma once

#include <cowq/io.hpp>
#include <cowq/task.hpp>

#include <cstddef>
#include <fcntl.h>
#include <span>
#include <string>
#include <sys/stat.h>
#include <utility>

namespace cowq {

// An open file. The descriptor is closed synchronously on destruction if
// close() was not awaited.
//
// Thread safety: concurrent reads and writes at offsets are fine (pread /
// pwrite semantics); the object itself is not to be moved while in use.
class file {
 public:
  file() noexcept = default;
  explicit file(int fd) noexcept : fd_(fd) {}
  file(file&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  file& operator=(file&& o) noexcept;
  ~file();

  struct open_result;
  // openat(AT_FDCWD, path, flags | O_CLOEXEC, mode) through the ring.
  static task<open_result> open(std::string path, int flags, mode_t mode = 0644, io_options opts = {});

  io_awaitable read_at(std::span<std::byte> buf, std::uint64_t offset, io_options opts = {}) noexcept;
  io_awaitable write_at(std::span<const std::byte> buf, std::uint64_t offset, io_options opts = {}) noexcept;
  io_awaitable fsync(io_options opts = {}) noexcept;
  io_awaitable fdatasync(io_options opts = {}) noexcept;
  // Fills out (statx(2) with AT_EMPTY_PATH on this file).
  io_awaitable stat(struct statx& out, unsigned mask = STATX_BASIC_STATS, io_options opts = {}) noexcept;
  io_awaitable close() noexcept;

  int native_handle() const noexcept { return fd_; }
  bool is_open() const noexcept { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

struct file::open_result {
  std::error_code error;
  file value;
  explicit operator bool() const noexcept { return !error; }
};

}  // namespace cowq
