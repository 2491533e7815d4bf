#pragma once
// Where forkd keeps things. No user string is joined into a path here unchecked.
#include <string>
#include <string_view>

namespace forkd {

// $FORKD_HOME, else /var/lib/forkd for root, else ~/.local/share/forkd.
std::string forkd_home();

// Directory of the running executable (/proc/self/exe).
std::string exe_dir();

// The guest/ asset directory (kernel config, image recipes): $FORKD_ASSETS_DIR, else
// <exe_dir>/../guest, else the source tree this binary was built from.
std::string assets_dir();

// The static guest agent: $FORKD_AGENT, else <exe_dir>/forkd-agent.
std::string agent_binary_path();

std::string_view forkd_version();

// True for names matching ^[A-Za-z0-9_-]{1,64}$ (tags, image names, sandbox ids).
bool is_safe_name(std::string_view name);

}  // namespace forkd
