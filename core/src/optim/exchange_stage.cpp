// exchange_stage.cpp — building GradientExchange's slots and calling it (exchange_stage.h).
#include "exchange_stage.h"

#include <ATen/ATen.h>

namespace cddp::detail {
namespace {

// The sparse apply (sgd_update.cpp) needs a plain CPU parameter and an update that is the
// average itself: momentum already applied locally (DGC) and no whole-model split. The rest is
// what the exchange coalesces: CPU float/double selections of the parameter's dtype.
bool applies_sparsely(const TensorStep& t, bool model_used) {
  const auto dtype = t.p.scalar_type();
  return t.momentum_mode == MomentumMode::Dgc && !model_used && t.p.is_cpu() && t.p.is_contiguous() &&
         (dtype == at::kFloat || dtype == at::kDouble) && t.sent.dtype == dtype &&
         (!t.sent.values.defined() || t.sent.values.is_cpu());
}

}  // namespace

std::vector<SparseSlot> ExchangeStage::slots_for(const std::vector<TensorStep*>& tensors, bool keep_zero,
                                                 bool model_used) {
  std::vector<SparseSlot> slots;
  for (TensorStep* t : tensors) {
    AverageBuffer& buffer = buffers_[t->name];
    const bool coalesced = applies_sparsely(*t, model_used);  // sparse and shared routes alike
    if (!coalesced) {  // the exchange writes the dense average; a coalesced one needs no tensor
      const auto opts = t->sent.values.options();
      if (!buffer.tensor.defined() || buffer.tensor.numel() != t->sent.numel ||
          buffer.tensor.scalar_type() != opts.dtype().toScalarType() || buffer.tensor.device() != opts.device()) {
        buffer.zeros.reset();
        buffer.tensor = at::empty({t->sent.numel}, opts);
      }
      if (!keep_zero) buffer.zeros.reset();  // average_shared writes all of it
      t->average = buffer.tensor;
    }
    SparseSlot slot{&t->sent, t->compressor.get(), &t->average, keep_zero && !coalesced ? &buffer.zeros : nullptr};
    // Fixed-k compressors at a density every rank shares select the same number of entries
    // everywhere: the exchange can skip gathering the counts.
    if (t->compressor->default_density() > 0 && t->density > 0) slot.expected_count = k_for_ratio(t->density, t->sent.numel);
    if (coalesced) {
      slot.coalesced = &buffer.coalesced;
      t->coalesced = &buffer.coalesced;
    }
    slots.push_back(slot);
  }
  return slots;
}

void ExchangeStage::run(RoutedTensors& routed, ModelSelection& model, GradientExchange& exchange, int world,
                        StepStats& st) {
  auto sparse_slots = slots_for(routed.sparse, /*keep_zero=*/true, model.used());
  exchange.average_sparse(sparse_slots, st);
  auto shared_slots = slots_for(routed.shared, /*keep_zero=*/false, model.used());
  exchange.average_shared(shared_slots, st);
  std::vector<at::Tensor> dense_grads;
  for (TensorStep* t : routed.dense) {
    // Averaged in place: never in the user's .grad itself.
    if (world > 1 && t->g.is_alias_of(t->p.grad())) t->g = t->g.clone();  // .data() is a new TensorImpl: compare storage
    dense_grads.push_back(t->g);
  }
  exchange.average_dense(dense_grads, st);
  for (size_t i = 0; i < routed.dense.size(); ++i) routed.dense[i]->average = dense_grads[i];
  if (model.used()) split_model_average(model);
}

}  // namespace cddp::detail
