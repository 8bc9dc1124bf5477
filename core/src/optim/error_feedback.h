// error_feedback.h — the error-feedback memory: each rank keeps what compression held back
// and adds it to the next gradient (Seide et al. 2014, "1-bit SGD"; Stich, Cordonnier, Jaggi
// 2018, "Sparsified SGD with memory"; Karimireddy et al. 2019, "Error feedback fixes SignSGD"):
//     acc  = source + e_{t−1}             (source: g, or the DGC velocity, dgc_momentum.h)
//     sent = C(acc)
//     e_t  = acc − D(sent)                before any communication, this rank only
// so nothing is lost, only delayed: D(sent) + e_t == source + e_{t−1}, bitwise (the
// Compressor::compress_with_feedback contract). The residual e lives in
// the parameter's CompressionMemory (compression_memory.h; CompressedSGDParamState and
// CompressedAdamWParamState), created zero at a tensor's first compressed step.
//
// Also here: residual_lr_scaling (the residual kept in units of the current lr), the
// whole-model residual of scope "model", and the residual norm of StepStats. Internal to
// core/src/optim. It will not select entries (the compressor does), update the DGC velocity
// itself (dgc_momentum.h, or the compressor's fused pass) or communicate.
#pragma once

#include "step_plan.h"

#include <cddp/compressor.h>

#include <ATen/core/Tensor.h>

#include <vector>

namespace cddp::detail {

// t's residual, created as contiguous zeros the first time.
at::Tensor& residual_of(TensorStep& t);

// Compresses `source` for t: with error feedback C(source + e) leaving e = acc − D(sent);
// without it, C(source).
Compressed compress_with_error_feedback(TensorStep& t, const at::Tensor& source, const CompressContext& ctx);
// The same with DGC's velocity update handed to the compressor (dgc_momentum.h,
// velocity_update_fuses): velocity ← m·velocity + g, then C(velocity + e), e ← acc − D(C(acc)).
Compressed compress_velocity_with_error_feedback(TensorStep& t, at::Tensor& velocity, double momentum,
                                                 const CompressContext& ctx);

// Codecs that are not selections (payload_stage.h), in two steps around the encode or the
// rounds:  acc = source + e_{t−1} (a fresh contiguous tensor shaped like the parameter;
// `source` itself, reshaped, without error feedback), then e_t = acc − D, where D is the decode
// of this rank's own payload (gather, sum: taken before any communication) or the plugin's own
// approximation (rounds). Every entry of e_t is fl(acc − D): with D within a factor 2 of acc
// (Sterbenz), or D = 0, D + e_t == acc exactly; else to the last bit of fp32 rounding.
at::Tensor accumulate_for_payload(TensorStep& t, const at::Tensor& source);
void keep_residual(TensorStep& t, const at::Tensor& acc, const at::Tensor& decoded);

// Options::residual_lr_scaling: a residual written at lr' is multiplied by lr'/lr before it is
// read, so lr·e — the parameter change still owed — survives a schedule step (the residual of
// the papers above is the lr-scaled update). lr = 0 (the end of a cosine schedule) leaves it
// alone: nothing is applied at that lr anyway. Tensors on the dense route have no residual.
void rescale_residuals_to_lr(std::vector<TensorStep>& tensors);

// scope "model": the residuals of `parts` (each created if needed) concatenated flat, in order.
at::Tensor concat_residuals(const std::vector<TensorStep*>& parts);
// ...and the whole-model residual written back into each part's, in the same order.
void scatter_residuals(const at::Tensor& whole, const std::vector<TensorStep*>& parts);

// sqrt(Σ e²) over every residual, in double (StepStats::residual_norm).
double residual_norm(const std::vector<TensorStep>& tensors);

}  // namespace cddp::detail
