// event_codec.cpp — Event (de)serialization through the protoc-generated lite classes.
// Compiled without LibTorch's ABI flags; see event_codec.h. No framing, no I/O.
#include "event_codec.h"

#include "event.pb.h"

#include <string>

namespace cddp::metrics_detail {
namespace {

std::vector<uint8_t> serialize(const cddp::tb::Event& event) {
  std::vector<uint8_t> out(event.ByteSizeLong());
  if (!out.empty()) event.SerializeWithCachedSizesToArray(out.data());
  return out;
}

}  // namespace

std::vector<uint8_t> encode_scalars_event(double wall_time, int64_t step, const ScalarIn* values, size_t count) {
  cddp::tb::Event event;
  event.set_wall_time(wall_time);
  event.set_step(step);
  cddp::tb::Summary* summary = event.mutable_summary();
  for (size_t i = 0; i < count; ++i) {
    cddp::tb::Summary::Value* v = summary->add_value();
    v->set_tag(std::string(values[i].tag, values[i].tag_len));
    v->set_simple_value(values[i].value);
  }
  return serialize(event);
}

std::vector<uint8_t> encode_file_version_event(double wall_time, const char* version, size_t version_len) {
  cddp::tb::Event event;
  event.set_wall_time(wall_time);
  event.set_file_version(std::string(version, version_len));
  return serialize(event);
}

bool decode_event(const uint8_t* data, size_t size, EventSink sink, void* context) {
  cddp::tb::Event event;
  if (!event.ParseFromArray(data, static_cast<int>(size))) return false;
  DecodedEvent out;
  out.wall_time = event.wall_time();
  out.step = event.step();
  if (event.what_case() == cddp::tb::Event::kFileVersion) {
    out.what = 1;
    out.file_version = event.file_version().data();
    out.file_version_len = event.file_version().size();
  } else if (event.what_case() == cddp::tb::Event::kSummary) {
    out.what = 2;
    for (const auto& v : event.summary().value()) {
      const bool has = v.value_case() == cddp::tb::Summary::Value::kSimpleValue;
      out.values.push_back(DecodedValue{v.tag().data(), v.tag().size(), has, has ? v.simple_value() : 0.0f});
    }
  }
  sink(context, out);
  return true;
}

}  // namespace cddp::metrics_detail
