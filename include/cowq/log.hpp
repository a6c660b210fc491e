// The library's logging: one named spdlog logger, "cowq".
//
// cowq never writes through spdlog's default logger. Its own logger is
// quiet by default (warnings and errors to stderr); the level comes from
// the COWQ_LOG_LEVEL environment variable (trace, debug, info, warn, error,
// critical, off) when the logger is first used, and from set_log_level()
// at any time after.
//
// This header does not include spdlog: code that only sets the level pays
// nothing for it. To hand cowq a sink of your own, include the spdlog sink
// you want and pass it to set_log_sink().
#pragma once

#include <memory>

namespace spdlog {
class logger;
namespace sinks {
class sink;
}
}  // namespace spdlog

namespace cowq {

// The same order and meaning as spdlog's levels.
enum class log_level { trace, debug, info, warn, error, critical, off };

// Thread safety: every function here may be called from any thread at any
// time, including while workers log.
void set_log_level(log_level level) noexcept;
log_level get_log_level() noexcept;

// Replaces the logger's sinks with this one (null restores the default
// stderr sink). The sink's own level and pattern are left as they are;
// the logger's level still filters first.
void set_log_sink(std::shared_ptr<spdlog::sinks::sink> sink);

// The logger itself, for anything else spdlog offers (flush policy,
// several sinks, registering it with spdlog::register_logger).
std::shared_ptr<spdlog::logger> logger();

}  // namespace cowq
