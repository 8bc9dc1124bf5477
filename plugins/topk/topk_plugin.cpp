// topk_plugin.cpp — the topk plugin's ABI entry point and parameter schema.
#include <cddp/plugin_abi.h>

#include "topk_compressor.h"

#if defined(CDDP_TOPK_WITH_CUDA)
#define CDDP_TOPK_DEVICES "cpu,cuda"
#else
#define CDDP_TOPK_DEVICES "cpu"
#endif

// The default density, in one place: the schema's text and the declared capability both.
#define CDDP_TOPK_DEFAULT_RATIO 0.01

namespace cddp::topk {
extern const ParamSpec kTopKParams[] = {
    {"ratio", ParamType::Double, CDDP_STRINGIFY(CDDP_TOPK_DEFAULT_RATIO), 1e-12, 1.0, "density: fraction of entries kept, k = ceil(ratio*numel)"},
    {"impl", ParamType::String, "auto", 0, 0, "auto | cpu | cuda: which implementation; auto follows the tensor"},
};
extern const size_t kTopKParamCount = sizeof(kTopKParams) / sizeof(kTopKParams[0]);
}  // namespace cddp::topk

CDDP_DEFINE_COMPRESSOR_PLUGIN_V2(cddp::topk::TopKCompressor, "topk", "1.0.0",
                                 "exact top-k by magnitude, ties to the lower index", cddp::topk::kTopKParams,
                                 CDDP_CAPS_SELECTION_FUSED(CDDP_TOPK_DEFAULT_RATIO, CDDP_TOPK_DEVICES))
