// terngrad_plugin.cpp — the terngrad plugin's ABI entry point. It takes no parameters.
#include <cddp/plugin_abi.h>

#include "terngrad_compressor.h"

namespace cddp::terngrad {
extern const ParamSpec* const kTernGradParams = nullptr;
extern const size_t kTernGradParamCount = 0;
}  // namespace cddp::terngrad

CDDP_DEFINE_COMPRESSOR_PLUGIN_V2_N(cddp::terngrad::TernGradCompressor, "terngrad", "1.0.0",
                                   "TernGrad: {-1, 0, +1} times the max-norm, stochastic (Wen 2017)",
                                   cddp::terngrad::kTernGradParams, 0, CDDP_CAPS_GATHER("cpu"))
