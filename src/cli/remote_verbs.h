#pragma once
// CLI client mode: the verbs that go through a forkd daemon when --url (or FORKD_URL) is set.
// Each local do_* function calls its remote_* counterpart first when g.url is non-empty.
#include <map>
#include <string>
#include <vector>

#include "cli/output.h"
#include "cli/remote_client.h"

namespace forkd::cli {

// extra: more spawn fields (limits, network).
int remote_fork(const GlobalOptions& g, const std::string& tag, int n, bool json,
                const nlohmann::json& extra = nlohmann::json::object());
int remote_ps(const GlobalOptions& g, bool json);
struct RemoteExecArgs {
  std::string id;
  std::vector<std::string> command;
  double timeout_s = 0;
  std::string cwd;                         // empty: the agent's
  std::map<std::string, std::string> env;  // added to the command's environment
  bool json = false;
};
int remote_exec(const GlobalOptions& g, const RemoteExecArgs& a);
int remote_eval(const GlobalOptions& g, const std::string& id, const std::string& code, bool json);
int remote_rm(const GlobalOptions& g, const std::vector<std::string>& ids, bool all, bool json);
int remote_images(const GlobalOptions& g, bool json);
// query: "", "?cascade=true" or "?force=true".
int remote_rmi(const GlobalOptions& g, const std::vector<std::string>& tags,
               const std::string& query);
struct RemoteSnapshotArgs {
  std::string tag, image;
  int memory_mib = 256;
  int cpus = 1;
  std::vector<std::string> exec, eval;
  bool force = false;
  bool cascade = false;
  bool json = false;
  std::string network = "none";
};
int remote_snapshot(const GlobalOptions& g, const RemoteSnapshotArgs& a);
// snapshot --from over the API: fork one child of `from`, run the warm-up steps in it, branch it
// (live) into `tag`, and delete the child whatever happened.
struct RemoteSnapshotFromArgs {
  std::string from, tag;
  std::vector<std::string> exec, eval;
  bool json = false;
};
int remote_snapshot_from(const GlobalOptions& g, const RemoteSnapshotFromArgs& a);

// A client for g.url with FORKD_TOKEN and FORKD_CA_CERT, for verbs that talk to the daemon
// themselves.
Result<RemoteClient> make_remote_client(const GlobalOptions& g);

// "forkd: VERB is not supported with --url ..." and kExitUsage.
int remote_unsupported(const std::string& verb);

}  // namespace forkd::cli
