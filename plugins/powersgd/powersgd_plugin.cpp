// powersgd_plugin.cpp — the powersgd plugin's ABI entry point and parameter schema (the
// algorithm: powersgd_compressor.h; Vogels et al., NeurIPS 2019). Defaults: rank 4;
// min_compression_rate 2, orthogonalization_epsilon 0 and warm start on, as PyTorch's
// PowerSGDState; start_iter 10 instead of PyTorch's 1000, because the study's runs are a few
// hundred steps long (one Fashion-MNIST epoch at 2 ranks is 469). It will not compute anything.
#include <cddp/plugin_abi.h>

#include "powersgd_compressor.h"

namespace cddp::powersgd {
extern const ParamSpec kPowerSgdParams[] = {
    {"rank", ParamType::Int, "4", 1, 1 << 20, "r: columns of P [n, r] and Q [m, r] (clamped to min(n, m))"},
    {"start_iter", ParamType::Int, "10", 0, 1e15,
     "optimizer steps 1..start_iter allreduce dense (PyTorch's start_powerSGD_iter, default 1000 there)"},
    {"min_compression_rate", ParamType::Double, "2", 0, 1e9,
     "compress a matrix only when (n + m)·r·rate < n·m (as PyTorch)"},
    {"orthogonalization_epsilon", ParamType::Double, "0", 0, 1,
     "added to each column norm in Gram-Schmidt (r <= 2; QR for r > 2, as PyTorch)"},
    {"warm_start", ParamType::Bool, "true", 0, 0, "keep Q between steps (in the checkpoint); else draw it every step"},
    {"keep_p", ParamType::Bool, "false", 0, 0, "also keep the last orthonormal P [n, r] in the state (inspection)"},
};
extern const size_t kPowerSgdParamCount = sizeof(kPowerSgdParams) / sizeof(kPowerSgdParams[0]);
}  // namespace cddp::powersgd

CDDP_DEFINE_COMPRESSOR_PLUGIN_V2(cddp::powersgd::PowerSgdCompressor, "powersgd", "1.0.0",
                                 "PowerSGD: rank-r P·Qᵀ in two allreduce rounds, warm-started Q (Vogels 2019)",
                                 cddp::powersgd::kPowerSgdParams, CDDP_CAPS_ROUNDS("cpu"))
