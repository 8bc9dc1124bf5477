// plugin_listing.cpp — `cddp-train plugins` (describe_plugins, declared in trainer.h): the
// search path with where each directory came from, then every plugin found, usable or
// refused with the loader's reason; --verbose adds the ABI, devices, payload kind and the
// parameter schema.
//
// It will not load a plugin's compressor or check parameters: listing only reads what each
// library declares.
#include "run/compression_setup.h"
#include "trainer.h"

#include <cddp/plugin_abi.h>
#include <cddp/plugin_loader.h>

#include <sstream>

namespace cddp::train {
namespace {

void describe_details(std::ostream& os, const PluginDescription& d) {
  os << "      LibTorch " << d.torch_version << ", plugin ABI " << d.abi_version
     << (d.abi_version == CDDP_PLUGIN_ABI_VERSION_V1 ? " (adapted)" : "") << ", C++11 ABI " << d.cxx11_abi
     << ", devices: " << d.devices << "\n";
  os << "      payload: " << payload_kind_name(d.caps.kind) << (d.caps.selection ? " (sparse selection" : " (")
     << (d.caps.shared_indices ? ", shared indices" : "") << (d.caps.selection ? ")" : "codec)") << "\n";
  os << "      parameters:\n";
  if (d.params.empty()) os << "        (none)\n";
  for (const auto& p : d.params) {
    os << "        " << p.name << " (" << param_type_name(p.type) << ", default " << p.default_value;
    if (p.type == ParamType::Int || p.type == ParamType::Double) os << ", range [" << p.min << ", " << p.max << "]";
    os << ")  " << p.help << "\n";
  }
}

}  // namespace

std::string describe_plugins(const std::vector<std::string>& extra_dirs, const RunContext& ctx, bool verbose) {
  PluginLoader loader(plugin_search_path(extra_dirs, ctx.env));
  std::ostringstream os;
  os << "search path:\n";
  const auto& sp = loader.search_path();
  for (size_t i = 0; i < sp.dirs.size(); ++i)
    os << "  " << sp.dirs[i].string() << "  (" << (i < sp.origins.size() ? sp.origins[i] : "") << ")\n";
  const auto listing = loader.list();
  int usable = 0, refused = 0;
  for (const auto& l : listing) (l.usable ? usable : refused)++;
  os << "\nplugins (" << usable << " usable, " << refused << " refused):\n";
  for (const auto& l : listing) {
    const auto& d = l.description;
    if (l.usable) {
      os << "  " << d.name << "  " << d.version << "  " << l.path.string() << "  [" << l.origin << "]\n";
      if (!d.description.empty()) os << "      " << d.description << "\n";
      if (verbose) describe_details(os, d);
    } else {
      os << "  REFUSED  " << l.path.string() << "  [" << l.origin << "]\n      reason: " << l.refusal << "\n";
    }
  }
  if (listing.empty()) os << "  (none found)\n";
  return os.str();
}

}  // namespace cddp::train
