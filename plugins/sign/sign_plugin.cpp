// sign_plugin.cpp — the sign plugin's ABI entry point and parameter schema.
#include <cddp/plugin_abi.h>

#include "sign_compressor.h"

namespace cddp::sign {
extern const ParamSpec kSignParams[] = {
    {"variant", ParamType::String, "scaled", 0, 0,
     "signsgd (majority vote, Bernstein 2018) | scaled (||x||_1/n * sign, Karimireddy 2019) | onebit (two "
     "reconstruction values, Seide 2014)"},
};
extern const size_t kSignParamCount = sizeof(kSignParams) / sizeof(kSignParams[0]);
}  // namespace cddp::sign

CDDP_DEFINE_COMPRESSOR_PLUGIN_V2(cddp::sign::SignCompressor, "sign", "1.0.0",
                                 "one bit an entry: majority vote, scaled sign or 1-bit SGD", cddp::sign::kSignParams,
                                 CDDP_CAPS_GATHER("cpu"))
