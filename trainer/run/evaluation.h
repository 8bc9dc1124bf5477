// evaluation.h — test-set loss and accuracy of a model: each rank takes every W-th sample
// (rank, rank + W, ...), and one allreduce sums the ranks' loss, correct count and samples.
// Also `cddp-train eval` (evaluate_checkpoint, declared in trainer.h).
//
// It will not log or write metrics; the run loop records what it returns.
#pragma once

#include <cddp/communicator.h>
#include <cddp/data/dataset_loader.h>
#include <cddp/models/model_factory.h>

#include <c10/core/Device.h>

#include <cstdint>

namespace cddp::train {

struct EvalStats {
  double loss = 0, accuracy = 0;
  int64_t samples = 0;
};

// Mean cross-entropy and accuracy over `test`, in eval mode (restored to train mode after),
// `batch` samples at a time on `device`. Every rank of `comm` must call it.
EvalStats evaluate(Classifier& model, const Dataset& test, int64_t batch, const at::Device& device,
                   Communicator& comm);

}  // namespace cddp::train
