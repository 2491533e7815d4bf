#include "hub/pack_manifest.h"

#include <set>

#include "base/files.h"
#include "base/json_get.h"
#include "hub/chunk_codec.h"
#include "store/chain.h"
#include "store/snapshot_store.h"

namespace forkd::hub {

namespace {

using Json = nlohmann::json;

Error bad_manifest(const std::string& what) {
  return Error(ErrorCode::kInvalidArgument, "bad pack manifest: " + what);
}

Status check_tag_name(const std::string& tag) {
  if (auto st = store::SnapshotStore::validate_tag(tag); !st) {
    return tl::unexpected(bad_manifest("tag name: " + st.error().message()));
  }
  return {};
}

}  // namespace

bool is_known_role(const std::string& role) {
  static const std::set<std::string> kRoles = {"vmstate", "memory", "memory_diff", "memory_pages",
                                               "kernel",  "initrd", "disk",        "base"};
  return kRoles.count(role) != 0;
}

std::vector<std::string> PackTag::data_roles() const {
  std::vector<std::string> out;
  for (const auto& [role, f] : meta.files) {
    if (!refs.count(role)) out.push_back(role);
  }
  return out;
}

uint64_t PackManifest::chunk_count(uint64_t size) { return (size + kChunkBytes - 1) / kChunkBytes; }

uint64_t PackManifest::data_bytes() const {
  uint64_t n = 0;
  for (const auto& t : tags) {
    for (const auto& role : t.data_roles()) n += t.meta.files.at(role).size;
  }
  return n;
}

Json PackManifest::to_json() const {
  Json reqs = Json::array();
  for (const auto& r : requires_tags)
    reqs.push_back({{"tag", r.tag}, {"content_hash", r.content_hash}});
  Json ts = Json::array();
  for (const auto& t : tags) {
    Json refs = Json::object();
    for (const auto& [role, ref] : t.refs) refs[role] = {{"tag", ref.tag}, {"role", ref.role}};
    ts.push_back({{"meta", t.meta.to_json()}, {"refs", refs}});
  }
  return {{"kind", "forkd-pack"},
          {"format", format},
          {"created_at", created_at},
          {"created_by", created_by},
          {"chunk_bytes", kChunkBytes},
          {"requires", reqs},
          {"tags", ts}};
}

Result<PackManifest> PackManifest::from_json(const Json& j) {
  if (!j.is_object()) return tl::unexpected(bad_manifest("not an object"));
  if (json::string_or(j, "kind", "") != "forkd-pack")
    return tl::unexpected(bad_manifest("not a forkd pack"));
  auto format = json::get_int<int>(j, "format");
  if (!format || *format < 1) return tl::unexpected(bad_manifest("missing format"));
  if (*format > kPackFormat) {
    return make_error(ErrorCode::kInvalidArgument,
                      "the pack has format " + std::to_string(*format) +
                          ", newer than this forkd reads (" + std::to_string(kPackFormat) +
                          "); upgrade forkd to unpack it");
  }
  if (json::get_int<uint64_t>(j, "chunk_bytes") != kChunkBytes) {
    return tl::unexpected(bad_manifest("unsupported chunk size"));
  }
  PackManifest m;
  m.format = *format;
  m.created_at = json::int_or<int64_t>(j, "created_at", 0);
  m.created_by = json::string_or(j, "created_by", "").substr(0, 200);

  // What a hash names: a required tag's content, or a tag earlier in the pack.
  std::map<std::string, std::string> known;  // tag -> content hash
  std::map<std::string, const store::SnapshotMeta*> in_pack;
  const Json* reqs = json::member(j, "requires");
  if (!reqs || !reqs->is_array() || reqs->size() > 1)
    return tl::unexpected(bad_manifest("bad requires"));
  for (const auto& r : *reqs) {
    PackRequirement req{json::string_or(r, "tag", ""), json::string_or(r, "content_hash", "")};
    FORKD_TRY(check_tag_name(req.tag));
    if (!is_lower_hex(req.content_hash, 64))
      return tl::unexpected(bad_manifest("bad required content hash"));
    known[req.tag] = req.content_hash;
    m.requires_tags.push_back(req);
  }
  const Json* ts = json::member(j, "tags");
  if (!ts || !ts->is_array() || ts->empty() ||
      ts->size() > static_cast<size_t>(store::kMaxChainDepth) + 1) {
    return tl::unexpected(bad_manifest("no tags, or more than a chain can hold"));
  }
  m.tags.reserve(ts->size());  // in_pack points into it
  for (const auto& t : *ts) {
    const Json* mj = json::member(t, "meta");
    if (!mj) return tl::unexpected(bad_manifest("a tag without meta"));
    auto meta = store::SnapshotMeta::from_json(*mj);
    if (!meta) return tl::unexpected(bad_manifest(meta.error().message()));
    if (meta->status != "ready")
      return tl::unexpected(bad_manifest("tag " + meta->tag + " is not ready"));
    if (known.count(meta->tag)) return tl::unexpected(bad_manifest("tag " + meta->tag + " twice"));
    if (meta->files.empty())
      return tl::unexpected(bad_manifest("tag " + meta->tag + " has no files"));
    // A pack vouches for each link's content hash (the sender settles it before packing).
    if (meta->content_pending)
      return tl::unexpected(bad_manifest("link " + meta->tag + " without its content hash"));
    for (const auto& [role, f] : meta->files) {
      if (!is_known_role(role) || f.size > kMaxPackFileBytes ||
          (!f.sha256.empty() && !is_lower_hex(f.sha256, 64))) {
        return tl::unexpected(bad_manifest("tag " + meta->tag + ": bad file " + role));
      }
    }
    if (meta->is_link() || meta->parent_tag) {
      if (!meta->parent_tag || !meta->parent_content_hash) {
        return tl::unexpected(bad_manifest("link " + meta->tag + " without a parent"));
      }
      auto it = known.find(*meta->parent_tag);
      if (it == known.end() || it->second != *meta->parent_content_hash) {
        return tl::unexpected(bad_manifest("link " + meta->tag + ": its parent " +
                                           *meta->parent_tag +
                                           " is neither earlier in the pack nor required"));
      }
    }
    PackTag pt;
    pt.meta = std::move(*meta);
    const Json* refs = json::member(t, "refs");
    if (refs && !refs->is_object()) return tl::unexpected(bad_manifest("bad refs"));
    static const Json kNoRefs = Json::object();
    for (const auto& [role, r] : (refs ? *refs : kNoRefs).items()) {
      FileRef ref{json::string_or(r, "tag", ""), json::string_or(r, "role", "")};
      if (!pt.meta.files.count(role) || !is_known_role(ref.role) ||
          (!ref.external() && !known.count(ref.tag))) {
        return tl::unexpected(bad_manifest("tag " + pt.meta.tag + ": bad reference for " + role));
      }
      // A reference inside the pack must name an identical file; one to a required tag is
      // checked against the receiver's copy.
      if (auto p = in_pack.find(ref.tag); p != in_pack.end()) {
        auto f = p->second->files.find(ref.role);
        if (f == p->second->files.end() || f->second.digest() != pt.meta.files[role].digest() ||
            f->second.size != pt.meta.files[role].size) {
          return tl::unexpected(bad_manifest("tag " + pt.meta.tag + ": reference for " + role +
                                             " names a different file"));
        }
      }
      pt.refs[role] = ref;
    }
    known[pt.meta.tag] = pt.meta.content_hash();
    m.tags.push_back(std::move(pt));
    in_pack[m.tags.back().meta.tag] = &m.tags.back().meta;
  }
  return m;
}

}  // namespace forkd::hub
