// randomk_plugin.cpp — the randomk plugin's ABI entry point and parameter schema.
#include <cddp/plugin_abi.h>

#include "randomk_compressor.h"

// The default density, in one place: the schema's text and the declared capability both.
#define CDDP_RANDOMK_DEFAULT_RATIO 0.01

namespace cddp::randomk {
extern const ParamSpec kRandomKParams[] = {
    {"ratio", ParamType::Double, CDDP_STRINGIFY(CDDP_RANDOMK_DEFAULT_RATIO), 1e-12, 1.0, "density: fraction of entries kept, k = ceil(ratio*numel)"},
    {"scale", ParamType::Bool, "false", 0, 0, "multiply kept values by numel/k (unbiased estimator)"},
};
extern const size_t kRandomKParamCount = sizeof(kRandomKParams) / sizeof(kRandomKParams[0]);
}  // namespace cddp::randomk

#if defined(CDDP_TOPK_WITH_CUDA)
#define CDDP_RANDOMK_DEVICES "cpu,cuda"
#else
#define CDDP_RANDOMK_DEVICES "cpu"
#endif

CDDP_DEFINE_COMPRESSOR_PLUGIN_V2(cddp::randomk::RandomKCompressor, "randomk", "1.0.0",
                                 "k indices from a seeded Philox stream, identical on every rank",
                                 cddp::randomk::kRandomKParams, CDDP_CAPS_SHARED_SELECTION(CDDP_RANDOMK_DEFAULT_RATIO, CDDP_RANDOMK_DEVICES))
