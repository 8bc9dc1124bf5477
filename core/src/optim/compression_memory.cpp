// compression_memory.cpp — the serialization of CompressionMemory (compression_memory.h). The
// keys are those CompressedSGD format 3 has always written, so its checkpoints load unchanged.
#include <cddp/compression_memory.h>

#include <torch/optim/serialize.h>
#include <torch/serialize/archive.h>

#include <sstream>

namespace cddp {

void CompressionMemory::write_memory(torch::serialize::OutputArchive& archive) const {
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(residual);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(residual_lr);
  std::string names;
  int64_t i = 0;
  for (const auto& [name, tensor] : plugin_state()) {
    TORCH_CHECK(name.find('\n') == std::string::npos, "plugin state name '", name, "' contains a newline");
    names += (i ? "\n" : "") + name;
    archive.write("plugin_state." + std::to_string(i++), tensor, /*is_buffer=*/true);
  }
  if (i > 0) archive.write("plugin_state_names", c10::IValue(names));
}

void CompressionMemory::read_memory(torch::serialize::InputArchive& archive, const char* owner) {
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(at::Tensor, residual);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, residual_lr);
  PluginState state;
  c10::IValue names;
  if (archive.try_read("plugin_state_names", names)) {
    std::istringstream in(names.toStringRef());
    std::string name;
    for (int64_t i = 0; std::getline(in, name); ++i) {
      at::Tensor t;
      TORCH_CHECK(archive.try_read("plugin_state." + std::to_string(i), t, /*is_buffer=*/true), owner,
                  ": plugin state '", name, "' is named but missing");
      state[name] = t;
    }
  }
  plugin_state(state);
}

}  // namespace cddp
