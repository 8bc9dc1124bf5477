// event_codec.h — private to cddp_metrics: encodes and decodes one Event message with the
// protoc-generated code (proto/event.proto).
//
// Why a separate, narrow interface: libprotobuf from Debian is built with the C++11 string
// ABI, while a LibTorch wheel may require _GLIBCXX_USE_CXX11_ABI=0 for everything that
// touches LibTorch. event_codec.cpp and the generated code are therefore compiled without
// LibTorch's flags (in cddp_metrics_proto) and talk to the rest of the library only through
// types whose layout and mangled names do not depend on that ABI choice: pointers, sizes,
// numbers and std::vector of PODs — never std::string. It will not frame records or do I/O.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace cddp::metrics_detail {

struct ScalarIn {
  const char* tag;
  size_t tag_len;
  float value;
};

// A serialized Event{wall_time, step, summary{value: [{tag, simple_value}...]}}.
std::vector<uint8_t> encode_scalars_event(double wall_time, int64_t step, const ScalarIn* values, size_t count);
// A serialized Event{wall_time, file_version}.
std::vector<uint8_t> encode_file_version_event(double wall_time, const char* version, size_t version_len);

struct DecodedValue {
  const char* tag;
  size_t tag_len;
  bool has_simple_value;
  float simple_value;
};

struct DecodedEvent {
  double wall_time = 0;
  int64_t step = 0;
  int what = 0;  // 0: neither, 1: file_version, 2: summary
  const char* file_version = nullptr;
  size_t file_version_len = 0;
  std::vector<DecodedValue> values;  // pointers valid only during the sink call
};

using EventSink = void (*)(void* context, const DecodedEvent& event);

// Parses `size` bytes as an Event and hands it to `sink`. False when the bytes are not a
// valid Event message.
bool decode_event(const uint8_t* data, size_t size, EventSink sink, void* context);

}  // namespace cddp::metrics_detail
