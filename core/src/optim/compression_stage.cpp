// compression_stage.cpp — calling the compressor, per tensor or over the whole model
// (compression_stage.h).
#include "compression_stage.h"

#include "dgc_momentum.h"
#include "error_feedback.h"

#include <ATen/ATen.h>

namespace cddp::detail {
namespace {

// A plugin's selection is checked before anything uses it: a bad one would otherwise surface
// as ATen's bare "index out of range in self", or corrupt another rank's decode.
void check_selection(const Compressed& c, const TensorStep& t) {
  const std::string who = "compressor '" + t.compressor->name() + "' for parameter '" + t.name + "'";
  TORCH_CHECK(c.numel == t.p.numel(), who, " returned a selection of a ", c.numel, "-entry tensor; the parameter has ",
              t.p.numel());
  if (c.count() == 0) return;
  TORCH_CHECK(c.indices.defined() && c.indices.numel() == c.values.numel(), who, " returned ", c.values.numel(),
              " values but ", c.indices.defined() ? c.indices.numel() : 0, " indices");
  TORCH_CHECK(c.indices.scalar_type() == at::kInt || c.indices.scalar_type() == at::kLong, who,
              " returned indices of type ", c.indices.scalar_type(), "; expected int32 or int64");
  check_indices_in_range(c.indices, c.numel, who);
}

void compress_one(TensorStep& t, int64_t step, int world, StepStats& st) {
  const CompressContext ctx = context_for(t, step, world);
  if (velocity_update_fuses(t))  // DGC's u ← m·u + g rides on the compressor's error-feedback pass
    t.sent = compress_velocity_with_error_feedback(t, velocity_of(t), t.opt->momentum(), ctx);
  else
    t.sent = compress_with_error_feedback(t, momentum_corrected_gradient(t), ctx);
  if (t.index >= 0) check_selection(t.sent, t);  // (the whole-model selection is the host's own concatenation)
  mask_momentum_of_sent(t);
  st.elements_sent += t.sent.count();
}

// One selection over the concatenation of `parts` (scope "model").
ModelSelection compress_model(const std::vector<TensorStep*>& parts, int64_t step, int world, StepStats& st) {
  ModelSelection m;
  m.parts = parts;
  const TensorStep& first = *parts.front();
  std::vector<at::Tensor> gs;
  for (TensorStep* t : parts) {
    gs.push_back(t->g.reshape(-1));
    residual_of(*t);  // every part gets a residual, whole-model error feedback or not
  }
  m.whole = std::make_unique<TensorStep>();
  m.state = std::make_unique<CompressedSGDParamState>();
  TensorStep& whole = *m.whole;
  whole.g = at::cat(gs);
  whole.p = whole.g;
  whole.name = "<model>";
  whole.index = -1;
  whole.opt = first.opt;
  whole.knobs = first.knobs;
  whole.momentum_mode = first.momentum_mode;
  whole.compressor = first.compressor;
  whole.density = first.density;
  whole.error_feedback = first.error_feedback;
  whole.route = Route::Sparse;
  if (whole.error_feedback) m.state->residual(concat_residuals(parts));
  whole.state = m.state.get();
  whole.memory = m.state.get();
  TORCH_CHECK(!(whole.momentum_mode == MomentumMode::Dgc && whole.opt && whole.opt->momentum() != 0),
              "scope \"model\" with momentum needs momentum_mode \"global\" (DGC's momentum correction is kept per "
              "tensor)");
  compress_one(whole, step, world, st);
  if (whole.error_feedback) scatter_residuals(m.state->residual(), parts);
  return m;
}

}  // namespace

ModelSelection compress_routed(RoutedTensors& routed, SelectionScope scope, int64_t step, int world,
                               StepStats& st) {
  ModelSelection model;
  if (scope == SelectionScope::Model && !routed.sparse.empty()) {
    model = compress_model(routed.sparse, step, world, st);
    routed.sparse.assign({model.whole.get()});
  } else {
    for (TensorStep* t : routed.sparse) compress_one(*t, step, world, st);
  }
  for (TensorStep* t : routed.shared) compress_one(*t, step, world, st);
  for (TensorStep* t : routed.dense) st.elements_sent += t->p.numel();
  st.compressed_tensors = int64_t(routed.sparse.size() + routed.shared.size());
  st.dense_tensors = int64_t(routed.dense.size());
  return model;
}

void split_model_average(ModelSelection& model) {
  int64_t off = 0;
  for (TensorStep* t : model.parts) {
    t->average = model.whole->average.narrow(0, off, t->p.numel());
    off += t->p.numel();
  }
}

}  // namespace cddp::detail
