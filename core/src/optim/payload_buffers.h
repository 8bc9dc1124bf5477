// payload_buffers.h — what the payload stage (payload_stage.h) keeps for each tensor from one
// step to the next, so that a step allocates nothing of a tensor's size: its last payload (the
// buffers Compressor::encode_into may write into), acc = g + e, D(own payload), the average
// and, for Rounds, the plugin's approximation. At 25M floats a fresh buffer is 100 MB, which
// glibc serves by mmap and the first write then faults in, page by page, every step.
//
// Buffers are per parameter index and are handed out only while nothing else holds them
// (sgd_update clones the average into a new momentum buffer; the payload's parts are free once
// the exchange has combined them). Internal to core/src/optim. It will not be checkpointed (it
// holds no state a step depends on: every buffer is written before it is read) or shared
// between optimizers.
#pragma once

#include <cddp/payload.h>

#include <ATen/core/Tensor.h>
#include <c10/core/TensorOptions.h>

#include <cstdint>
#include <map>

namespace cddp::detail {

struct PayloadSlotBuffers {
  Payload previous;  // the last payload: encode_into's buffers, moved out and back each step
  at::Tensor acc, own, average, approx;
};

class PayloadBuffers {
 public:
  PayloadSlotBuffers& of(int64_t param_index) { return slots_[param_index]; }

  // `buffer` when it is a contiguous tensor of `sizes` with `options`' dtype and device, else a
  // fresh at::empty in its place; either way returned uninitialised.
  static at::Tensor& sized(at::Tensor& buffer, c10::IntArrayRef sizes, const at::TensorOptions& options);

 private:
  std::map<int64_t, PayloadSlotBuffers> slots_;
};

}  // namespace cddp::detail
