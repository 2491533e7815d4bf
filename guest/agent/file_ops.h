#pragma once
// File ops: file_write, file_read, file_list, file_stat, mkdir, remove, rename, sync. Binary-safe;
// data moves in the frame's binary body. Errors: not_found for ENOENT, io_error otherwise,
// bad_request for invalid arguments. Thread-safe (no shared state).
#include "request.h"

namespace forkd::agent {

inline constexpr size_t kMaxListEntries = 8192;

AgentResult<OpReply> file_write_op(const Request& req);
AgentResult<OpReply> file_read_op(const Request& req);
AgentResult<OpReply> file_list_op(const Request& req);
AgentResult<OpReply> file_stat_op(const Request& req);
AgentResult<OpReply> mkdir_op(const Request& req);
AgentResult<OpReply> remove_op(const Request& req);
// rename: `from`, `to` (rename(2): atomic within a filesystem, replaces an existing `to`).
AgentResult<OpReply> rename_op(const Request& req);
// sync: sync(2), every filesystem's data and journal on disk. The host asks for it before it
// freezes a tag, so that no child of the tag commits its parent's journal again (each did, seconds
// after its restore: a journal write into its own disk overlay and the code to do it).
AgentResult<OpReply> sync_op(const Request& req);

// "file", "dir", "symlink" or "other" for a st_mode.
const char* file_type_name(unsigned mode);

}  // namespace forkd::agent
