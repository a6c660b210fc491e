// Copies a file with io_uring reads and writes kept in flight.
//
//   file_copy SOURCE DEST [--depth N] [--block-size BYTES] [--cpus LIST] [--no-fsync]
//
// DEPTH coroutines (default 16) each take the next block of the source,
// read it and write it at the same offset of the destination, so up to
// DEPTH requests are in the kernel at once. The destination is fsynced
// before the throughput is reported (unless --no-fsync), so the figure
// counts the data reaching the disk, not the page cache. On any error the
// program says which operation on which file failed, removes the partial
// destination it created, and exits 1.
#include "common.hpp"

#include <cowq/cowq.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <vector>

namespace {

struct copy_options {
  std::string source;
  std::string dest;
  int depth = 16;
  std::size_t block = 128 * 1024;
  bool fsync = true;
};

struct copy_state {
  cowq::file& in;
  cowq::file& out;
  std::uint64_t size;
  std::size_t block;
  // Each copier claims blocks with a relaxed fetch_add: nothing else is
  // published through it.
  std::atomic<std::uint64_t> next{0};
  // Set by the first copier that fails, so the others stop (relaxed: a
  // late look only copies a block more).
  std::atomic<bool> failed{false};
};

struct failure {
  std::string what;  // empty: no failure
};

cowq::task<failure> copy_blocks(copy_state& st, std::vector<std::byte>& buf);

cowq::task<failure> copier(copy_state& st, std::vector<std::byte>& buf) {
  failure f = co_await copy_blocks(st, buf);
  if (!f.what.empty()) st.failed.store(true, std::memory_order_relaxed);
  co_return f;
}

// Reads one block entirely (a short read in the middle of a file is
// retried from where it stopped), then writes it entirely.
cowq::task<failure> copy_blocks(copy_state& st, std::vector<std::byte>& buf) {
  while (!st.failed.load(std::memory_order_relaxed)) {
    const std::uint64_t off = st.next.fetch_add(st.block, std::memory_order_relaxed);
    if (off >= st.size) co_return failure{};
    const std::size_t len = static_cast<std::size_t>(std::min<std::uint64_t>(st.block, st.size - off));
    std::size_t got = 0;
    while (got < len) {
      auto r = co_await st.in.read_at(std::span(buf).subspan(got, len - got), off + got);
      if (!r) co_return failure{"reading the source: " + r.error.message()};
      if (r.value == 0) co_return failure{"the source shrank while it was copied"};
      got += r.value;
    }
    std::size_t put = 0;
    while (put < len) {
      auto w = co_await st.out.write_at(std::span<const std::byte>(buf).subspan(put, len - put),
                                        off + put);
      if (!w) co_return failure{"writing the destination: " + w.error.message()};
      put += w.value;
    }
  }
  co_return failure{};
}

struct copy_result {
  failure fail;
  std::uint64_t bytes = 0;
  bool created = false;
};

cowq::task<copy_result> copy_file(const copy_options& o) {
  copy_result res;
  auto in = co_await cowq::file::open(o.source, O_RDONLY);
  if (!in) {
    res.fail.what = "opening " + o.source + ": " + in.error.message();
    co_return res;
  }
  struct statx sx {};
  if (auto r = co_await in.value.stat(sx); !r) {
    res.fail.what = "stat of " + o.source + ": " + r.error.message();
    co_return res;
  }
  if (!S_ISREG(sx.stx_mode)) {
    res.fail.what = o.source + " is not a regular file";
    co_return res;
  }
  // Truncating the destination must never truncate the source.
  struct stat dst_st {};
  const bool existed = ::stat(o.dest.c_str(), &dst_st) == 0;
  if (existed && makedev(sx.stx_dev_major, sx.stx_dev_minor) == dst_st.st_dev &&
      sx.stx_ino == dst_st.st_ino) {
    res.fail.what = o.source + " and " + o.dest + " are the same file";
    co_return res;
  }
  auto out = co_await cowq::file::open(o.dest, O_WRONLY | O_CREAT | O_TRUNC,
                                       sx.stx_mode & 07777);
  if (!out) {
    res.fail.what = "opening " + o.dest + ": " + out.error.message();
    co_return res;
  }
  res.created = !existed;

  copy_state st{in.value, out.value, sx.stx_size, o.block};
  const int depth = static_cast<int>(
      std::max<std::uint64_t>(1, std::min<std::uint64_t>(static_cast<std::uint64_t>(o.depth),
                                                         (sx.stx_size + o.block - 1) / o.block)));
  // One buffer per copier, allocated before anything is in flight.
  std::vector<std::vector<std::byte>> buffers(static_cast<std::size_t>(depth),
                                              std::vector<std::byte>(o.block));
  std::vector<cowq::task<failure>> copiers;
  for (auto& b : buffers) copiers.push_back(copier(st, b));
  for (auto& f : co_await cowq::when_all(std::move(copiers)))
    if (!f.what.empty() && res.fail.what.empty()) res.fail = std::move(f);
  if (res.fail.what.empty() && o.fsync) {
    if (auto r = co_await out.value.fsync(); !r)
      res.fail.what = "fsync of " + o.dest + ": " + r.error.message();
  }
  if (auto r = co_await out.value.close(); !r && res.fail.what.empty())
    res.fail.what = "closing " + o.dest + ": " + r.error.message();
  co_await in.value.close();
  res.bytes = sx.stx_size;
  co_return res;
}

int usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s SOURCE DEST [--depth N] [--block-size BYTES] [--cpus LIST] "
               "[--no-fsync]\n",
               argv0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  copy_options o;
  cowq::runtime_options ro;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    unsigned long long v = 0;
    if (a == "--no-fsync") {
      o.fsync = false;
    } else if (a == "--depth" || a == "--block-size" || a == "--cpus") {
      if (i + 1 >= argc) return usage(argv[0]);
      const char* val = argv[++i];
      if (a == "--depth") {
        if (!examples::parse_number(val, 1, 4096, v)) return usage(argv[0]);
        o.depth = static_cast<int>(v);
      } else if (a == "--block-size") {
        if (!examples::parse_number(val, 1, 64ull << 20, v)) return usage(argv[0]);
        o.block = static_cast<std::size_t>(v);
      } else {
        try {
          ro.cpus = cowq::parse_cpu_list(val);
        } catch (const std::exception& e) {
          std::fprintf(stderr, "%s\n", e.what());
          return 2;
        }
      }
    } else if (!a.empty() && a[0] == '-') {
      return usage(argv[0]);
    } else {
      positional.push_back(a);
    }
  }
  if (positional.size() != 2) return usage(argv[0]);
  o.source = positional[0];
  o.dest = positional[1];

  try {
    cowq::runtime rt(ro);
    const auto start = std::chrono::steady_clock::now();
    copy_result r = cowq::sync_wait(rt, copy_file(o));
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!r.fail.what.empty()) {
      std::fprintf(stderr, "file_copy: %s\n", r.fail.what.c_str());
      if (r.created) ::unlink(o.dest.c_str());
      return 1;
    }
    const double mib = static_cast<double>(r.bytes) / (1024.0 * 1024.0);
    std::printf("copied %llu bytes in %.3f s: %.1f MiB/s (depth %d, block %zu, %s)\n",
                static_cast<unsigned long long>(r.bytes), secs, secs > 0 ? mib / secs : 0.0,
                o.depth, o.block, o.fsync ? "fsynced" : "not fsynced");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "file_copy: %s\n", e.what());
    return 1;
  }
  return 0;
}
