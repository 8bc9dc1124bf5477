// hand_selections.h — sparse selections written by hand for the exchange tests, and the codec
// that decodes them. The codec never compresses: a test that calls compress() gets nothing.
#pragma once

#include <cddp/compressor.h>

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

namespace cddp::testing {

// Decodes a selection with the Compressor defaults (scatter-add of values at indices).
class PlainCodec final : public Compressor {
 public:
  std::string name() const override { return "plain"; }
  std::vector<c10::DeviceType> supported_devices() const override { return {c10::DeviceType::CPU}; }
  Compressed compress(const at::Tensor&, const CompressContext&) override { return {}; }
};

// A float selection of a 1-D tensor of `numel` entries; int32 indices, as the plugins send.
inline Compressed selection(const std::vector<int64_t>& idx, const std::vector<float>& vals, int64_t numel) {
  Compressed c;
  c.indices = idx.empty() ? at::empty({0}, at::kInt) : at::tensor(idx, at::kLong).to(at::kInt);
  c.values = vals.empty() ? at::empty({0}, at::kFloat) : at::tensor(vals, at::kFloat);
  c.numel = numel;
  c.shape = {numel};
  c.dtype = at::kFloat;
  return c;
}

}  // namespace cddp::testing
