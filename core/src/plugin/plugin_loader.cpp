// plugin_loader.cpp — resolves, opens and version-checks compressor plugin libraries with
// Boost.DLL, and wraps the compressors they create in PluginCompressor.
#include <cddp/plugin_abi.h>
#include <cddp/plugin_loader.h>

#include <boost/dll/runtime_symbol_info.hpp>
#include <boost/dll/shared_library.hpp>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstring>
#include <sstream>

namespace cddp {

namespace fs = std::filesystem;

// Owns one opened library. Shared by the loader's cache and every compressor it created.
class LoadedLibrary {
 public:
  explicit LoadedLibrary(const fs::path& path)
      : lib(path, boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local) {}
  boost::dll::shared_library lib;
  const cddp_plugin_info* info = nullptr;  // the library's own (v2), or `translated`
  cddp_plugin_info translated{};           // a version-1 plugin's info in the v2 layout, or a
                                           // version-2 plugin's, with what it predates null
  fs::path path;
};

namespace {

constexpr size_t kErrLen = 2048;

std::vector<std::string> split_devices(const char* devices) {
  std::vector<std::string> out;
  std::string cur;
  for (const char* p = devices ? devices : ""; ; ++p) {
    if (*p == ',' || *p == '\0') {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
      if (*p == '\0') break;
    } else if (*p != ' ') {
      cur += *p;
    }
  }
  return out;
}

PluginCaps caps_of(const cddp_plugin_caps& c) {
  PluginCaps caps;
  caps.kind = static_cast<PayloadKind>(c.payload_kind);
  caps.selection = c.selection != 0;
  caps.shared_indices = c.shared_indices != 0;
  caps.fused_feedback = c.fused_feedback != 0;
  caps.default_density = c.default_density;
  caps.devices.clear();
  for (const auto& d : split_devices(c.devices)) caps.devices.push_back(c10::Device(d).type());
  return caps;
}

// `info` has passed incompatibility(): its fields are laid out as we think.
PluginDescription describe(const cddp_plugin_info* info, const fs::path& path) {
  PluginDescription d;
  d.abi_version = info->abi_version;
  d.path = path;
  d.name = info->name ? info->name : "";
  d.version = info->version ? info->version : "";
  d.description = info->description ? info->description : "";
  d.torch_version = info->torch_version ? info->torch_version : "";
  d.devices = info->caps.devices ? info->caps.devices : "";
  d.cxx11_abi = info->cxx11_abi;
  d.caps = caps_of(info->caps);
  for (size_t i = 0; i < info->num_params; ++i) {
    const ParamSpec& s = info->params[i];
    d.params.push_back({s.name ? s.name : "", s.type, s.default_value ? s.default_value : "", s.min, s.max,
                        s.help ? s.help : ""});
  }
  return d;
}

std::string toolchain_mismatch(const char* torch_version, int32_t cxx11_abi) {
  std::ostringstream os;
  if (std::string(torch_version ? torch_version : "?") != CDDP_TORCH_VERSION_STRING)
    os << "plugin was built against LibTorch " << (torch_version ? torch_version : "?")
       << " but the host runs LibTorch " << CDDP_TORCH_VERSION_STRING;
  else if (cxx11_abi != CDDP_CXX11_ABI)
    os << "plugin was built with _GLIBCXX_USE_CXX11_ABI=" << cxx11_abi << " but the host uses " << CDDP_CXX11_ABI;
  return os.str();
}

// Empty when the version-2 info is usable, else why not — with both versions in the message.
std::string incompatibility(const cddp_plugin_info* info) {
  std::ostringstream os;
  if (info->abi_version != CDDP_PLUGIN_ABI_VERSION) {
    os << "plugin ABI version " << info->abi_version << " (entry point " << CDDP_PLUGIN_ENTRY_SYMBOL
       << ") does not match the host's ABI version " << CDDP_PLUGIN_ABI_VERSION;
    return os.str();
  }
  if (info->struct_size < CDDP_PLUGIN_INFO_V2_BASE_SIZE) {
    os << "plugin info struct is " << info->struct_size << " bytes, the host's ABI " << CDDP_PLUGIN_ABI_VERSION
       << " needs at least " << CDDP_PLUGIN_INFO_V2_BASE_SIZE;
    return os.str();
  }
  std::string tool = toolchain_mismatch(info->torch_version, info->cxx11_abi);
  if (!tool.empty()) return tool;
  const cddp_plugin_caps& c = info->caps;
  const std::string who = std::string("plugin '") + (info->name ? info->name : "?") + "'";
  if (c.payload_kind < CDDP_PAYLOAD_GATHER || c.payload_kind > CDDP_PAYLOAD_ROUNDS) {
    os << who << " declares payload kind " << c.payload_kind << "; expected 1 (gather), 2 (sum) or 3 (rounds)";
  } else if (c.selection && c.payload_kind == CDDP_PAYLOAD_ROUNDS) {
    os << who << " declares a selection with payload kind rounds; selections are gather or sum payloads";
  } else if (c.shared_indices && !(c.selection && c.payload_kind == CDDP_PAYLOAD_SUM)) {
    os << who << " declares shared indices, which needs a selection of payload kind sum";
  } else if (!info->create || !info->destroy) {
    os << who << ": its info struct has a null create/destroy";
  } else if (c.selection && (!info->compress || !info->compress_with_feedback || !info->decompress_add)) {
    os << who << " declares a selection but its info struct has a null compress/decompress_add";
  } else if (!c.selection && c.payload_kind != CDDP_PAYLOAD_ROUNDS && (!info->encode || !info->decode_add)) {
    os << who << " declares " << (c.payload_kind == CDDP_PAYLOAD_SUM ? "sum" : "gather")
       << " payloads but its info struct has a null encode/decode_add";
  }
  return os.str();
}

// A version-1 plugin's info, checked (empty: usable) and translated into the v2 layout. Its
// caps are the adapter's defaults until a compressor is created (PluginCompressor reads them).
std::string translate_v1(const cddp_plugin_info_v1* v1, cddp_plugin_info& out) {
  std::ostringstream os;
  if (v1->abi_version != CDDP_PLUGIN_ABI_VERSION_V1 || v1->struct_size != sizeof(cddp_plugin_info_v1)) {
    os << "plugin exports " << CDDP_PLUGIN_ENTRY_SYMBOL_V1 << " but declares ABI version " << v1->abi_version
       << " in a " << v1->struct_size << "-byte struct; the host reads ABI " << CDDP_PLUGIN_ABI_VERSION
       << " and adapts ABI " << CDDP_PLUGIN_ABI_VERSION_V1;
    return os.str();
  }
  std::string tool = toolchain_mismatch(v1->torch_version, v1->cxx11_abi);
  if (!tool.empty()) return tool;
  if (!v1->create || !v1->destroy || !v1->compress || !v1->compress_with_feedback || !v1->decompress_add)
    return "plugin info struct has a null function pointer";
  out = cddp_plugin_info{};
  out.abi_version = CDDP_PLUGIN_ABI_VERSION_V1;
  out.struct_size = sizeof(cddp_plugin_info);
  out.name = v1->name;
  out.version = v1->version;
  out.description = v1->description;
  out.torch_version = v1->torch_version;
  out.cxx11_abi = v1->cxx11_abi;
  out.params = v1->params;
  out.num_params = v1->num_params;
  out.caps = cddp_plugin_caps{CDDP_PAYLOAD_GATHER, 1, 0, 0, -1.0, v1->devices};
  out.create = v1->create;
  out.destroy = v1->destroy;
  out.compress = v1->compress;
  out.compress_with_feedback = v1->compress_with_feedback;
  out.decompress_add = v1->decompress_add;
  return "";
}

// Finds the entry point (v2 first, then v1), fills lib.info; returns why it is refused, or "".
std::string read_info(LoadedLibrary& lib) {
  if (lib.lib.has(CDDP_PLUGIN_ENTRY_SYMBOL)) {
    lib.info = lib.lib.get<const cddp_plugin_info*()>(CDDP_PLUGIN_ENTRY_SYMBOL)();
    if (!lib.info) return "entry point returned no info struct";
    std::string why = incompatibility(lib.info);
    if (!why.empty()) return why;
    // A host-owned copy of what the plugin declared: fields appended after it was built
    // (beyond its struct_size) stay null, and the host never reads past the plugin's struct.
    lib.translated = cddp_plugin_info{};
    std::memcpy(static_cast<void*>(&lib.translated), lib.info,
                std::min<size_t>(lib.info->struct_size, sizeof(cddp_plugin_info)));
    lib.info = &lib.translated;
    return "";
  }
  if (lib.lib.has(CDDP_PLUGIN_ENTRY_SYMBOL_V1)) {
    const cddp_plugin_info_v1* v1 = lib.lib.get<const cddp_plugin_info_v1*()>(CDDP_PLUGIN_ENTRY_SYMBOL_V1)();
    if (!v1) return "entry point returned no info struct";
    std::string why = translate_v1(v1, lib.translated);
    if (why.empty()) lib.info = &lib.translated;
    return why;
  }
  return std::string("no entry point '") + CDDP_PLUGIN_ENTRY_SYMBOL + "' (ABI " +
         std::to_string(CDDP_PLUGIN_ABI_VERSION) + ") or '" + CDDP_PLUGIN_ENTRY_SYMBOL_V1 + "' (ABI " +
         std::to_string(CDDP_PLUGIN_ABI_VERSION_V1) + "): not a cddp plugin, or built for another ABI generation";
}

bool looks_like_path(const std::string& s) {
  return s.find('/') != std::string::npos ||
         (s.size() > 3 && s.compare(s.size() - 3, 3, ".so") == 0);
}

}  // namespace

std::string plugin_file_name(const std::string& name) { return "cddp_" + name + ".so"; }

void PluginSearchPath::add(const fs::path& dir, const std::string& origin) {
  if (dir.empty()) return;
  for (const auto& d : dirs)
    if (d == dir) return;
  dirs.push_back(dir);
  origins.push_back(origin);
}

PluginSearchPath PluginSearchPath::standard(const std::vector<fs::path>& configured, const char* env) {
  PluginSearchPath sp;
  for (const auto& d : configured) sp.add(d, "configured");
  if (env) {
    std::string s(env);
    size_t start = 0;
    while (start <= s.size()) {
      size_t end = s.find(':', start);
      if (end == std::string::npos) end = s.size();
      if (end > start) sp.add(s.substr(start, end - start), "CDDP_PLUGIN_PATH");
      start = end + 1;
    }
  }
  std::error_code ec;
  fs::path exe = boost::dll::program_location(ec);
  if (!ec) sp.add(exe.parent_path().parent_path() / CDDP_INSTALL_PLUGIN_SUBDIR, "install");
  sp.add(CDDP_BUILD_PLUGIN_DIR, "build tree");
  return sp;
}

PluginCompressor::PluginCompressor(std::shared_ptr<LoadedLibrary> lib, const cddp_plugin_info* info,
                                   Compressor* impl, const ParamMap& params)
    : lib_(std::move(lib)), info_(info), impl_(impl), description_(describe(info, lib_->path)),
      caps_(description_.caps) {
  if (info_->abi_version == CDDP_PLUGIN_ABI_VERSION_V1) {  // the adapter: ask the compressor once
    caps_.shared_indices = impl_->shared_indices();
    caps_.kind = caps_.shared_indices ? PayloadKind::Sum : PayloadKind::Gather;
    caps_.fused_feedback = impl_->has_fused_feedback();
    caps_.default_density = impl_->default_density();
    return;
  }
  auto ratio = params.find("ratio");  // a density parameter overrides the declared default
  if (ratio != params.end()) {
    if (auto* d = std::get_if<double>(&ratio->second)) caps_.default_density = *d;
    if (auto* i = std::get_if<int64_t>(&ratio->second)) caps_.default_density = double(*i);
  }
}

PluginCompressor::~PluginCompressor() { info_->destroy(impl_); }

std::string PluginCompressor::name() const { return description_.name; }

std::vector<c10::DeviceType> PluginCompressor::supported_devices() const { return caps_.devices; }

namespace {
// Calls a trampoline; a failure is re-thrown as c10::Error with the plugin's message.
template <class F>
void call(const char* what, const std::string& plugin, F&& f, const std::string& param = "") {
  char err[kErrLen] = {0};
  if (f(err, sizeof err) == 0) return;
  if (param.empty()) TORCH_CHECK(false, err[0] ? err : what);
  TORCH_CHECK(false, "compressor plugin '", plugin, "' on parameter '", param, "': ", err[0] ? err : what);
}
template <class Fn>
Fn require(Fn fn, const PluginDescription& d, const char* what) {
  TORCH_CHECK(fn != nullptr, "compressor plugin '", d.name, "' (ABI ", d.abi_version, ") has no ", what,
              ": it declares ", payload_kind_name(d.caps.kind), d.caps.selection ? " selections" : " payloads");
  return fn;
}
}  // namespace

Compressed PluginCompressor::compress(const at::Tensor& grad, const CompressContext& ctx) {
  Compressed out;
  auto fn = require(info_->compress, description_, "compress()");
  call("compress failed", name(), [&](char* e, size_t n) { return fn(impl_, &grad, &ctx, &out, e, n); },
       ctx.param_name);
  return out;
}

void PluginCompressor::decompress_add_(const Compressed& c, at::Tensor& dense) const {
  auto fn = require(info_->decompress_add, description_, "decompress_add()");
  call("decompress failed", name(), [&](char* e, size_t n) { return fn(impl_, &c, &dense, e, n); });
}

bool PluginCompressor::shared_indices() const noexcept { return caps_.shared_indices; }
double PluginCompressor::default_density() const noexcept { return caps_.default_density; }
bool PluginCompressor::has_fused_feedback() const noexcept { return caps_.fused_feedback; }

Compressed PluginCompressor::compress_with_feedback(const at::Tensor& grad, at::Tensor& residual,
                                                    const CompressContext& ctx) {
  Compressed out;
  auto fn = require(info_->compress_with_feedback, description_, "compress_with_feedback()");
  call("compress failed", name(), [&](char* e, size_t n) { return fn(impl_, &grad, &residual, &ctx, &out, e, n); },
       ctx.param_name);
  return out;
}

Compressed PluginCompressor::compress_with_momentum_feedback(const at::Tensor& grad, at::Tensor& velocity,
                                                             double momentum, at::Tensor& residual,
                                                             const CompressContext& ctx) {
  if (!info_->compress_with_momentum_feedback)  // a plugin built before it, or a version-1 plugin
    return Compressor::compress_with_momentum_feedback(grad, velocity, momentum, residual, ctx);
  Compressed out;
  call("compress failed", name(),
       [&](char* e, size_t n) {
         return info_->compress_with_momentum_feedback(impl_, &grad, &velocity, momentum, &residual, &ctx, &out, e, n);
       },
       ctx.param_name);
  return out;
}

Payload PluginCompressor::encode(const at::Tensor& acc, PluginState& state, const CompressContext& ctx) {
  Payload out;
  auto fn = require(info_->encode, description_, "encode()");
  call("encode failed", name(), [&](char* e, size_t n) { return fn(impl_, &acc, &state, &ctx, &out, e, n); },
       ctx.param_name);
  return out;
}

void PluginCompressor::encode_into(const at::Tensor& acc, PluginState& state, const CompressContext& ctx,
                                   Payload& out) {
  if (!info_->encode_into) {  // a plugin built before encode_into: a fresh payload
    out = encode(acc, state, ctx);
    return;
  }
  call("encode failed", name(),
       [&](char* e, size_t n) { return info_->encode_into(impl_, &acc, &state, &ctx, &out, e, n); }, ctx.param_name);
}

void PluginCompressor::decode_add_(const Payload& payload, at::Tensor& dense) const {
  auto fn = require(info_->decode_add, description_, "decode_add()");
  call("decode failed", name(), [&](char* e, size_t n) { return fn(impl_, &payload, &dense, e, n); });
}

void PluginCompressor::combine(const std::vector<Payload>& ranks, at::Tensor& average) const {
  auto fn = require(info_->combine, description_, "combine()");
  call("combine failed", name(), [&](char* e, size_t n) { return fn(impl_, &ranks, &average, e, n); });
}

void PluginCompressor::decode_sum(const Payload& sum, int world, at::Tensor& average) const {
  auto fn = require(info_->decode_sum, description_, "decode_sum()");
  call("decode_sum failed", name(), [&](char* e, size_t n) { return fn(impl_, &sum, world, &average, e, n); });
}

namespace {
// The host side of cddp_round_collective: the plugin's calls land here, errors go back as text.
struct RoundBridge {
  RoundCollective* collective;
  static cddp_status allreduce_sum(void* host, at::Tensor* t, char* err, size_t len) noexcept {
    return plugin_detail::guarded(err, len, [&] { static_cast<RoundBridge*>(host)->collective->allreduce_sum_(*t); });
  }
};
}  // namespace

void PluginCompressor::run_rounds(const at::Tensor& acc, PluginState& state, RoundCollective& collective,
                                  const CompressContext& ctx, at::Tensor& average, at::Tensor& approx) {
  auto fn = require(info_->run_rounds, description_, "run_rounds()");
  RoundBridge bridge{&collective};
  cddp_round_collective handle{&bridge, collective.world_size(), &RoundBridge::allreduce_sum};
  call("rounds failed", name(),
       [&](char* e, size_t n) { return fn(impl_, &acc, &state, &handle, &ctx, &average, &approx, e, n); });
}

std::vector<StateSpec> PluginCompressor::state_specs(const std::vector<int64_t>& shape, at::ScalarType dtype) const {
  if (!info_->state_specs) return {};
  std::vector<StateSpec> out;
  call("state_specs failed", name(), [&](char* e, size_t n) {
    return info_->state_specs(impl_, &shape, static_cast<int32_t>(dtype), &out, e, n);
  });
  return out;
}

int64_t PluginCompressor::wire_bytes(const std::vector<int64_t>& shape, at::ScalarType dtype, double density) const {
  if (!info_->wire_bytes) return -1;
  int64_t out = -1;
  call("wire_bytes failed", name(), [&](char* e, size_t n) {
    return info_->wire_bytes(impl_, &shape, static_cast<int32_t>(dtype), density, &out, e, n);
  });
  return out;
}

PluginLoader::PluginLoader(PluginSearchPath search_path) : search_path_(std::move(search_path)) {}

fs::path PluginLoader::resolve(const std::string& name_or_path) const {
  TORCH_CHECK(!name_or_path.empty(), "compressor plugin name is empty");
  if (looks_like_path(name_or_path)) {
    TORCH_CHECK(fs::exists(name_or_path), "compressor plugin file not found: ", name_or_path);
    return fs::absolute(name_or_path);
  }
  std::ostringstream searched;
  const std::string file = plugin_file_name(name_or_path);
  for (size_t i = 0; i < search_path_.dirs.size(); ++i) {
    fs::path candidate = search_path_.dirs[i] / file;
    if (fs::exists(candidate)) return candidate;
    searched << "\n  " << candidate.string() << " (" << search_path_.origins[i] << ")";
  }
  TORCH_CHECK(false, "compressor plugin '", name_or_path, "' not found; searched:", searched.str(),
              "\nSet [compression] plugin_dirs or CDDP_PLUGIN_PATH, or give a path to the .so.");
}

std::shared_ptr<LoadedLibrary> PluginLoader::open(const fs::path& path) {
  const std::lock_guard<std::mutex> lock(*open_mutex_);
  for (auto it = open_.begin(); it != open_.end();) {
    if (auto alive = it->second.lock()) {
      if (it->first == path) return alive;
      ++it;
    } else {
      it = open_.erase(it);
    }
  }
  std::shared_ptr<LoadedLibrary> lib;
  try {
    lib = std::make_shared<LoadedLibrary>(path);
  } catch (const std::exception& e) {
    TORCH_CHECK(false, "cannot load compressor plugin ", path.string(), ": ", e.what());
  }
  lib->path = path;
  const std::string why = read_info(*lib);
  TORCH_CHECK(why.empty(), "refusing compressor plugin ", path.string(), ": ", why);
  open_.emplace_back(path, lib);
  return lib;
}

std::shared_ptr<PluginCompressor> PluginLoader::create(const std::string& name_or_path, const ParamMap& params) {
  auto lib = open(resolve(name_or_path));
  char err[kErrLen] = {0};
  Compressor* impl = lib->info->create(&params, err, sizeof err);
  TORCH_CHECK(impl != nullptr, err[0] ? err : "plugin create() failed without a message");
  return std::make_shared<PluginCompressor>(lib, lib->info, impl, params);
}

PluginDescription PluginLoader::describe(const std::string& name_or_path) {
  auto lib = open(resolve(name_or_path));
  return cddp::describe(lib->info, lib->path);
}

std::vector<PluginListing> PluginLoader::list() const {
  std::vector<PluginListing> out;
  std::vector<std::string> seen_names;
  for (size_t i = 0; i < search_path_.dirs.size(); ++i) {
    std::error_code ec;
    if (!fs::is_directory(search_path_.dirs[i], ec)) continue;
    std::vector<fs::path> files;
    for (const auto& entry : fs::directory_iterator(search_path_.dirs[i], ec)) {
      const std::string fname = entry.path().filename().string();
      if (fname.rfind("cddp_", 0) == 0 && entry.path().extension() == ".so") files.push_back(entry.path());
    }
    std::sort(files.begin(), files.end());
    for (const auto& f : files) {
      PluginListing l;
      l.path = f;
      l.origin = search_path_.origins[i];
      try {
        LoadedLibrary lib(f);
        l.refusal = read_info(lib);
        l.usable = l.refusal.empty();
        if (l.usable) l.description = cddp::describe(lib.info, f);
      } catch (const c10::Error& e) {
        l.refusal = e.what_without_backtrace();
      } catch (const std::exception& e) {
        l.refusal = e.what();
      }
      out.push_back(std::move(l));
    }
  }
  return out;
}

}  // namespace cddp
