// threshold_plugin.cpp — the threshold plugin's ABI entry point and parameter schema.
#include <cddp/plugin_abi.h>

#include "threshold_compressor.h"

namespace cddp::threshold {
extern const ParamSpec kThresholdParams[] = {
    {"tau", ParamType::Double, "0.001", 0.0, 1e30, "send every entry with |x| >= tau (count varies by rank and step)"},
};
extern const size_t kThresholdParamCount = sizeof(kThresholdParams) / sizeof(kThresholdParams[0]);
}  // namespace cddp::threshold

CDDP_DEFINE_COMPRESSOR_PLUGIN_V2(cddp::threshold::ThresholdCompressor, "threshold", "1.0.0",
                                 "every entry with |x| >= tau (Strom 2015)", cddp::threshold::kThresholdParams,
                                 CDDP_CAPS_SELECTION(-1.0, "cpu"))
