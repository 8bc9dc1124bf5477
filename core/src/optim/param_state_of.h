// param_state_of.h — an optimizer's lazily created per-parameter state, found in
// torch::optim::Optimizer::state() under the key LibTorch uses: 1.13 keys it by the TensorImpl
// address written as a string, 2.x by the address itself; the map's key type tells which.
// Shared by CompressedSGD and CompressedAdamW. Internal to core/src/optim.
//
// It will not initialise the state's tensors (each optimizer does, on first use).
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <sstream>
#include <string>
#include <type_traits>

namespace cddp::detail {

template <class Key>
Key state_key(const at::Tensor& p) {
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream os;  // what 1.13's c10::guts::to_string(TensorImpl*) writes
    os << p.unsafeGetTensorImpl();
    return os.str();
  } else {
    return p.unsafeGetTensorImpl();
  }
}

// The State of p in `states` (an Optimizer's state_), default-constructed the first time.
template <class State, class StateMap>
State& param_state_of(StateMap& states, const at::Tensor& p) {
  using Key = typename std::decay_t<StateMap>::key_type;
  const Key key = state_key<Key>(p);
  auto it = states.find(key);
  if (it == states.end()) it = states.emplace(key, std::make_unique<State>()).first;
  return static_cast<State&>(*it->second);
}

}  // namespace cddp::detail
