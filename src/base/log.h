#pragma once
// Named spdlog loggers, one per subsystem, writing key=value lines to stderr.
#include <spdlog/spdlog.h>

#include <memory>
#include <string>

namespace forkd {

// Sets the level for all loggers: from $FORKD_LOG (trace|debug|info|warn|error|off) when set,
// else default_level.
void init_logging(spdlog::level::level_enum default_level);

// The logger for a subsystem ("vmm", "engine", ...), created on first use.
std::shared_ptr<spdlog::logger> logger(const std::string& name);

}  // namespace forkd
