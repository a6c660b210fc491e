// Stats as JSON and the stats socket: what a monitor sees, and that no
// client, path or request can break or hold up the runtime.
#include <cowq/cowq.hpp>

#include "test_util.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <dirent.h>
#include <fstream>
#include <cstring>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using cowq::test::voluntary_switches;
using cowq::test::wait_until;

namespace {

// A small JSON reader, strict enough to tell valid JSON from not.
struct json {
  enum kind_t { null, boolean, number, string, array, object } kind = null;
  bool b = false;
  std::string text;  // a string's value, a number's digits
  std::vector<json> items;
  std::vector<json> members;  // of an object, each with its key
  std::string key;

  const json* find(std::string_view k) const {
    for (auto& m : members)
      if (m.key == k) return &m;
    return nullptr;
  }
  // The member k; a test failure (and null) if it is missing.
  const json& operator[](std::string_view k) const {
    static const json none;
    if (const json* v = find(k)) return *v;
    ADD_FAILURE() << "no member \"" << k << "\"";
    return none;
  }
  std::uint64_t u64() const {
    EXPECT_EQ(kind, number);
    return kind == number ? std::stoull(text) : 0;
  }
  std::int64_t i64() const {
    EXPECT_EQ(kind, number);
    return kind == number ? std::stoll(text) : 0;
  }
  // The element of an array of objects whose "name" is n.
  const json* named(std::string_view n) const {
    for (auto& i : items)
      if (const json* v = i.find("name"); v != nullptr && v->text == n) return &i;
    return nullptr;
  }
};

class json_reader {
 public:
  explicit json_reader(std::string_view s) : s_(s) {}

  std::optional<json> document() {
    json v;
    if (!value(v)) return std::nullopt;
    ws();
    if (i_ != s_.size()) return std::nullopt;
    return v;
  }

 private:
  void ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  bool eat(char c) {
    ws();
    if (i_ < s_.size() && s_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  bool word(std::string_view w) {
    if (s_.substr(i_, w.size()) != w) return false;
    i_ += w.size();
    return true;
  }
  bool value(json& v) {
    ws();
    if (i_ >= s_.size()) return false;
    const char c = s_[i_];
    if (c == '{') return obj(v);
    if (c == '[') return arr(v);
    if (c == '"') {
      v.kind = json::string;
      return str(v.text);
    }
    if (word("true")) {
      v.kind = json::boolean;
      v.b = true;
      return true;
    }
    if (word("false")) {
      v.kind = json::boolean;
      return true;
    }
    if (word("null")) return true;
    return num(v);
  }
  bool num(json& v) {
    const std::size_t start = i_;
    auto digits = [&] {
      const std::size_t b = i_;
      while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') ++i_;
      return i_ > b;
    };
    if (i_ < s_.size() && s_[i_] == '-') ++i_;
    if (i_ < s_.size() && s_[i_] == '0')
      ++i_;
    else if (!digits())
      return false;
    if (i_ < s_.size() && s_[i_] == '.' && (++i_, !digits())) return false;
    if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
      ++i_;
      if (i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-')) ++i_;
      if (!digits()) return false;
    }
    v.kind = json::number;
    v.text = std::string(s_.substr(start, i_ - start));
    return true;
  }
  static void utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xc0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xe0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
      out += static_cast<char>(0xf0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    }
  }
  bool hex4(unsigned& cp) {
    if (i_ + 4 > s_.size()) return false;
    cp = 0;
    for (int k = 0; k < 4; ++k) {
      const char h = s_[i_++];
      cp <<= 4;
      if (h >= '0' && h <= '9') cp |= static_cast<unsigned>(h - '0');
      else if (h >= 'a' && h <= 'f') cp |= static_cast<unsigned>(h - 'a' + 10);
      else if (h >= 'A' && h <= 'F') cp |= static_cast<unsigned>(h - 'A' + 10);
      else return false;
    }
    return true;
  }
  bool str(std::string& out) {
    ++i_;  // the opening quote
    while (i_ < s_.size()) {
      const auto c = static_cast<unsigned char>(s_[i_++]);
      if (c == '"') return true;
      if (c < 0x20) return false;  // raw control characters are not JSON
      if (c != '\\') {
        out += static_cast<char>(c);
        continue;
      }
      if (i_ >= s_.size()) return false;
      const char e = s_[i_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned cp = 0;
          if (!hex4(cp)) return false;
          if (cp >= 0xd800 && cp < 0xdc00) {
            unsigned lo = 0;
            if (!word("\\u") || !hex4(lo) || lo < 0xdc00 || lo > 0xdfff) return false;
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          }
          utf8(out, cp);
          break;
        }
        default: return false;
      }
    }
    return false;
  }
  bool arr(json& v) {
    ++i_;
    v.kind = json::array;
    if (eat(']')) return true;
    do {
      v.items.emplace_back();
      if (!value(v.items.back())) return false;
    } while (eat(','));
    return eat(']');
  }
  bool obj(json& v) {
    ++i_;
    v.kind = json::object;
    if (eat('}')) return true;
    do {
      ws();
      if (i_ >= s_.size() || s_[i_] != '"') return false;
      std::string k;
      if (!str(k) || !eat(':')) return false;
      v.members.emplace_back();
      v.members.back().key = std::move(k);
      if (!value(v.members.back())) return false;
    } while (eat(','));
    return eat('}');
  }

  std::string_view s_;
  std::size_t i_ = 0;
};

std::optional<json> parse(std::string_view s) { return json_reader(s).document(); }

// A socket path of this test only, in the test's temporary directory.
std::string temp_socket_path(const char* what) {
  static std::atomic<int> n{0};
  std::string dir = ::testing::TempDir();
  if (dir.empty() || dir.back() != '/') dir += '/';
  std::string p = dir + "cowq-stats-" + std::to_string(::getpid()) + "-" + what + "-" +
                  std::to_string(n++) + ".sock";
  if (p.size() >= sizeof(sockaddr_un::sun_path)) p = "/tmp/" + p.substr(p.rfind('/') + 1);
  ::unlink(p.c_str());
  return p;
}

std::string abstract_name(const char* what) {
  static std::atomic<int> n{0};
  return "@cowq-stats-test-" + std::to_string(::getpid()) + "-" + what + "-" + std::to_string(n++);
}

socklen_t fill_address(const std::string& path, sockaddr_un& a) {
  a = {};
  a.sun_family = AF_UNIX;
  if (path[0] == '@') {
    std::memcpy(a.sun_path + 1, path.data() + 1, path.size() - 1);
    return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
  }
  std::memcpy(a.sun_path, path.data(), path.size());
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
}

// A connected client, or -1 with errno set. Reads time out after the
// deadline so that a server that never answers fails the test, not hangs it.
int connect_to(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  timeval tv{.tv_sec = cowq::test::kDeadline.count(), .tv_usec = 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_un a;
  const socklen_t len = fill_address(path, a);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), len) != 0) {
    const int e = errno;
    ::close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

bool send_all(int fd, std::string_view s) {
  while (!s.empty()) {
    const ssize_t n = ::send(fd, s.data(), s.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    s.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

// Reads one line (without its newline) from a client; nullopt at EOF, on an
// error or timeout. Keeps what followed the line for the next call. EINTR
// is no error: recv() with SO_RCVTIMEO gets it here now and then, no signal
// sent (most likely io_uring task work for what this thread submitted to a
// pool's ring, the constructor's first submissions, which interrupts a
// blocking call that has a timeout).
struct line_reader {
  explicit line_reader(int f) : fd(f) {}
  int fd;
  std::string buf;
  std::string error;  // why next() found no line
  std::optional<std::string> next() {
    for (;;) {
      if (auto nl = buf.find('\n'); nl != std::string::npos) {
        std::string line = buf.substr(0, nl);
        buf.erase(0, nl + 1);
        return line;
      }
      char chunk[65536];
      const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        error = n == 0 ? "EOF" : std::strerror(errno);
        return std::nullopt;
      }
      buf.append(chunk, static_cast<std::size_t>(n));
    }
  }
  // True if the server closes the connection (EOF or reset) with nothing more.
  bool closed() {
    char c;
    ssize_t n;
    do n = ::recv(fd, &c, 1, 0);
    while (n < 0 && errno == EINTR);
    return buf.empty() && (n == 0 || (n < 0 && errno == ECONNRESET));
  }
};

// One snapshot over a fresh connection.
json snapshot(const std::string& path) {
  const int fd = connect_to(path);
  EXPECT_GE(fd, 0) << path << ": " << std::strerror(errno);
  if (fd < 0) return {};
  EXPECT_TRUE(send_all(fd, "stats\n"));
  line_reader r{fd};
  auto line = r.next();
  ::close(fd);
  EXPECT_TRUE(line.has_value()) << r.error;
  if (!line) return {};
  auto j = parse(*line);
  EXPECT_TRUE(j.has_value()) << "not JSON: " << *line;
  return j ? *j : json{};
}

bool is_socket(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

// Threads of this process named name (from /proc/self/task/*/comm).
std::vector<pid_t> threads_named(const std::string& name) {
  std::vector<pid_t> out;
  DIR* d = ::opendir("/proc/self/task");
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream f(std::string("/proc/self/task/") + e->d_name + "/comm");
    std::string comm;
    std::getline(f, comm);
    if (comm == name) out.push_back(static_cast<pid_t>(std::atoi(e->d_name)));
  }
  ::closedir(d);
  return out;
}

// utime + stime of a thread of this process, in clock ticks.
long cpu_ticks(pid_t tid) {
  std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/stat");
  std::string line;
  std::getline(f, line);
  std::istringstream in(line.substr(line.rfind(')') + 2));
  std::string field;
  long utime = 0, stime = 0;
  // Fields 3.. after the comm; utime is field 14, stime 15.
  for (int k = 3; k <= 15 && in >> field; ++k) {
    if (k == 14) utime = std::stol(field);
    if (k == 15) stime = std::stol(field);
  }
  return utime + stime;
}

cowq::task<void> nothing() { co_return; }

// --- to_json --------------------------------------------------------------

TEST(stats_json, every_field_with_its_name) {
  cowq::runtime_stats s;
  cowq::pool_stats p;
  p.id = 3;
  p.name = "1H";
  p.cpu = 1;
  p.node = 0;
  p.highpri = true;
  p.workers = 4;
  p.idle = 2;
  p.running = 1;
  p.items_executed = 18446744073709551615ull;  // exact, not a double
  p.workers_created = 7;
  p.workers_destroyed = 3;
  p.pending = 5;
  p.timers = 6;
  p.io_in_flight = -1;
  p.peak_workers = 9;
  p.blocking_regions = 10;
  p.blocked_detected = 11;
  p.hogs_detected = 12;
  p.creation_failures = 13;
  p.maydays = 14;
  p.rescued = 15;
  p.recv_buffers_in_use = -16;
  p.recv_buffer_shortages = 17;
  s.pools.push_back(p);
  cowq::workqueue_stats w;
  w.name = "db";
  w.flags = 17;
  w.max_active = 16;
  w.queued = 100;
  w.active = 2;
  w.inactive = 3;
  w.completed = 95;
  w.escaped_exceptions = 1;
  w.rescued = 4;
  s.workqueues.push_back(w);
  s.live_coroutines = 42;

  const std::string text = cowq::to_json(s);
  EXPECT_EQ(text.find('\n'), std::string::npos);
  auto j = parse(text);
  ASSERT_TRUE(j.has_value()) << text;
  ASSERT_EQ((*j)["pools"].items.size(), 1u);
  const json& jp = (*j)["pools"].items[0];
  EXPECT_EQ(jp["id"].i64(), 3);
  EXPECT_EQ(jp["name"].text, "1H");
  EXPECT_EQ(jp["cpu"].i64(), 1);
  EXPECT_EQ(jp["node"].i64(), 0);
  EXPECT_EQ(jp["highpri"].kind, json::boolean);
  EXPECT_TRUE(jp["highpri"].b);
  EXPECT_EQ(jp["workers"].i64(), 4);
  EXPECT_EQ(jp["idle"].i64(), 2);
  EXPECT_EQ(jp["running"].i64(), 1);
  EXPECT_EQ(jp["items_executed"].u64(), 18446744073709551615ull);
  EXPECT_EQ(jp["workers_created"].u64(), 7u);
  EXPECT_EQ(jp["workers_destroyed"].u64(), 3u);
  EXPECT_EQ(jp["pending"].i64(), 5);
  EXPECT_EQ(jp["timers"].i64(), 6);
  EXPECT_EQ(jp["io_in_flight"].i64(), -1);
  EXPECT_EQ(jp["peak_workers"].i64(), 9);
  EXPECT_EQ(jp["blocking_regions"].u64(), 10u);
  EXPECT_EQ(jp["blocked_detected"].u64(), 11u);
  EXPECT_EQ(jp["hogs_detected"].u64(), 12u);
  EXPECT_EQ(jp["creation_failures"].u64(), 13u);
  EXPECT_EQ(jp["maydays"].u64(), 14u);
  EXPECT_EQ(jp["rescued"].u64(), 15u);
  EXPECT_EQ(jp["recv_buffers_in_use"].i64(), -16);
  EXPECT_EQ(jp["recv_buffer_shortages"].u64(), 17u);
  EXPECT_EQ(jp.members.size(), 23u) << "a field of pool_stats without its test";
  ASSERT_EQ((*j)["workqueues"].items.size(), 1u);
  const json& jw = (*j)["workqueues"].items[0];
  EXPECT_EQ(jw["name"].text, "db");
  EXPECT_EQ(jw["flags"].u64(), 17u);
  EXPECT_EQ(jw["max_active"].i64(), 16);
  EXPECT_EQ(jw["queued"].u64(), 100u);
  EXPECT_EQ(jw["active"].i64(), 2);
  EXPECT_EQ(jw["inactive"].i64(), 3);
  EXPECT_EQ(jw["completed"].u64(), 95u);
  EXPECT_EQ(jw["escaped_exceptions"].u64(), 1u);
  EXPECT_EQ(jw["rescued"].u64(), 4u);
  EXPECT_EQ(jw.members.size(), 9u) << "a field of workqueue_stats without its test";
  EXPECT_EQ((*j)["live_coroutines"].i64(), 42);
  EXPECT_EQ(j->members.size(), 3u);
}

TEST(stats_json, empty_snapshot) {
  auto j = parse(cowq::to_json({}));
  ASSERT_TRUE(j.has_value());
  EXPECT_TRUE((*j)["pools"].items.empty());
  EXPECT_TRUE((*j)["workqueues"].items.empty());
}

TEST(stats_json, names_are_escaped) {
  const std::string names[] = {
      "quote\"d",      "back\\slash",   "new\nline\r\t\b\f", std::string("nul\0byte", 8),
      "ctl\x01\x1f\x7f", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "</script>",
  };
  for (const auto& n : names) {
    cowq::runtime_stats s;
    s.workqueues.push_back({.name = n});
    const std::string text = cowq::to_json(s);
    auto j = parse(text);
    ASSERT_TRUE(j.has_value()) << text;
    EXPECT_EQ((*j)["workqueues"].items.at(0)["name"].text, n) << text;
  }
  // Bytes that are not UTF-8 become U+FFFD rather than invalid JSON text.
  for (const char* bad : {"\xff", "a\xc3", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80"}) {
    cowq::runtime_stats s;
    s.workqueues.push_back({.name = bad});
    const std::string text = cowq::to_json(s);
    for (unsigned char c : text) EXPECT_LT(c, 0x80) << text;
    auto j = parse(text);
    ASSERT_TRUE(j.has_value()) << text;
    EXPECT_NE((*j)["workqueues"].items.at(0)["name"].text.find("\xef\xbf\xbd"), std::string::npos);
  }
}

// --- the socket -----------------------------------------------------------

TEST(stats_socket, publishes_a_snapshot_whose_counters_move) {
  const std::string path = temp_socket_path("publish");
  cowq::runtime rt({.stats_socket = path});
  ASSERT_TRUE(is_socket(path));
  auto& wq = rt.alloc_workqueue("stats_test");

  json first = snapshot(path);
  EXPECT_EQ(first["version"].i64(), 1);
  EXPECT_EQ(first["name"].text, "cowq");
  EXPECT_EQ(first["pid"].i64(), ::getpid());
  std::vector<int> cpus;
  for (auto& c : first["cpus"].items) cpus.push_back(static_cast<int>(c.i64()));
  EXPECT_EQ(cpus, std::vector<int>(rt.cpus().begin(), rt.cpus().end()));
  EXPECT_EQ(first["numa_nodes"].i64(), rt.numa_nodes());
  const auto direct = rt.stats();
  ASSERT_EQ(first["pools"].items.size(), direct.pools.size());
  for (auto& p : direct.pools) EXPECT_NE(first["pools"].named(p.name), nullptr) << p.name;
  for (const char* n : {"events", "events_highpri", "events_unbound", "events_long", "stats_test"})
    EXPECT_NE(first["workqueues"].named(n), nullptr) << n;
  const json* mine = first["workqueues"].named("stats_test");
  ASSERT_NE(mine, nullptr);
  EXPECT_EQ((*mine)["completed"].u64(), 0u);

  constexpr int items = 200;
  for (int i = 0; i < items; ++i) wq.spawn(nothing());
  std::uint64_t completed = 0;
  std::int64_t last_ts = first["timestamp_ns"].i64();
  bool time_moves = true;
  EXPECT_TRUE(wait_until([&] {
    json s = snapshot(path);
    const std::int64_t ts = s["timestamp_ns"].i64();
    time_moves = time_moves && ts > last_ts;
    last_ts = ts;
    const json* w = s["workqueues"].named("stats_test");
    completed = w != nullptr ? (*w)["completed"].u64() : 0;
    return completed == items;
  })) << "completed stayed at " << completed;
  EXPECT_TRUE(time_moves);
  json after = snapshot(path);
  EXPECT_EQ((*after["workqueues"].named("stats_test"))["queued"].u64(), std::uint64_t{items});
}

TEST(stats_socket, the_file_is_private_and_gone_after_shutdown) {
  const std::string path = temp_socket_path("file");
  cowq::runtime rt({.stats_socket = path});
  struct stat st {};
  ASSERT_EQ(::lstat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  rt.shutdown();
  EXPECT_FALSE(exists(path));
  EXPECT_LT(connect_to(path), 0);
}

TEST(stats_socket, a_named_runtime_names_its_thread_and_snapshot) {
  const std::string path = temp_socket_path("name");
  cowq::runtime rt({.name = "svc \"x\"", .stats_socket = path});
  EXPECT_EQ(snapshot(path)["name"].text, "svc \"x\"");
  EXPECT_EQ(threads_named("svc \"x\"/stats").size(), 1u);
}

TEST(stats_socket, workqueue_names_arrive_intact) {
  const std::string path = temp_socket_path("names");
  cowq::runtime rt({.stats_socket = path});
  const std::string odd = "q\"uo\\te\n\x01\ttab \xc3\xa9";
  rt.alloc_workqueue(odd);
  EXPECT_NE(snapshot(path)["workqueues"].named(odd), nullptr);
}

TEST(stats_socket, serves_several_clients_at_once) {
  const std::string path = temp_socket_path("several");
  cowq::runtime rt({.stats_socket = path});
  constexpr int n = 8;
  std::vector<line_reader> clients;
  for (int i = 0; i < n; ++i) {
    const int fd = connect_to(path);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    clients.emplace_back(fd);
  }
  // Every client asks before any reads; then each asks twice in one write.
  for (auto& c : clients) ASSERT_TRUE(send_all(c.fd, "stats\n"));
  for (auto& c : clients) {
    auto line = c.next();
    ASSERT_TRUE(line.has_value()) << c.error;
    EXPECT_TRUE(parse(*line).has_value()) << *line;
  }
  for (auto& c : clients) ASSERT_TRUE(send_all(c.fd, "stats\r\nstats\n"));
  for (auto& c : clients) {
    for (int k = 0; k < 2; ++k) {
      auto line = c.next();
      ASSERT_TRUE(line.has_value()) << c.error;
      auto j = parse(*line);
      ASSERT_TRUE(j.has_value()) << *line;
      EXPECT_EQ((*j)["pid"].i64(), ::getpid());
    }
  }
  for (auto& c : clients) ::close(c.fd);
}

TEST(stats_socket, a_request_without_newline_before_eof_is_answered) {
  const std::string path = temp_socket_path("eof");
  cowq::runtime rt({.stats_socket = path});
  const int fd = connect_to(path);
  ASSERT_GE(fd, 0);
  // As `printf stats | nc -U PATH` does.
  ASSERT_TRUE(send_all(fd, "stats"));
  ::shutdown(fd, SHUT_WR);
  line_reader r{fd};
  auto line = r.next();
  ASSERT_TRUE(line.has_value()) << r.error;
  EXPECT_TRUE(parse(*line).has_value());
  EXPECT_TRUE(r.closed());
  ::close(fd);
}

TEST(stats_socket, bad_requests_get_an_error_and_break_nobody) {
  const std::string path = temp_socket_path("bad");
  cowq::runtime rt({.stats_socket = path});
  const int good = connect_to(path);
  const int garbage = connect_to(path);
  const int huge = connect_to(path);
  ASSERT_GE(good, 0);
  ASSERT_GE(garbage, 0);
  ASSERT_GE(huge, 0);
  line_reader g{good}, b{garbage}, h{huge};

  // An unknown request is answered with an error line; the connection stays.
  ASSERT_TRUE(send_all(garbage, std::string("bogus\n\xff\x00\x01\n", 10)));
  for (int k = 0; k < 2; ++k) {
    auto line = b.next();
    ASSERT_TRUE(line.has_value()) << b.error;
    auto j = parse(*line);
    ASSERT_TRUE(j.has_value()) << *line;
    EXPECT_EQ((*j)["error"].kind, json::string) << *line;
  }
  // An oversized request (no newline in sight) gets an error and a close.
  const std::string big(256 * 1024, 'x');
  std::jthread writer([&] { send_all(huge, big); });  // may stop at EPIPE
  auto line = h.next();
  ASSERT_TRUE(line.has_value()) << h.error;
  auto j = parse(*line);
  ASSERT_TRUE(j.has_value()) << *line;
  EXPECT_NE((*j)["error"].text.find("too long"), std::string::npos) << *line;
  EXPECT_TRUE(h.closed());
  writer.join();

  // The others are served as before.
  ASSERT_TRUE(send_all(garbage, "stats\n"));
  ASSERT_TRUE(send_all(good, "stats\n"));
  for (line_reader* r : {&b, &g}) {
    auto l = r->next();
    ASSERT_TRUE(l.has_value()) << r->error;
    auto s = parse(*l);
    ASSERT_TRUE(s.has_value()) << *l;
    EXPECT_NE(s->find("pools"), nullptr);
  }
  EXPECT_TRUE(snapshot(path).find("workqueues") != nullptr);
  for (int fd : {good, garbage, huge}) ::close(fd);
}

TEST(stats_socket, too_many_clients_are_told_so) {
  const std::string path = temp_socket_path("many");
  cowq::runtime rt({.stats_socket = path});
  std::vector<int> fds;
  // Served clients answer, so the server has surely accepted each of them
  // before the next connects.
  for (int i = 0;; ++i) {
    ASSERT_LT(i, 1000) << "no limit on clients";
    const int fd = connect_to(path);
    ASSERT_GE(fd, 0);
    fds.push_back(fd);
    line_reader r{fd};
    ASSERT_TRUE(send_all(fd, "stats\n") || errno == EPIPE);
    auto line = r.next();
    ASSERT_TRUE(line.has_value()) << r.error;
    auto j = parse(*line);
    ASSERT_TRUE(j.has_value()) << *line;
    if (j->find("error") != nullptr) {
      EXPECT_EQ((*j)["error"].text, "too many clients");
      EXPECT_TRUE(r.closed());
      break;
    }
  }
  EXPECT_GE(fds.size(), 2u);
  // A closed one makes room.
  ::close(fds.front());
  fds.erase(fds.begin());
  EXPECT_TRUE(wait_until([&] {
    const int fd = connect_to(path);
    if (fd < 0) return false;
    line_reader r{fd};
    bool ok = send_all(fd, "stats\n");
    auto line = ok ? r.next() : std::nullopt;
    ::close(fd);
    return line && line->find("\"pools\"") != std::string::npos;
  }));
  for (int fd : fds) ::close(fd);
}

// Connects, asks for far more than the socket buffers hold, never reads.
int lazy_client(const std::string& path) {
  const int fd = connect_to(path);
  if (fd < 0 || ::fcntl(fd, F_SETFL, O_NONBLOCK) != 0) return -1;
  std::string many;
  for (int i = 0; i < 4096; ++i) many += "stats\n";
  std::size_t sent = 0;
  for (int round = 0; round < 64; ++round) {
    const ssize_t n = ::send(fd, many.data(), many.size(), MSG_NOSIGNAL);
    if (n < 0) break;
    sent += static_cast<std::size_t>(n);
  }
  EXPECT_GT(sent, 0u);
  return fd;
}

TEST(stats_socket, a_client_that_never_reads_blocks_nothing) {
  const std::string path = temp_socket_path("noread");
  cowq::runtime rt({.stats_socket = path});
  auto& wq = rt.alloc_workqueue("after");
  const int lazy = lazy_client(path);
  ASSERT_GE(lazy, 0);
  // Others are still served, and the runtime still runs items.
  for (int i = 0; i < 3; ++i) EXPECT_NE(snapshot(path).find("pools"), nullptr);
  for (int i = 0; i < 10; ++i) wq.spawn(nothing());
  wq.flush();
  rt.shutdown();
  EXPECT_FALSE(exists(path));
  ::close(lazy);
}

TEST(stats_socket, a_client_that_never_reads_is_dropped) {
  const std::string path = temp_socket_path("dropped");
  cowq::runtime rt({.stats_socket = path});
  const int lazy = lazy_client(path);
  ASSERT_GE(lazy, 0);
  // The server closes it once it has taken nothing for the stall timeout
  // (10 s); the client sees the hang-up without reading a byte.
  pollfd p{lazy, POLLRDHUP, 0};
  const auto start = std::chrono::steady_clock::now();
  int n;
  do n = ::poll(&p, 1, 60'000);  // EINTR: see line_reader
  while (n < 0 && errno == EINTR);
  ASSERT_EQ(n, 1) << "never dropped";
  EXPECT_NE(p.revents & (POLLRDHUP | POLLHUP), 0);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 5s) << "dropped too eagerly";
  EXPECT_NE(snapshot(path).find("pools"), nullptr);
  ::close(lazy);
}

TEST(stats_socket, replaces_a_stale_socket_file) {
  const std::string path = temp_socket_path("stale");
  {
    // What a killed process leaves: a socket file nobody listens on.
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a;
    const socklen_t len = fill_address(path, a);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), len), 0);
    ASSERT_EQ(::listen(fd, 1), 0);
    ::close(fd);
  }
  ASSERT_TRUE(is_socket(path));
  cowq::runtime rt({.stats_socket = path});
  EXPECT_EQ(snapshot(path)["pid"].i64(), ::getpid());
  rt.shutdown();
  EXPECT_FALSE(exists(path));
}

TEST(stats_socket, a_live_listener_is_left_alone) {
  const std::string path = temp_socket_path("live");
  const int other = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
  sockaddr_un a;
  const socklen_t len = fill_address(path, a);
  ASSERT_EQ(::bind(other, reinterpret_cast<sockaddr*>(&a), len), 0);
  ASSERT_EQ(::listen(other, 4), 0);
  struct stat before {};
  ASSERT_EQ(::lstat(path.c_str(), &before), 0);
  {
    cowq::runtime rt({.stats_socket = path});
    auto& wq = rt.alloc_workqueue("works");
    wq.spawn(nothing());
    wq.flush();
    EXPECT_EQ(rt.stats().find_workqueue("works")->completed, 1u);
    struct stat during {};
    ASSERT_EQ(::lstat(path.c_str(), &during), 0);
    EXPECT_EQ(during.st_ino, before.st_ino);
    // Connections still reach the other listener.
    const int c = connect_to(path);
    ASSERT_GE(c, 0);
    EXPECT_TRUE(wait_until([&] {
      const int fd = ::accept(other, nullptr, nullptr);
      if (fd >= 0) ::close(fd);
      return fd >= 0;
    }));
    ::close(c);
  }
  struct stat after {};
  ASSERT_EQ(::lstat(path.c_str(), &after), 0);
  EXPECT_EQ(after.st_ino, before.st_ino);
  ::close(other);
  ::unlink(path.c_str());
}

TEST(stats_socket, a_path_that_is_not_a_socket_is_left_alone) {
  const std::string path = temp_socket_path("regular");
  {
    std::ofstream f(path);
    f << "precious";
  }
  {
    cowq::runtime rt({.stats_socket = path});
    auto& wq = rt.alloc_workqueue("works");
    wq.spawn(nothing());
    wq.flush();
    EXPECT_EQ(rt.stats().find_workqueue("works")->completed, 1u);
    EXPECT_TRUE(threads_named("cowq/stats").empty());
  }
  std::ifstream f(path);
  std::string content;
  std::getline(f, content);
  EXPECT_EQ(content, "precious");
  ::unlink(path.c_str());
}

TEST(stats_socket, unusable_paths_are_refused_without_failing_the_runtime) {
  for (const std::string& bad : {std::string("/nonexistent-dir/x.sock"), std::string(200, 'a'),
                                std::string("@"), "@" + std::string(200, 'b')}) {
    cowq::runtime rt({.stats_socket = bad});
    auto& wq = rt.alloc_workqueue("works");
    wq.spawn(nothing());
    wq.flush();
    EXPECT_EQ(rt.stats().find_workqueue("works")->completed, 1u) << bad;
    EXPECT_TRUE(threads_named("cowq/stats").empty()) << bad;
  }
}

TEST(stats_socket, the_environment_names_the_socket) {
  const std::string from_env = temp_socket_path("env");
  ASSERT_EQ(::setenv("COWQ_STATS_SOCKET", from_env.c_str(), 1), 0);
  {
    cowq::runtime rt;
    EXPECT_EQ(snapshot(from_env)["pid"].i64(), ::getpid());
  }
  EXPECT_FALSE(exists(from_env));
  // The option wins over the environment.
  const std::string from_option = temp_socket_path("option");
  {
    cowq::runtime rt({.stats_socket = from_option});
    EXPECT_TRUE(is_socket(from_option));
    EXPECT_FALSE(exists(from_env));
  }
  ::unsetenv("COWQ_STATS_SOCKET");
  {
    cowq::runtime rt;
    EXPECT_TRUE(threads_named("cowq/stats").empty());
  }
}

TEST(stats_socket, an_abstract_name_works) {
  const std::string name = abstract_name("abstract");
  {
    cowq::runtime rt({.stats_socket = name});
    EXPECT_EQ(snapshot(name)["pid"].i64(), ::getpid());
    // A second runtime cannot take the same name, and runs anyway.
    cowq::runtime second({.stats_socket = name});
    EXPECT_EQ(threads_named("cowq/stats").size(), 1u);
  }
  EXPECT_LT(connect_to(name), 0);
  EXPECT_EQ(errno, ECONNREFUSED);
}

TEST(stats_socket, the_thread_sleeps_while_nobody_asks) {
  const std::string path = temp_socket_path("idle");
  cowq::runtime rt({.stats_socket = path});
  const auto tids = threads_named("cowq/stats");
  ASSERT_EQ(tids.size(), 1u);
  const pid_t tid = tids[0];
  // Not pinned to a pool's CPU: it keeps the mask of the thread that made it.
  cpu_set_t mine, its;
  ASSERT_EQ(::sched_getaffinity(0, sizeof mine, &mine), 0);
  ASSERT_EQ(::sched_getaffinity(tid, sizeof its, &its), 0);
  EXPECT_TRUE(CPU_EQUAL(&mine, &its));

  // A client that was answered and stays connected, quiet: once the thread
  // sleeps again it can only be in poll(), and nothing may wake it.
  const int fd = connect_to(path);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(send_all(fd, "stats\n"));
  line_reader r{fd};
  ASSERT_TRUE(r.next().has_value());
  EXPECT_TRUE(wait_until([&] { return cowq::test::thread_state(tid) == 'S'; }));
  const long switches = voluntary_switches(tid);
  const long ticks = cpu_ticks(tid);
  // A measurement window, not a wait for anything: the thread must not run
  // at all in it.
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(voluntary_switches(tid), switches);
  EXPECT_EQ(cpu_ticks(tid), ticks);
  ::close(fd);
  rt.shutdown();
  EXPECT_TRUE(threads_named("cowq/stats").empty());
}

}  // namespace
