// bad_plugin.cpp — builds the plugins the loader tests need, one per CDDP_TEST_<KIND>:
//   BADABI    a v2 entry point claiming ABI version 999: refused, naming both versions;
//   OLDTORCH  a v2 entry point built "against LibTorch 0.4.1": refused, naming both;
//   BADKIND   a v2 entry point declaring payload kind 7: refused, naming the plugin and kind;
//   BADINDEX  a v2 selection plugin whose selection holds the index numel (one past the end):
//             used by the optimizer, a clear error naming the plugin and the parameter;
//   LEGACY    a well-formed ABI-1 plugin (the old macro, as a plugin written before ABI 2 has):
//             adapted, its capabilities read from its compressor (a fixed-density sparsifier
//             keeping the first k entries, with a fused feedback that says so).
#include <cddp/plugin_abi.h>

#include <ATen/ATen.h>

namespace {
class Never final : public cddp::Compressor {
 public:
  explicit Never(const cddp::ParamMap&) {}
  std::string name() const override { return "never"; }
  std::vector<c10::DeviceType> supported_devices() const override { return {c10::DeviceType::CPU}; }
  cddp::Compressed compress(const at::Tensor&, const cddp::CompressContext&) override {
    TORCH_CHECK(false, "a refused plugin must never be called");
  }
};

// Keeps the first ceil(ratio·numel) entries: simple enough to check by hand.
class FirstK final : public cddp::Compressor {
 public:
  explicit FirstK(const cddp::ParamMap& p) {
    ratio_ = cddp::ParamReader("legacy", kSpecs, 1, p).get_double("ratio", 0.25);
  }
  std::string name() const override { return "legacy"; }
  std::vector<c10::DeviceType> supported_devices() const override { return {c10::DeviceType::CPU}; }
  cddp::Compressed compress(const at::Tensor& g, const cddp::CompressContext&) override {
    cddp::Compressed c;
    c.numel = g.numel();
    c.shape = g.sizes().vec();
    c.dtype = g.scalar_type();
    const int64_t k = cddp::k_for_ratio(ratio_, c.numel);
    c.values = g.reshape(-1).narrow(0, 0, k).clone();
    c.indices = at::arange(k, at::TensorOptions(cddp::index_dtype_for(c.numel)));
    return c;
  }
  double default_density() const noexcept override { return ratio_; }
  bool has_fused_feedback() const noexcept override { return true; }
  static constexpr cddp::ParamSpec kSpecs[] = {{"ratio", cddp::ParamType::Double, "0.25", 1e-9, 1, "density"}};

 private:
  double ratio_;
};

// Selects entry 0 and entry numel (out of range).
class PastTheEnd final : public cddp::Compressor {
 public:
  explicit PastTheEnd(const cddp::ParamMap&) {}
  std::string name() const override { return "badindex"; }
  cddp::Compressed compress(const at::Tensor& g, const cddp::CompressContext&) override {
    cddp::Compressed c;
    c.numel = g.numel();
    c.shape = g.sizes().vec();
    c.dtype = g.scalar_type();
    c.values = at::ones({2}, g.options());
    c.indices = at::tensor({int32_t(0), int32_t(c.numel)}, at::kInt);
    return c;
  }
};

const cddp::ParamSpec kNoParams[] = {{"unused", cddp::ParamType::Bool, "false", 0, 0, "none"}};
using T = cddp::plugin_detail::Trampolines<Never>;

#if !defined(CDDP_TEST_LEGACY) && !defined(CDDP_TEST_BADINDEX)
cddp_plugin_info make_info(uint32_t abi, const char* name, const char* torch, int32_t kind) {
  return {abi, sizeof(cddp_plugin_info), name, "0", "refused on purpose", torch, CDDP_CXX11_ABI, kNoParams, 1,
          cddp_plugin_caps{kind, 0, 0, 0, -1.0, "cpu"}, &T::create, &T::destroy, &T::compress,
          &T::compress_with_feedback, &T::decompress_add, &T::encode, &T::decode_add, &T::combine, &T::decode_sum,
          &T::run_rounds, &T::state_specs, &T::wire_bytes};
}
#endif
}  // namespace

#if defined(CDDP_TEST_LEGACY)
CDDP_DEFINE_COMPRESSOR_PLUGIN(FirstK, "legacy", "0.9.0", "an ABI-1 plugin, adapted", FirstK::kSpecs, "cpu")
#elif defined(CDDP_TEST_BADINDEX)
CDDP_DEFINE_COMPRESSOR_PLUGIN_V2(PastTheEnd, "badindex", "0", "selects one past the end", kNoParams,
                                 CDDP_CAPS_SELECTION(-1.0, "cpu"))
#else
CDDP_PLUGIN_EXPORT const cddp_plugin_info* cddp_compressor_plugin_v2() {
#if defined(CDDP_TEST_BADABI)
  static const cddp_plugin_info info = make_info(999u, "badabi", CDDP_TORCH_VERSION_STRING, CDDP_PAYLOAD_GATHER);
#elif defined(CDDP_TEST_OLDTORCH)
  static const cddp_plugin_info info = make_info(CDDP_PLUGIN_ABI_VERSION, "oldtorch", "0.4.1", CDDP_PAYLOAD_GATHER);
#else
  static const cddp_plugin_info info = make_info(CDDP_PLUGIN_ABI_VERSION, "badkind", CDDP_TORCH_VERSION_STRING, 7);
#endif
  return &info;
}
#endif
