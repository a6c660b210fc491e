#include "log.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string_view>

namespace cowq::detail {
namespace {

constexpr std::string_view kPattern = "[%H:%M:%S.%e] [%n] [%l] %v";

std::shared_ptr<spdlog::sinks::sink> default_sink() {
  auto s = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  s->set_pattern(std::string(kPattern));
  return s;
}

// spdlog::level::from_str maps anything it does not know to "off", which
// would silence errors over a typo; an unknown name is reported instead.
bool level_from_env(const char* text, spdlog::level::level_enum& out) {
  static constexpr std::pair<std::string_view, spdlog::level::level_enum> names[] = {
      {"trace", spdlog::level::trace}, {"debug", spdlog::level::debug},
      {"info", spdlog::level::info},   {"warn", spdlog::level::warn},
      {"warning", spdlog::level::warn}, {"error", spdlog::level::err},
      {"err", spdlog::level::err},     {"critical", spdlog::level::critical},
      {"off", spdlog::level::off}};
  for (auto& [name, level] : names)
    if (strcasecmp(text, std::string(name).c_str()) == 0) {
      out = level;
      return true;
    }
  return false;
}

// The logger's one sink, fixed for its lifetime: spdlog's logger reads its
// sink vector without a lock while logging, so changing that vector under
// running workers would race. Swapping the target here is safe instead.
class switch_sink final : public spdlog::sinks::sink {
 public:
  explicit switch_sink(std::shared_ptr<spdlog::sinks::sink> target) : target_(std::move(target)) {}

  void log(const spdlog::details::log_msg& msg) override {
    auto t = get();
    if (t->should_log(msg.level)) t->log(msg);
  }
  void flush() override { get()->flush(); }
  void set_pattern(const std::string& pattern) override { get()->set_pattern(pattern); }
  void set_formatter(std::unique_ptr<spdlog::formatter> f) override {
    get()->set_formatter(std::move(f));
  }

  void set_target(std::shared_ptr<spdlog::sinks::sink> t) {
    std::lock_guard g(mutex_);
    target_ = std::move(t);
  }

 private:
  // A copy, so a sink replaced while a message is on its way to it lives
  // until that message is written.
  std::shared_ptr<spdlog::sinks::sink> get() {
    std::lock_guard g(mutex_);
    return target_;
  }

  std::mutex mutex_;  // guards target_
  std::shared_ptr<spdlog::sinks::sink> target_;
};

switch_sink& the_switch() {
  static auto* s = new switch_sink(default_sink());  // never destroyed: see instance()
  return *s;
}

std::shared_ptr<spdlog::logger>& instance() {
  // Never destroyed: the logger exists before the first runtime and must
  // outlive the last, whose destruction may come from a static destructor.
  static auto* logger = new std::shared_ptr<spdlog::logger>([] {
    // The logger shares the switch without owning it, so it never dies
    // before a late message.
    auto l = std::make_shared<spdlog::logger>(
        "cowq", std::shared_ptr<spdlog::sinks::sink>(&the_switch(), [](auto*) {}));
    l->set_level(spdlog::level::warn);
    if (const char* env = std::getenv("COWQ_LOG_LEVEL"); env != nullptr && *env != '\0') {
      spdlog::level::level_enum level{};
      if (level_from_env(env, level))
        l->set_level(level);
      else
        l->warn("COWQ_LOG_LEVEL={} is not a level (trace, debug, info, warn, error, "
                "critical, off); staying at warn", env);
    }
    return l;
  }());
  return *logger;
}

}  // namespace

spdlog::logger& log() { return *instance(); }

}  // namespace cowq::detail

namespace cowq {

static_assert(static_cast<int>(log_level::trace) == spdlog::level::trace &&
              static_cast<int>(log_level::error) == spdlog::level::err &&
              static_cast<int>(log_level::off) == spdlog::level::off);

void set_log_level(log_level level) noexcept {
  detail::log().set_level(static_cast<spdlog::level::level_enum>(level));
}

log_level get_log_level() noexcept {
  return static_cast<log_level>(detail::log().level());
}

void set_log_sink(std::shared_ptr<spdlog::sinks::sink> sink) {
  detail::the_switch().set_target(sink ? std::move(sink) : detail::default_sink());
}

std::shared_ptr<spdlog::logger> logger() { return detail::instance(); }

}  // namespace cowq
