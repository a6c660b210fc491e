#include "log.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <cstdlib>
#include <mutex>

namespace cowq::detail {

spdlog::logger& log() {
  static std::shared_ptr<spdlog::logger> logger = [] {
    auto l = std::make_shared<spdlog::logger>(
        "cowq", std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
    l->set_level(spdlog::level::warn);
    if (const char* env = std::getenv("COWQ_LOG_LEVEL"))
      l->set_level(spdlog::level::from_str(env));
    l->set_pattern("[%H:%M:%S.%e] [%n] [%l] %v");
    return l;
  }();
  return *logger;
}

}  // namespace cowq::detail
