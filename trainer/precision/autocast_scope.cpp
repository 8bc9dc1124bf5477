// autocast_scope.cpp — CPU bf16 autocast on and back off (autocast_scope.h). LibTorch 2.4
// replaced at::autocast::{is,set}_cpu_enabled / {get,set}_autocast_cpu_dtype with the
// device-typed calls; both spellings are here, chosen by the version LibTorch reports.
#include "precision/autocast_scope.h"

#include <ATen/autocast_mode.h>
#include <torch/version.h>

namespace cddp::train {
namespace {

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
bool cpu_autocast_enabled() { return at::autocast::is_autocast_enabled(at::kCPU); }
void set_cpu_autocast(bool on) { at::autocast::set_autocast_enabled(at::kCPU, on); }
at::ScalarType cpu_autocast_dtype() { return at::autocast::get_autocast_dtype(at::kCPU); }
void set_cpu_autocast_dtype(at::ScalarType t) { at::autocast::set_autocast_dtype(at::kCPU, t); }
#else
bool cpu_autocast_enabled() { return at::autocast::is_cpu_enabled(); }
void set_cpu_autocast(bool on) { at::autocast::set_cpu_enabled(on); }
at::ScalarType cpu_autocast_dtype() { return at::autocast::get_autocast_cpu_dtype(); }
void set_cpu_autocast_dtype(at::ScalarType t) { at::autocast::set_autocast_cpu_dtype(t); }
#endif

}  // namespace

AutocastScope::AutocastScope(const std::string& precision) {
  if (precision != "bf16") return;
  active_ = true;
  was_enabled_ = cpu_autocast_enabled();
  previous_dtype_ = int(cpu_autocast_dtype());
  set_cpu_autocast_dtype(at::kBFloat16);
  set_cpu_autocast(true);
  at::autocast::increment_nesting();
}

AutocastScope::~AutocastScope() {
  if (!active_) return;
  // The cache of casted weights is valid for one forward pass only (the weights change at step).
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  set_cpu_autocast(was_enabled_);
  set_cpu_autocast_dtype(static_cast<at::ScalarType>(previous_dtype_));
}

}  // namespace cddp::train
