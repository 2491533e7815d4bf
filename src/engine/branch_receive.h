#pragma once
// A live branch into a chain link without a destination QEMU. The source migrates into a socket
// that forkd reads (engine/migration_stream.h): the main memory's pages are compared with the
// parent's as they arrive and only the ones that differ are written (store/link_receiver.h),
// and the rest of the stream (firmware pages, device state) becomes the tag's vmstate file, as
// a destination QEMU would have saved it with x-ignore-shared.
//
// Against a destination QEMU (engine/branch_migrate.cc), no second copy of the whole memory is
// written into new page cache, and the copy is bound by the source's sending thread alone. What
// it does not make: the link's assembled memory, which the first spawn of the tag then builds.
#include <cstdint>

#include "base/error.h"
#include "engine/branch_migrate.h"
#include "vmm/qmp_client.h"

namespace forkd::engine {

// req.link_parent_memory and req.link_dir must be set; src is the source's QMP connection and
// ram_bytes its exact RAM size. The source is running again when this returns.
Result<MigrateResult> receive_link(const MigrateRequest& req, vmm::QmpClient& src,
                                   uint64_t ram_bytes);

}  // namespace forkd::engine
