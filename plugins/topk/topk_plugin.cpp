// topk_plugin.cpp — the topk plugin's ABI entry point and parameter schema.
#include <cddp/plugin_abi.h>

#include "topk_compressor.h"

namespace cddp::topk {
extern const ParamSpec kTopKParams[] = {
    {"ratio", ParamType::Double, "0.01", 1e-12, 1.0, "density: fraction of entries kept, k = ceil(ratio*numel)"},
};
extern const size_t kTopKParamCount = sizeof(kTopKParams) / sizeof(kTopKParams[0]);
}  // namespace cddp::topk

CDDP_DEFINE_COMPRESSOR_PLUGIN(cddp::topk::TopKCompressor, "topk", "1.0.0",
                              "exact top-k by magnitude, ties to the lower index", cddp::topk::kTopKParams, "cpu")
