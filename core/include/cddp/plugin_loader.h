// plugin_loader.h — finds compressor plugin libraries, checks their ABI, and creates
// compressors from them (Boost.DLL underneath).
//
// Search order for a plugin name (first hit wins):
//   1. an explicit path (the name contains '/' or ends in ".so"),
//   2. the configured plugin directories, in order,
//   3. the directories in CDDP_PLUGIN_PATH (colon-separated) — read by
//      PluginSearchPath::standard(), never deep inside the loader,
//   4. the install's lib/cddp/plugins (relative to the running executable),
//   5. the build tree's plugin directory.
// A library named `cddp_<name>.so` in a directory provides plugin `<name>`.
//
// ABI: the version-2 entry point is looked for first; a library with only the version-1 entry
// point (a sparsifier) is adapted, its capabilities read once from the compressor it creates.
// A library for any other version, LibTorch or C++ ABI is refused, naming both versions.
//
// Lifetime: every PluginCompressor holds a shared_ptr to its library, so a library stays
// loaded while any object it created lives, however the loader itself is destroyed.
#pragma once

#include <cddp/compressor.h>
#include <cddp/plugin_params.h>

#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

struct cddp_plugin_info;

namespace cddp {

class LoadedLibrary;  // defined in plugin_loader.cpp; wraps boost::dll::shared_library

struct PluginSearchPath {
  std::vector<std::filesystem::path> dirs;  // in search order, with where each came from
  std::vector<std::string> origins;

  void add(const std::filesystem::path& dir, const std::string& origin);
  // configured dirs, then CDDP_PLUGIN_PATH (the `env_value` passed in), then the install
  // dir next to the executable, then the build tree.
  static PluginSearchPath standard(const std::vector<std::filesystem::path>& configured,
                                   const char* cddp_plugin_path_env);
};

// One parameter of a plugin's schema, copied out of the library (owned strings).
struct ParamDescription {
  std::string name;
  ParamType type = ParamType::Double;
  std::string default_value;
  double min = 0, max = 0;
  std::string help;
};

// What a plugin library says about itself (copied out of its info struct).
struct PluginDescription {
  std::string name, version, description, torch_version, devices;
  uint32_t abi_version = 0;      // the entry point's: 2, or 1 for an adapted version-1 plugin
  PluginCaps caps;               // version 1: what the adapter assumes until a compressor is made
  int cxx11_abi = -1;
  std::vector<ParamDescription> params;
  std::filesystem::path path;
};

// One entry of a directory scan: a usable plugin, or a refused one with the reason.
struct PluginListing {
  std::filesystem::path path;
  std::string origin;  // which search-path entry found it
  bool usable = false;
  std::string refusal;  // why it was refused, when !usable
  PluginDescription description;
};

// A compressor created by a plugin. Forwards every call through the plugin's noexcept
// trampolines and re-throws their errors as c10::Error on the host side.
class PluginCompressor final : public Compressor {
 public:
  PluginCompressor(std::shared_ptr<LoadedLibrary> lib, const cddp_plugin_info* info, Compressor* impl,
                   const ParamMap& params);
  ~PluginCompressor() override;
  PluginCompressor(const PluginCompressor&) = delete;
  PluginCompressor& operator=(const PluginCompressor&) = delete;

  std::string name() const override;
  std::vector<c10::DeviceType> supported_devices() const override;
  Compressed compress(const at::Tensor& grad, const CompressContext& ctx) override;
  void decompress_add_(const Compressed& c, at::Tensor& dense) const override;
  bool shared_indices() const noexcept override;
  double default_density() const noexcept override;
  Compressed compress_with_feedback(const at::Tensor& grad, at::Tensor& residual,
                                    const CompressContext& ctx) override;
  bool has_fused_feedback() const noexcept override;
  Compressed compress_with_momentum_feedback(const at::Tensor& grad, at::Tensor& velocity, double momentum,
                                             at::Tensor& residual, const CompressContext& ctx) override;

  Payload encode(const at::Tensor& acc, PluginState& state, const CompressContext& ctx) override;
  void encode_into(const at::Tensor& acc, PluginState& state, const CompressContext& ctx, Payload& out) override;
  void decode_add_(const Payload& payload, at::Tensor& dense) const override;
  void combine(const std::vector<Payload>& ranks, at::Tensor& average) const override;
  void decode_sum(const Payload& sum, int world, at::Tensor& average) const override;
  void run_rounds(const at::Tensor& acc, PluginState& state, RoundCollective& collective, const CompressContext& ctx,
                  at::Tensor& average, at::Tensor& approx) override;
  std::vector<StateSpec> state_specs(const std::vector<int64_t>& shape, at::ScalarType dtype) const override;
  int64_t wire_bytes(const std::vector<int64_t>& shape, at::ScalarType dtype, double density) const override;

  const PluginDescription& description() const { return description_; }
  // This compressor's capabilities (data; default_density already reflects a `ratio` parameter).
  PluginCaps caps() const override { return caps_; }

 private:
  std::shared_ptr<LoadedLibrary> lib_;  // declared first: destroyed last
  const cddp_plugin_info* info_;        // a version-1 plugin's is the loader's translation
  Compressor* impl_;
  PluginDescription description_;
  PluginCaps caps_;
};

class PluginLoader {
 public:
  explicit PluginLoader(PluginSearchPath search_path);

  // Loads (or reuses) the library for `name_or_path`, checks its ABI, validates `params`
  // and creates a compressor. Throws c10::Error naming every place searched when not found,
  // both versions on a version mismatch, and the key on a bad parameter.
  std::shared_ptr<PluginCompressor> create(const std::string& name_or_path, const ParamMap& params = {});

  // What the plugin says about itself (its parameter schema among it), without creating a
  // compressor: callers decide from the schema which parameters to pass. Throws as create().
  PluginDescription describe(const std::string& name_or_path);

  // Where `name_or_path` resolves to, without loading it.
  std::filesystem::path resolve(const std::string& name_or_path) const;

  // Every cddp_*.so in the search path, with its description or the reason it was refused.
  std::vector<PluginListing> list() const;

  const PluginSearchPath& search_path() const { return search_path_; }

 private:
  std::shared_ptr<LoadedLibrary> open(const std::filesystem::path& path);

  PluginSearchPath search_path_;
  std::vector<std::pair<std::filesystem::path, std::weak_ptr<LoadedLibrary>>> open_;
  // create() and describe() may be called from several threads at once (one per rank, say):
  // the libraries opened so far are shared, so open() holds this. A pointer keeps the loader movable.
  std::unique_ptr<std::mutex> open_mutex_ = std::make_unique<std::mutex>();
};

// The file name a plugin called `name` lives in: "cddp_<name>.so".
std::string plugin_file_name(const std::string& name);

}  // namespace cddp
