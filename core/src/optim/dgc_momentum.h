// dgc_momentum.h — Deep Gradient Compression's momentum correction and momentum factor
// masking (Lin, Han, Mao, Wang, Dally, "Deep Gradient Compression", ICLR 2018, §3.2), for the
// tensors whose group sets momentum_mode "dgc" (the default) and a momentum.
//
// Compressing plain gradients and applying momentum to the sparse average lets momentum carry
// only what was sent. DGC instead keeps the velocity on each rank, before compression:
//     u_t = m·u_{t−1} + g_t               (momentum correction: the local velocity)
//     v_t = v_{t−1} + u_t                 (accumulated: v is the error-feedback residual)
//     Nesterov:  v_t = v_{t−1} + (m·u_t + g_t)
// and after top-k of v_t has been sent, zeroes u at the sent coordinates (momentum factor
// masking), so stale momentum does not keep pushing coordinates that were just applied.
// The update is then the plain average, p −= lr·avg (sgd_update.h).
//
// The velocity u lives in CompressedSGDParamState::momentum_buffer. Internal to core/src/optim.
// It will not touch the residual or call the compressor (error_feedback.h, compression_stage.h),
// which also hand the velocity update to the compressor when velocity_update_fuses.
#pragma once

#include "step_plan.h"

#include <ATen/core/Tensor.h>

namespace cddp::detail {

// The velocity u_{t−1}: the state's momentum buffer, zeros the first time.
at::Tensor& velocity_of(TensorStep& t);

// True when the velocity update can be handed to the compressor with error feedback, as one
// call (Compressor::compress_with_momentum_feedback, one pass in top-k): DGC with error
// feedback and without Nesterov. Else momentum_corrected_gradient runs first, on its own.
bool velocity_update_fuses(const TensorStep& t);

// What the compressor gets, with error feedback adding the residual: the velocity u_t (or
// m·u_t + g_t for Nesterov) after updating it, when t.momentum_before_compression(); else g.
at::Tensor momentum_corrected_gradient(TensorStep& t);

// Momentum factor masking: u ← u ⊙ ¬mask(sent), when t.momentum_before_compression().
void mask_momentum_of_sent(TensorStep& t);

}  // namespace cddp::detail
