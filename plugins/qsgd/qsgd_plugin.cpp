// qsgd_plugin.cpp — the qsgd plugin's ABI entry point and parameter schema.
#include <cddp/plugin_abi.h>

#include "qsgd_compressor.h"

namespace cddp::qsgd {
extern const ParamSpec kQsgdParams[] = {
    {"levels", ParamType::Int, "16", 1, 1 << 20, "s: quantization levels per sign (1 + ceil(log2(s+1)) bits an entry)"},
    {"bucket_size", ParamType::Int, "512", 1, 1 << 30, "d: entries sharing one float32 norm"},
};
extern const size_t kQsgdParamCount = sizeof(kQsgdParams) / sizeof(kQsgdParams[0]);
}  // namespace cddp::qsgd

CDDP_DEFINE_COMPRESSOR_PLUGIN_V2(cddp::qsgd::QsgdCompressor, "qsgd", "1.0.0",
                                 "QSGD: s stochastic levels of each bucket's norm (Alistarh 2017)",
                                 cddp::qsgd::kQsgdParams, CDDP_CAPS_GATHER("cpu"))
