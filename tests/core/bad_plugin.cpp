// bad_plugin.cpp — builds the plugins the loader tests need, one per CDDP_TEST_<KIND>:
//   BADABI    a v2 entry point claiming ABI version 999: refused, naming both versions;
//   OLDTORCH  a v2 entry point built "against LibTorch 0.4.1": refused, naming both;
//   BADKIND   a v2 entry point declaring payload kind 7: refused, naming the plugin and kind;
//   BADINDEX  a v2 selection plugin whose selection holds the index numel (one past the end):
//             used by the optimizer, a clear error naming the plugin and the parameter;
//   V2BASE    a well-formed ABI-2 gather plugin built before encode_into was appended: its info
//             struct ends at wire_bytes (CDDP_PLUGIN_INFO_V2_BASE_SIZE). It loads, and the host
//             calls its encode(); the encode_into slot past its struct_size holds a function
//             that fails loudly, so a host that read past struct_size would be caught;
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

// A gather payload that is acc itself, as float32: D(p) = p, the mean of the ranks' decodes.
class Verbatim final : public cddp::Compressor {
 public:
  explicit Verbatim(const cddp::ParamMap&) {}
  std::string name() const override { return "v2base"; }
  cddp::Payload encode(const at::Tensor& acc, cddp::PluginState&, const cddp::CompressContext& ctx) override {
    cddp::Payload p;
    p.numel = acc.numel();
    p.shape = acc.sizes().vec();
    p.dtype = acc.scalar_type();
    p.world_size = ctx.world_size;
    p.parts = {acc.reshape(-1).to(at::kFloat).clone()};
    return p;
  }
  void decode_add_(const cddp::Payload& p, at::Tensor& dense) const override { dense.view(-1).add_(p.parts[0]); }
  void combine(const std::vector<cddp::Payload>& ranks, at::Tensor& average) const override {
    average.zero_();
    for (const auto& p : ranks) decode_add_(p, average);
    average.div_(double(ranks.size()));
  }
  int64_t wire_bytes(const std::vector<int64_t>& shape, at::ScalarType, double) const override {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return 4 * n;
  }
};

const cddp::ParamSpec kNoParams[] = {{"unused", cddp::ParamType::Bool, "false", 0, 0, "none"}};
using T = cddp::plugin_detail::Trampolines<Never>;

#if !defined(CDDP_TEST_LEGACY) && !defined(CDDP_TEST_BADINDEX) && !defined(CDDP_TEST_V2BASE)
cddp_plugin_info make_info(uint32_t abi, const char* name, const char* torch, int32_t kind) {
  return {abi, sizeof(cddp_plugin_info), name, "0", "refused on purpose", torch, CDDP_CXX11_ABI, kNoParams, 1,
          cddp_plugin_caps{kind, 0, 0, 0, -1.0, "cpu"}, &T::create, &T::destroy, &T::compress,
          &T::compress_with_feedback, &T::decompress_add, &T::encode, &T::decode_add, &T::combine, &T::decode_sum,
          &T::run_rounds, &T::state_specs, &T::wire_bytes};
}
#endif
}  // namespace

#if defined(CDDP_TEST_V2BASE)
namespace {
cddp_status encode_into_past_the_struct(cddp::Compressor*, const at::Tensor*, cddp::PluginState*,
                                        const cddp::CompressContext*, cddp::Payload*, char* err, size_t len) noexcept {
  cddp::plugin_detail::write_error(err, len, "v2base: the host called a function past the plugin's struct_size");
  return 1;
}
}  // namespace
CDDP_PLUGIN_EXPORT const cddp_plugin_info* cddp_compressor_plugin_v2() {
  using V = cddp::plugin_detail::Trampolines<Verbatim>;
  static const cddp_plugin_info info = {CDDP_PLUGIN_ABI_VERSION, static_cast<uint32_t>(CDDP_PLUGIN_INFO_V2_BASE_SIZE),
                                        "v2base", "0", "an ABI-2 plugin older than encode_into",
                                        CDDP_TORCH_VERSION_STRING, CDDP_CXX11_ABI, kNoParams, 1,
                                        CDDP_CAPS_GATHER("cpu"), &V::create, &V::destroy, &V::compress,
                                        &V::compress_with_feedback, &V::decompress_add, &V::encode, &V::decode_add,
                                        &V::combine, &V::decode_sum, &V::run_rounds, &V::state_specs,
                                        &V::wire_bytes, &encode_into_past_the_struct};
  return &info;
}
#elif defined(CDDP_TEST_LEGACY)
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
