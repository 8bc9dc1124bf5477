// cast_plugin.cpp — the cast plugin's ABI entry point and parameter schema.
#include <cddp/plugin_abi.h>

#include "cast_compressor.h"

namespace cddp::cast {
extern const ParamSpec kCastParams[] = {
    {"dtype", ParamType::String, "fp16", 0, 0, "fp16 | bf16: the 16-bit type on the wire (scaled by 1/W first)"},
};
extern const size_t kCastParamCount = sizeof(kCastParams) / sizeof(kCastParams[0]);
}  // namespace cddp::cast

CDDP_DEFINE_COMPRESSOR_PLUGIN_V2(cddp::cast::CastCompressor, "cast", "1.0.0",
                                 "fp16/bf16 cast, scaled by 1/W before the sum (as DDP's fp16 hook)",
                                 cddp::cast::kCastParams, CDDP_CAPS_SUM("cpu"))
