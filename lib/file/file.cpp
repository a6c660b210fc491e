#include <cowq/file.hpp>

#include <liburing.h>
#include <unistd.h>

namespace cowq {

using detail::op_args;
using detail::op_code;

file& file::operator=(file&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(o.fd_, -1);
  }
  return *this;
}

file::~file() {
  if (fd_ >= 0) ::close(fd_);
}

task<file::open_result> file::open(std::string path, int flags, mode_t mode, io_options opts) {
  io_result r = co_await io_awaitable(
      op_args{.code = op_code::openat, .fd = AT_FDCWD, .flags = flags, .path = path.c_str(), .mode = mode},
      std::move(opts));
  if (!r) co_return open_result{r.error, file()};
  co_return open_result{{}, file(static_cast<int>(r.value))};
}

io_awaitable file::read_at(std::span<std::byte> buf, std::uint64_t offset, io_options opts) noexcept {
  return {op_args{.code = op_code::read, .fd = fd_, .buf = buf.data(),
                  .len = static_cast<std::uint32_t>(buf.size()), .offset = offset},
          std::move(opts)};
}

io_awaitable file::write_at(std::span<const std::byte> buf, std::uint64_t offset, io_options opts) noexcept {
  return {op_args{.code = op_code::write, .fd = fd_, .buf = const_cast<std::byte*>(buf.data()),
                  .len = static_cast<std::uint32_t>(buf.size()), .offset = offset},
          std::move(opts)};
}

io_awaitable file::fsync(io_options opts) noexcept {
  return {op_args{.code = op_code::fsync, .fd = fd_}, std::move(opts)};
}

io_awaitable file::fdatasync(io_options opts) noexcept {
  return {op_args{.code = op_code::fsync, .fd = fd_, .flags = IORING_FSYNC_DATASYNC}, std::move(opts)};
}

io_awaitable file::stat(struct statx& out, unsigned mask, io_options opts) noexcept {
  return {op_args{.code = op_code::statx, .fd = fd_, .buf = &out, .flags = AT_EMPTY_PATH,
                  .path = "", .mask = mask},
          std::move(opts)};
}

io_awaitable file::close() noexcept {
  return {op_args{.code = op_code::close, .fd = std::exchange(fd_, -1)}, {}};
}

}  // namespace cowq
