// payload_stage.cpp — Gather/Sum/Rounds tensors: encode with error feedback, exchange, the
// residual of the rounds (payload_stage.h).
#include "payload_stage.h"

#include "error_feedback.h"

#include <ATen/ATen.h>

namespace cddp::detail {

PluginState& plugin_state_of(TensorStep& t) {
  PluginState& state = t.memory->plugin_state();
  for (const StateSpec& spec : t.compressor->state_specs(t.p.sizes().vec(), t.p.scalar_type())) {
    auto it = state.find(spec.name);
    if (it == state.end()) {
      state[spec.name] = at::zeros(spec.shape, at::TensorOptions(spec.dtype).device(t.p.device()));
      continue;
    }
    TORCH_CHECK(it->second.sizes().vec() == spec.shape && it->second.scalar_type() == spec.dtype,
                "parameter '", t.name, "': the saved state '", spec.name, "' of compressor '", t.compressor->name(),
                "' is ", it->second.scalar_type(), it->second.sizes(), " but the plugin declares ", spec.dtype,
                c10::IntArrayRef(spec.shape), " (a checkpoint of another plugin or model?)");
  }
  return state;
}

void encode_payloads(RoutedTensors& routed, int64_t step, int world, StepStats& st) {
  for (auto* group : {&routed.gather, &routed.sum})
    for (TensorStep* t : *group) {
      const at::Tensor acc = accumulate_for_payload(*t, t->g);  // acc = g + e_{t−1}
      t->payload = t->compressor->encode(acc, plugin_state_of(*t), context_for(*t, step, world));
      at::Tensor own = at::zeros({t->p.numel()}, acc.options());
      t->compressor->decode_add_(t->payload, own);  // D(own payload)
      keep_residual(*t, acc, own);                  // e_t = acc − D, before any communication
      st.elements_sent += t->p.numel();
    }
  for (TensorStep* t : routed.rounds) {
    t->acc = accumulate_for_payload(*t, t->g);
    st.elements_sent += t->p.numel();
  }
  st.compressed_tensors += int64_t(routed.gather.size() + routed.sum.size() + routed.rounds.size());
}

namespace {

std::vector<PayloadSlot> slots_for(const std::vector<TensorStep*>& tensors) {
  std::vector<PayloadSlot> slots;
  for (TensorStep* t : tensors) {
    t->average = at::empty({t->p.numel()}, t->p.options().memory_format(at::MemoryFormat::Contiguous));
    slots.push_back({&t->payload, t->compressor.get(), &t->average, t->name,
                     t->compressor->wire_bytes(t->p.sizes().vec(), t->p.scalar_type(), t->density)});
  }
  return slots;
}

}  // namespace

void exchange_payloads(RoutedTensors& routed, PayloadExchange& exchange, Communicator& comm, int64_t step,
                       StepStats& st) {
  std::vector<PayloadSlot> gather = slots_for(routed.gather), sum = slots_for(routed.sum);
  exchange.gather(gather, st);
  exchange.sum(sum, st);
  CountingRoundCollective collective(comm, st);
  for (TensorStep* t : routed.rounds) {
    t->average = at::empty({t->p.numel()}, t->acc.options());
    at::Tensor approx = at::empty({t->p.numel()}, t->acc.options());
    t->compressor->run_rounds(t->acc, plugin_state_of(*t), collective, context_for(*t, step, comm.world_size()),
                              t->average, approx);
    keep_residual(*t, t->acc, approx);  // e_t = acc − the plugin's approximation of it
  }
}

}  // namespace cddp::detail
