// Logging: cowq's own named logger, its level, a user's sink, and the
// events it reports.
#include <cowq/cowq.hpp>
#include <cowq/log.hpp>

#include "test_util.hpp"

#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <mutex>
#include <sched.h>
#include <spawn.h>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

extern char** environ;

using namespace std::chrono_literals;
using cowq::test::first_allowed_cpu;
using cowq::test::wait_until;

namespace {

// Keeps every message, formatted with the level in front.
class capture_sink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  std::vector<std::string> lines() {
    std::lock_guard g(mutex_);
    return lines_;
  }
  bool contains(const std::string& text) {
    for (auto& l : lines())
      if (l.find(text) != std::string::npos) return true;
    return false;
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    lines_.push_back(std::string(spdlog::level::to_string_view(msg.level).data()) + ": " +
                     std::string(msg.payload.data(), msg.payload.size()));
  }
  void flush_() override {}

 private:
  std::vector<std::string> lines_;  // guarded by base_sink's mutex_
};

class logging : public ::testing::Test {
 protected:
  void SetUp() override {
    saved_ = cowq::get_log_level();
    cowq::set_log_sink(sink_);
  }
  void TearDown() override {
    cowq::set_log_sink(nullptr);
    cowq::set_log_level(saved_);
  }
  cowq::log_level saved_{};
  std::shared_ptr<capture_sink> sink_ = std::make_shared<capture_sink>();
};

TEST_F(logging, is_a_named_logger_quiet_by_default) {
  if (std::getenv("COWQ_LOG_LEVEL") != nullptr) GTEST_SKIP() << "COWQ_LOG_LEVEL is set";
  EXPECT_EQ(cowq::logger()->name(), "cowq");
  EXPECT_EQ(saved_, cowq::log_level::warn);
}

TEST_F(logging, pools_and_workers_at_debug_reach_the_users_sink) {
  cowq::set_log_level(cowq::log_level::debug);
  const int cpu = first_allowed_cpu();
  {
    cowq::runtime rt({.cpus = {cpu}});
  }
  EXPECT_TRUE(sink_->contains("debug: pool 0: created on CPU " + std::to_string(cpu)));
  EXPECT_TRUE(sink_->contains("debug: pool 0H: created on CPU"));
  EXPECT_TRUE(sink_->contains("debug: pool u0: created unbound"));
  EXPECT_TRUE(sink_->contains("debug: pool 0: created worker " + std::string("cowq/") +
                              std::to_string(cpu) + ":0"));
  EXPECT_TRUE(sink_->contains("debug: pool 0: destroyed"));
}

TEST_F(logging, the_level_filters) {
  cowq::set_log_level(cowq::log_level::warn);
  EXPECT_EQ(cowq::get_log_level(), cowq::log_level::warn);
  {
    cowq::runtime rt({.cpus = {first_allowed_cpu()}});
  }
  for (auto& l : sink_->lines()) EXPECT_EQ(l.rfind("debug:", 0), std::string::npos) << l;
  for (auto& l : sink_->lines()) EXPECT_EQ(l.rfind("info:", 0), std::string::npos) << l;
}

TEST_F(logging, an_escaped_exception_is_an_error_line) {
  cowq::runtime rt({.cpus = {first_allowed_cpu()}});
  auto& wq = rt.alloc_workqueue("throws");
  wq.spawn([]() -> cowq::task<void> {
    throw std::runtime_error("boom from a task");
    co_return;
  }());
  ASSERT_TRUE(wait_until([&] { return sink_->contains("boom from a task"); }));
  EXPECT_TRUE(sink_->contains("error: coroutine spawned on 'throws' threw: boom from a task"));
}

TEST_F(logging, a_blocked_worker_found_by_the_watchdog_is_a_debug_line) {
  cowq::set_log_level(cowq::log_level::debug);
  cowq::runtime rt({.cpus = {first_allowed_cpu()}});
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  std::atomic<bool> behind_ran{false};
  auto& wq = rt.system_wq();
  // Blocks in read() with no annotation until the pipe is written.
  wq.spawn([](int fd) -> cowq::task<void> {
    char c;
    [[maybe_unused]] auto n = ::read(fd, &c, 1);
    co_return;
  }(fds[0]));
  wq.spawn([](std::atomic<bool>& ran) -> cowq::task<void> {
    ran = true;
    co_return;
  }(behind_ran));
  const bool ran = wait_until([&] { return behind_ran.load(); });
  ASSERT_EQ(::write(fds[1], "x", 1), 1);
  ASSERT_TRUE(ran);
  EXPECT_TRUE(wait_until([&] { return sink_->contains("blocked in its item"); }));
  rt.shutdown();
  ::close(fds[0]);
  ::close(fds[1]);
}

TEST_F(logging, never_through_spdlogs_default_logger) {
  auto theirs = std::make_shared<capture_sink>();
  auto saved_default = spdlog::default_logger();
  spdlog::set_default_logger(std::make_shared<spdlog::logger>("app", theirs));
  spdlog::default_logger()->set_level(spdlog::level::trace);
  cowq::set_log_level(cowq::log_level::trace);
  {
    cowq::runtime rt({.cpus = {first_allowed_cpu()}});
    auto& wq = rt.alloc_workqueue("throws");
    wq.spawn([]() -> cowq::task<void> {
      throw std::runtime_error("boom");
      co_return;
    }());
  }
  spdlog::set_default_logger(saved_default);
  EXPECT_FALSE(sink_->lines().empty());
  EXPECT_TRUE(theirs->lines().empty());
}

TEST_F(logging, a_sink_swapped_while_workers_log_loses_nothing_it_was_given) {
  cowq::set_log_level(cowq::log_level::info);
  std::atomic<bool> stop{false};
  std::thread swapper([&] {
    while (!stop) {
      cowq::set_log_sink(std::make_shared<capture_sink>());
      cowq::set_log_sink(sink_);
    }
  });
  std::thread writer([&] {
    for (int i = 0; i < 2000; ++i) cowq::logger()->info("line {}", i);
  });
  writer.join();
  stop = true;
  swapper.join();
  cowq::set_log_sink(sink_);
  cowq::logger()->info("last");
  EXPECT_TRUE(sink_->contains("info: last"));
}

// Runs this test binary again with COWQ_LOG_LEVEL set; the child checks the
// level the logger starts at (the variable is read once, at first use).
int run_child(const char* level, const char* expect) {
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e)
    if (std::strncmp(*e, "COWQ_LOG_LEVEL=", 15) != 0 &&
        std::strncmp(*e, "COWQ_LOG_TEST_EXPECT=", 21) != 0)
      env_strings.emplace_back(*e);
  env_strings.push_back(std::string("COWQ_LOG_LEVEL=") + level);
  env_strings.push_back(std::string("COWQ_LOG_TEST_EXPECT=") + expect);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string self = "/proc/self/exe";
  std::string filter = "--gtest_filter=log_env.child_checks_its_level";
  char* argv[] = {self.data(), filter.data(), nullptr};
  pid_t pid;
  if (::posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv, envp.data()) != 0) return -1;
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(log_env, child_checks_its_level) {
  const char* expect = std::getenv("COWQ_LOG_TEST_EXPECT");
  if (expect == nullptr) GTEST_SKIP() << "run by log_env.the_environment_sets_the_level";
  const std::string e = expect;
  EXPECT_EQ(static_cast<int>(cowq::get_log_level()),
            e == "debug" ? static_cast<int>(cowq::log_level::debug)
            : e == "off" ? static_cast<int>(cowq::log_level::off)
                         : static_cast<int>(cowq::log_level::warn));
}

TEST(log_env, the_environment_sets_the_level) {
  if (std::getenv("COWQ_LOG_TEST_EXPECT") != nullptr) GTEST_SKIP() << "in the child";
  EXPECT_EQ(run_child("debug", "debug"), 0);
  EXPECT_EQ(run_child("OFF", "off"), 0);
  // A typo leaves the default (and says so) rather than silencing errors.
  EXPECT_EQ(run_child("loud", "warn"), 0);
}

}  // namespace
