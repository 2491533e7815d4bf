#include "store/file_digest.h"

namespace forkd::store {

EntryHasher::EntryHasher(const FileEntry& like) {
  if (like.xxh3.empty()) {
    sha_ = std::make_unique<Sha256>();
  } else {
    xxh3_ = std::make_unique<Xxh3>();
  }
}

void EntryHasher::update(const void* data, size_t n) {
  if (sha_) {
    sha_->update(data, n);
  } else {
    xxh3_->update(data, n);
  }
}

std::string EntryHasher::digest() {
  FileEntry f;
  if (sha_) {
    f.sha256 = sha_->hex();
  } else {
    f.xxh3 = xxh3_->hex();
  }
  return f.digest();
}

Result<std::string> file_digest(const std::string& path, const FileEntry& like) {
  EntryHasher h(like);
  FORKD_TRY(read_chunks(path, [&](const char* d, size_t n) { h.update(d, n); }));
  return h.digest();
}

}  // namespace forkd::store
