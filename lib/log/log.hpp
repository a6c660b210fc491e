// The library's own spdlog logger (the public face is cowq/log.hpp).
#pragma once

#include <cowq/log.hpp>
#include <spdlog/spdlog.h>

namespace cowq::detail {

// The "cowq" logger: quiet by default (warnings and errors), level taken
// from COWQ_LOG_LEVEL when set.
spdlog::logger& log();

}  // namespace cowq::detail
