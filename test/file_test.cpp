// Files over io_uring.
#include <cowq/cowq.hpp>

#include "test_util.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <unistd.h>
#include <vector>

namespace {

std::string temp_path(const char* tag) {
  return "/tmp/cowq-file-" + std::string(tag) + "-" + std::to_string(::getpid());
}

TEST(file, write_then_read_at_offsets_fsync_and_stat) {
  cowq::runtime rt;
  const auto path = temp_path("rw");
  auto t = [&]() -> cowq::task<void> {
    auto f = co_await cowq::file::open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    EXPECT_TRUE(f) << f.error.message();
    std::vector<std::byte> data(100000);
    for (std::size_t i = 0; i < data.size(); ++i) data[i] = std::byte(i % 251);
    auto w = co_await f.value.write_at(data, 4096);
    EXPECT_TRUE(w);
    EXPECT_EQ(w.value, data.size());
    EXPECT_TRUE(co_await f.value.fsync());
    struct statx st {};
    EXPECT_TRUE(co_await f.value.stat(st));
    EXPECT_EQ(st.stx_size, 4096u + data.size());
    std::vector<std::byte> back(data.size());
    std::size_t got = 0;
    while (got < back.size()) {
      auto r = co_await f.value.read_at(std::span(back).subspan(got), 4096 + got);
      if (!r || r.value == 0) break;
      got += r.value;
    }
    EXPECT_EQ(back, data);
    // The hole before the data reads as zeros.
    std::byte hole[16];
    auto h = co_await f.value.read_at(hole, 0);
    EXPECT_TRUE(h && h.value == sizeof hole && hole[0] == std::byte{0});
    EXPECT_TRUE(co_await f.value.close());
    EXPECT_FALSE(f.value.is_open());
  };
  cowq::sync_wait(rt, t());
  ::unlink(path.c_str());
}

TEST(file, open_errors_are_error_codes) {
  cowq::runtime rt;
  auto t = []() -> cowq::task<std::error_code> {
    auto f = co_await cowq::file::open("/nonexistent/dir/file", O_RDONLY);
    co_return f.error;
  };
  EXPECT_EQ(cowq::sync_wait(rt, t()), std::errc::no_such_file_or_directory);
}

TEST(file, io_off_a_worker_is_refused) {
  cowq::runtime rt;
  cowq::file f;
  std::byte b[1];
  auto aw = f.read_at(b, 0);
  EXPECT_THROW(aw.await_suspend(std::noop_coroutine()), std::logic_error);
}

}  // namespace
