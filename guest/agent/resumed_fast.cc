#include "resumed_fast.h"

#include <cstdint>

#include "flat_json.h"

namespace forkd::agent {

namespace {

std::optional<std::string_view> flat_string(const std::vector<FlatField>& fields,
                                            std::string_view key) {
  const FlatValue* v = find_flat(fields, key);
  if (v == nullptr || v->kind != FlatValue::Kind::kString) return std::nullopt;
  return v->text;
}

// Appends ,"key":value in the order nlohmann's std::map writes keys (the caller's order).
class ReplyWriter {
 public:
  void key(std::string_view k) {
    out_.push_back(out_.empty() ? '{' : ',');
    out_.push_back('"');
    out_.append(k);
    out_.append("\":");
  }
  void boolean(std::string_view k, bool b) {
    key(k);
    out_.append(b ? "true" : "false");
  }
  void number(std::string_view k, uint64_t n) {
    key(k);
    out_.append(std::to_string(n));
  }
  void string(std::string_view k, std::string_view s) {
    key(k);
    ok_ = ok_ && append_plain_json_string(&out_, s);
  }
  // The error of a failed step, as `name`; nothing for one that succeeded.
  void step_error(std::string_view name, const StepResult& step) {
    if (!step.ok) string(name, step.error);
  }
  std::optional<std::string> finish() {
    if (!ok_) return std::nullopt;
    out_.push_back('}');
    return std::move(out_);
  }

 private:
  std::string out_;
  bool ok_ = true;
};

}  // namespace

std::optional<FlatResumed> parse_flat_resumed(std::string_view json, std::string_view seed) {
  auto fields = scan_flat_object(json);
  if (!fields) return std::nullopt;
  auto op = flat_string(*fields, "op");
  if (op != "resumed") return std::nullopt;
  const FlatValue* id = find_flat(*fields, "id");
  if (id == nullptr || id->kind != FlatValue::Kind::kUnsigned || id->number == 0) {
    return std::nullopt;
  }
  auto epoch = flat_string(*fields, "epoch");
  auto sandbox_id = flat_string(*fields, "sandbox_id");
  auto hostname = flat_string(*fields, "hostname");
  const FlatValue* t = find_flat(*fields, "time_ns");
  const FlatValue* net = find_flat(*fields, "network");
  if (!epoch || !valid_epoch(*epoch) || !sandbox_id || !valid_sandbox_id(*sandbox_id) ||
      !hostname || !valid_hostname(*hostname) || t == nullptr ||
      t->kind != FlatValue::Kind::kUnsigned || t->number == 0 ||
      t->number > static_cast<uint64_t>(INT64_MAX) ||
      (net != nullptr && net->kind != FlatValue::Kind::kNull) || seed.size() < kMinSeedLen ||
      seed.size() > kMaxSeedLen) {
    return std::nullopt;
  }
  FlatResumed r;
  r.id = id->number;
  r.spec.epoch = *epoch;
  r.spec.sandbox_id = *sandbox_id;
  r.spec.hostname = *hostname;
  r.spec.time_ns = static_cast<int64_t>(t->number);
  r.spec.seed = seed;
  return r;
}

std::optional<std::string> resumed_reply_text(uint64_t id, const ResumedOutcome& o) {
  if (o.has_network) return std::nullopt;
  ReplyWriter w;
  w.step_error("clock_error", o.clock);
  w.boolean("clock_set", o.clock.ok);
  w.string("epoch", o.epoch);
  w.string("hostname", o.hostname);
  w.step_error("hostname_error", o.host);
  w.boolean("hostname_set", o.host.ok);
  w.number("id", id);
  w.boolean("ok", true);
  w.boolean("python_reseed_pending", o.python_reseed_pending);
  w.step_error("reseed_error", o.rng);
  w.boolean("reseeded", o.rng.ok);
  w.string("sandbox_id", o.sandbox_id);
  return w.finish();
}

}  // namespace forkd::agent
