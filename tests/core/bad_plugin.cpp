// bad_plugin.cpp — builds plugins the loader must refuse: one claiming another ABI version
// (CDDP_TEST_BADABI), one claiming another LibTorch version (CDDP_TEST_OLDTORCH).
#include <cddp/plugin_abi.h>

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
const cddp::ParamSpec kNoParams[] = {{"unused", cddp::ParamType::Bool, "false", 0, 0, "none"}};
using T = cddp::plugin_detail::Trampolines<Never>;
}  // namespace

CDDP_PLUGIN_EXPORT const cddp_plugin_info* cddp_compressor_plugin_v1() {
#if defined(CDDP_TEST_BADABI)
  static const cddp_plugin_info info = {999u, sizeof(cddp_plugin_info), "badabi", "0", "wrong ABI",
                                        CDDP_TORCH_VERSION_STRING, CDDP_CXX11_ABI, "cpu", kNoParams, 1,
                                        &T::create, &T::destroy, &T::compress, &T::compress_with_feedback,
                                        &T::decompress_add};
#else
  static const cddp_plugin_info info = {CDDP_PLUGIN_ABI_VERSION, sizeof(cddp_plugin_info), "oldtorch", "0",
                                        "wrong LibTorch", "0.4.1", CDDP_CXX11_ABI, "cpu", kNoParams, 1,
                                        &T::create, &T::destroy, &T::compress, &T::compress_with_feedback,
                                        &T::decompress_add};
#endif
  return &info;
}
