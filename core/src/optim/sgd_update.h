// sgd_update.h — the parameter update from the averaged gradient d_p, written as LibTorch's
// torch::optim::SGD::step writes it (torch/csrc/api/src/optim/sgd.cpp), so that with
// momentum_mode "global" at density 1 the result is bitwise SGD's:
//     buf = d_p                                  (first step)
//     buf = momentum·buf + (1 − dampening)·d_p   (later steps)
//     d_p = nesterov ? d_p + momentum·buf : buf
//     p  −= lr·d_p
// Tensors whose momentum was applied before compression (DGC, dgc_momentum.h) take p −= lr·d_p
// alone; when their average arrived as a coalesced list only the listed entries change: at the
// others p − lr·(+0) leaves every value, ±0 included, as it is.
//
// Internal to core/src/optim. It will not communicate or touch residuals; it reads the
// averages and never writes into them (the exchange keeps them zero between steps).
#pragma once

#include "step_plan.h"

#include <vector>

namespace cddp::detail {

void apply_sgd_updates(std::vector<TensorStep>& tensors);

}  // namespace cddp::detail
