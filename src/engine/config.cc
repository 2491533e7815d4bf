#include "engine/config.h"

#include <sys/random.h>

#include <cstdlib>

#include "base/paths.h"

namespace forkd::engine {

EngineConfig EngineConfig::from_env() {
  EngineConfig c;
  c.home = forkd_home();
  c.assets = assets_dir();
  c.agent = agent_binary_path();
  if (const char* a = std::getenv("FORKD_ACCEL"); a && *a) c.accel = a;
  if (const char* t = std::getenv("FORKD_TB_SIZE_MIB"); t && *t) c.tb_size_mib = std::atoi(t);
  if (const char* m = std::getenv("FORKD_MACHINE"); m && std::string(m) == "pc") {
    c.machine = vmm::MachineType::kPc;
  }
  return c;
}

std::string random_bytes(size_t n) {
  std::string out(n, '\0');
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::getrandom(out.data() + got, n - got, 0);
    if (r > 0) got += static_cast<size_t>(r);
  }
  return out;
}

std::string random_hex(size_t n_bytes) {
  static const char kHex[] = "0123456789abcdef";
  std::string raw = random_bytes(n_bytes);
  std::string out;
  for (unsigned char c : raw) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

}  // namespace forkd::engine
