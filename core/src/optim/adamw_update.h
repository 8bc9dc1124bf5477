// adamw_update.h — CompressedAdamW's own stages around the shared ones: what a tensor sends,
// and the parameter update from what the exchange averaged.
//
//   AdamW (Loshchilov & Hutter 2019), as LibTorch's torch::optim::AdamW::step writes it
//   (torch/csrc/api/src/optim/adamw.cpp), so that with no compressor the result is bitwise its:
//       t += 1;  p ← p·(1 − lr·λ)
//       m ← β1·m + (1 − β1)·d;   v ← β2·v + (1 − β2)·d²      (d: the averaged gradient)
//       p ← p − lr/(1 − β1^t) · m / (√v / √(1 − β2^t) + ε)   (amsgrad: max of v over time)
//   1-bit Adam past the warm-up (Tang et al. 2021, Algorithm 1): v frozen at step T;
//       before compression:  send m_local = β1·m + (1 − β1)·g      (momentum_to_send)
//       after the exchange:  m ← mean of what was sent;  v unchanged;
//       p ← p·(1 − lr·λ) − lr/(1 − β1^t) · m / (√v / √(1 − β2^T) + ε)
//   A frozen tensor on the dense route gets d = the averaged gradient: m ← β1·m + (1 − β1)·d.
//
// Internal to core/src/optim. It will not route, compress or communicate, and never writes
// into an average.
#pragma once

#include <cddp/compressed_adamw.h>

#include "step_plan.h"

#include <vector>

namespace cddp::detail {

// One tensor's AdamW view for the step: its record, its group's options, its state.
struct AdamWTensor {
  TensorStep* t = nullptr;
  const CompressedAdamWOptions* opt = nullptr;
  CompressedAdamWParamState* state = nullptr;
  bool momentum_sent = false;  // onebit, compressed: t->g was replaced by m_local
};

// exp_avg and exp_avg_sq (and max_exp_avg_sq with amsgrad) as zeros the first time, shaped and
// strided like the parameter (torch::optim::AdamW's MemoryFormat::Preserve).
void init_moments(AdamWTensor& a);

// onebit past the warm-up, for a tensor whose route is not dense: freezes its variance (the
// first time: variance_frozen_at = the last step it was updated) and sets t->g = m_local, the
// quantity error feedback and the compressor then see.
void momentum_to_send(AdamWTensor& a);

// The update above, per tensor, from t->average.
void apply_adamw_updates(std::vector<AdamWTensor>& tensors);

}  // namespace cddp::detail
