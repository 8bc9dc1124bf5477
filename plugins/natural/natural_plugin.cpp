// natural_plugin.cpp — the natural plugin's ABI entry point. It takes no parameters.
#include <cddp/plugin_abi.h>

#include "natural_compressor.h"

namespace cddp::natural {
extern const ParamSpec* const kNaturalParams = nullptr;
}  // namespace cddp::natural

CDDP_DEFINE_COMPRESSOR_PLUGIN_V2_N(cddp::natural::NaturalCompressor, "natural", "1.0.0",
                                   "natural compression: stochastic rounding to powers of two (Horvath 2019)",
                                   cddp::natural::kNaturalParams, 0, CDDP_CAPS_GATHER("cpu"))
