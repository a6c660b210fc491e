// The library's own spdlog logger.
#pragma once

#include <spdlog/spdlog.h>

#include <memory>

namespace cowq::detail {

// The "cowq" logger: quiet by default (warnings and errors), level taken
// from COWQ_LOG_LEVEL (trace, debug, info, warn, error, off) when set.
spdlog::logger& log();

}  // namespace cowq::detail
