// plugin_loader.cpp — resolves, opens and version-checks compressor plugin libraries with
// Boost.DLL, and wraps the compressors they create in PluginCompressor.
#include <cddp/plugin_abi.h>
#include <cddp/plugin_loader.h>

#include <boost/dll/runtime_symbol_info.hpp>
#include <boost/dll/shared_library.hpp>
#include <c10/util/Exception.h>

#include <algorithm>
#include <sstream>

namespace cddp {

namespace fs = std::filesystem;

// Owns one opened library. Shared by the loader's cache and every compressor it created.
class LoadedLibrary {
 public:
  explicit LoadedLibrary(const fs::path& path)
      : lib(path, boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local) {}
  boost::dll::shared_library lib;
  const cddp_plugin_info* info = nullptr;
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

PluginDescription describe(const cddp_plugin_info* info, const fs::path& path) {
  PluginDescription d;
  d.abi_version = info->abi_version;
  d.path = path;
  if (info->abi_version != CDDP_PLUGIN_ABI_VERSION) return d;  // other fields may not be laid out as we think
  d.name = info->name ? info->name : "";
  d.version = info->version ? info->version : "";
  d.description = info->description ? info->description : "";
  d.torch_version = info->torch_version ? info->torch_version : "";
  d.devices = info->devices ? info->devices : "";
  d.cxx11_abi = info->cxx11_abi;
  for (size_t i = 0; i < info->num_params; ++i) {
    const ParamSpec& s = info->params[i];
    d.params.push_back({s.name ? s.name : "", s.type, s.default_value ? s.default_value : "", s.min, s.max,
                        s.help ? s.help : ""});
  }
  return d;
}

// Empty when compatible, else why not — with both versions in the message.
std::string incompatibility(const cddp_plugin_info* info) {
  std::ostringstream os;
  if (info->abi_version != CDDP_PLUGIN_ABI_VERSION) {
    os << "plugin ABI version " << info->abi_version << " does not match the host's ABI version "
       << CDDP_PLUGIN_ABI_VERSION;
  } else if (info->struct_size != sizeof(cddp_plugin_info)) {
    os << "plugin info struct is " << info->struct_size << " bytes, the host expects " << sizeof(cddp_plugin_info);
  } else if (std::string(info->torch_version ? info->torch_version : "?") != CDDP_TORCH_VERSION_STRING) {
    os << "plugin was built against LibTorch " << (info->torch_version ? info->torch_version : "?")
       << " but the host runs LibTorch " << CDDP_TORCH_VERSION_STRING;
  } else if (info->cxx11_abi != CDDP_CXX11_ABI) {
    os << "plugin was built with _GLIBCXX_USE_CXX11_ABI=" << info->cxx11_abi << " but the host uses "
       << CDDP_CXX11_ABI;
  } else if (!info->create || !info->destroy || !info->compress || !info->decompress_add) {
    os << "plugin info struct has a null function pointer";
  }
  return os.str();
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
                                   Compressor* impl)
    : lib_(std::move(lib)), info_(info), impl_(impl), description_(describe(info, lib_->path)) {}

PluginCompressor::~PluginCompressor() { info_->destroy(impl_); }

std::string PluginCompressor::name() const { return description_.name; }

std::vector<c10::DeviceType> PluginCompressor::supported_devices() const {
  std::vector<c10::DeviceType> out;
  for (const auto& d : split_devices(info_->devices)) out.push_back(c10::Device(d).type());
  return out;
}

Compressed PluginCompressor::compress(const at::Tensor& grad, const CompressContext& ctx) {
  char err[kErrLen] = {0};
  Compressed out;
  if (info_->compress(impl_, &grad, &ctx, &out, err, sizeof err) != 0) TORCH_CHECK(false, err);
  return out;
}

void PluginCompressor::decompress_add_(const Compressed& c, at::Tensor& dense) const {
  char err[kErrLen] = {0};
  if (info_->decompress_add(impl_, &c, &dense, err, sizeof err) != 0) TORCH_CHECK(false, err);
}

bool PluginCompressor::shared_indices() const noexcept { return impl_->shared_indices(); }
double PluginCompressor::default_density() const noexcept { return impl_->default_density(); }
bool PluginCompressor::has_fused_feedback() const noexcept { return impl_->has_fused_feedback(); }

Compressed PluginCompressor::compress_with_feedback(const at::Tensor& grad, at::Tensor& residual,
                                                    const CompressContext& ctx) {
  char err[kErrLen] = {0};
  Compressed out;
  if (info_->compress_with_feedback(impl_, &grad, &residual, &ctx, &out, err, sizeof err) != 0)
    TORCH_CHECK(false, err);
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
  TORCH_CHECK(lib->lib.has(CDDP_PLUGIN_ENTRY_SYMBOL), "compressor plugin ", path.string(),
              " does not export the entry point '", CDDP_PLUGIN_ENTRY_SYMBOL,
              "' (not a cddp plugin, or built for another ABI generation)");
  auto entry = lib->lib.get<const cddp_plugin_info*()>(CDDP_PLUGIN_ENTRY_SYMBOL);
  lib->info = entry();
  TORCH_CHECK(lib->info != nullptr, "compressor plugin ", path.string(), " returned no info struct");
  std::string why = incompatibility(lib->info);
  TORCH_CHECK(why.empty(), "refusing compressor plugin ", path.string(), ": ", why);
  open_.emplace_back(path, lib);
  return lib;
}

std::shared_ptr<PluginCompressor> PluginLoader::create(const std::string& name_or_path, const ParamMap& params) {
  auto lib = open(resolve(name_or_path));
  char err[kErrLen] = {0};
  Compressor* impl = lib->info->create(&params, err, sizeof err);
  TORCH_CHECK(impl != nullptr, err[0] ? err : "plugin create() failed without a message");
  return std::make_shared<PluginCompressor>(lib, lib->info, impl);
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
        TORCH_CHECK(lib.lib.has(CDDP_PLUGIN_ENTRY_SYMBOL), "no entry point '", CDDP_PLUGIN_ENTRY_SYMBOL, "'");
        const cddp_plugin_info* info = lib.lib.get<const cddp_plugin_info*()>(CDDP_PLUGIN_ENTRY_SYMBOL)();
        TORCH_CHECK(info != nullptr, "entry point returned no info struct");
        l.description = describe(info, f);
        l.refusal = incompatibility(info);
        l.usable = l.refusal.empty();
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
