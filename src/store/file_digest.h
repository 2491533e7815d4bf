#pragma once
// Checking a file against its FileEntry, by the entry's kind of checksum (SHA-256 or XXH3-128).
#include <cstddef>
#include <memory>
#include <string>

#include "base/error.h"
#include "base/files.h"
#include "base/xxh3.h"
#include "store/snapshot_meta.h"

namespace forkd::store {

// Hashes bytes by the kind of like's checksum; digest() is comparable with like.digest().
class EntryHasher {
 public:
  explicit EntryHasher(const FileEntry& like);
  void update(const void* data, size_t n);
  std::string digest();  // call once

 private:
  std::unique_ptr<Sha256> sha_;
  std::unique_ptr<Xxh3> xxh3_;
};

// The digest of the file at path by the kind of like's checksum.
Result<std::string> file_digest(const std::string& path, const FileEntry& like);

}  // namespace forkd::store
