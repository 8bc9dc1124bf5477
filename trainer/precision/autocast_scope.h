// autocast_scope.h — run.precision = "bf16": CPU autocast to bfloat16 for the forward pass
// (and, through the autograd graph it records, the backward), for as long as the scope lives.
// Parameters, gradients, moments and residuals stay fp32: autocast only casts the inputs of the
// ops on LibTorch's lists (matrix products, convolutions) and leaves leaf tensors alone.
//
// It restores the previous autocast state and clears the autocast cast cache on exit. It will
// not touch CUDA autocast or cast anything itself; with precision "fp32" it does nothing.
#pragma once

#include <string>

namespace cddp::train {

class AutocastScope {
 public:
  // precision: "fp32" (no-op) or "bf16" (validated by the config loader).
  explicit AutocastScope(const std::string& precision);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool active_ = false;
  bool was_enabled_ = false;
  int previous_dtype_ = 0;  // at::ScalarType, kept as int so that this header needs no ATen
};

}  // namespace cddp::train
