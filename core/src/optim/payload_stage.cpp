// payload_stage.cpp — Gather/Sum/Rounds tensors: encode with error feedback, exchange, the
// residual of the rounds (payload_stage.h), in buffers kept per tensor (payload_buffers.h).
#include "payload_stage.h"

#include "error_feedback.h"
#include "../exchange/coalesced_rounds.h"

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

namespace {

// acc = g + e_{t−1} into the slot's buffer (error_feedback.h's accumulate_for_payload, without a
// fresh tensor a step); without error feedback, g itself (reshaped).
at::Tensor accumulate_into(TensorStep& t, PayloadSlotBuffers& slot) {
  if (!t.error_feedback) return accumulate_for_payload(t, t.g);
  const at::Tensor& e = residual_of(t);
  at::Tensor& acc = PayloadBuffers::sized(slot.acc, t.p.sizes(), e.options());
  at::add_out(acc, t.g.reshape(t.p.sizes()), e);
  return acc;
}

}  // namespace

void encode_payloads(RoutedTensors& routed, PayloadBuffers& buffers, int64_t step, int world, StepStats& st) {
  for (auto* group : {&routed.gather, &routed.sum})
    for (TensorStep* t : *group) {
      PayloadSlotBuffers& slot = buffers.of(t->index);
      const at::Tensor acc = accumulate_into(*t, slot);  // acc = g + e_{t−1}
      // The last payload's parts, free now, are the plugin's to write into (encode_into).
      t->payload = std::move(slot.previous);
      t->compressor->encode_into(acc, plugin_state_of(*t), context_for(*t, step, world), t->payload);
      at::Tensor& own = PayloadBuffers::sized(slot.own, {t->p.numel()}, acc.options());
      own.zero_();
      t->compressor->decode_add_(t->payload, own);  // D(own payload)
      keep_residual(*t, acc, own);                  // e_t = acc − D, before any communication
      st.elements_sent += t->p.numel();
    }
  for (TensorStep* t : routed.rounds) {
    t->acc = accumulate_into(*t, buffers.of(t->index));
    st.elements_sent += t->p.numel();
  }
  st.compressed_tensors += int64_t(routed.gather.size() + routed.sum.size() + routed.rounds.size());
}

namespace {

std::vector<PayloadSlot> slots_for(const std::vector<TensorStep*>& tensors, PayloadBuffers& buffers) {
  std::vector<PayloadSlot> slots;
  for (TensorStep* t : tensors) {
    t->average = PayloadBuffers::sized(buffers.of(t->index).average, {t->p.numel()}, t->p.options());
    slots.push_back({&t->payload, t->compressor.get(), &t->average, t->name,
                     t->compressor->wire_bytes(t->p.sizes().vec(), t->p.scalar_type(), t->density)});
  }
  return slots;
}

}  // namespace

void exchange_payloads(RoutedTensors& routed, PayloadExchange& exchange, PayloadBuffers& buffers, Communicator& comm,
                       int64_t step, StepStats& st) {
  std::vector<PayloadSlot> gather = slots_for(routed.gather, buffers), sum = slots_for(routed.sum, buffers);
  exchange.gather(gather, st);
  exchange.sum(sum, st);
  // Combined: the payloads go back to their slots, whose buffers the next step's encode reuses.
  for (auto* group : {&routed.gather, &routed.sum})
    for (TensorStep* t : *group) buffers.of(t->index).previous = std::move(t->payload);
  // Every rounds tensor's protocol at once, each round one collective for all (coalesced_rounds.h).
  std::vector<RoundProtocol> protocols;
  for (TensorStep* t : routed.rounds) {
    PayloadSlotBuffers& slot = buffers.of(t->index);  // std::map: the references stay valid
    t->average = PayloadBuffers::sized(slot.average, {t->p.numel()}, t->acc.options());
    at::Tensor* approx = &PayloadBuffers::sized(slot.approx, {t->p.numel()}, t->acc.options());
    PluginState* state = &plugin_state_of(*t);
    protocols.push_back([t, approx, state, ctx = context_for(*t, step, comm.world_size())](RoundCollective& c) {
      t->compressor->run_rounds(t->acc, *state, c, ctx, t->average, *approx);
    });
  }
  run_coalesced_rounds(comm, st, protocols);
  for (TensorStep* t : routed.rounds)
    keep_residual(*t, t->acc, buffers.of(t->index).approx);  // e_t = acc − the plugin's approximation of it
}

}  // namespace cddp::detail
