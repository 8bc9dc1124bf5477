// plugin_abi.h — the one header a compressor plugin needs, and the versioned ABI between
// a plugin library and the host.
//
// Modelled on NCCL's plugin ABI: the library exports a single `extern "C"` entry point,
// `cddp_compressor_plugin_v1`, that returns a pointer to a static `cddp_plugin_info`. The host
// checks abi_version, the LibTorch version and the C++ ABI flag *before* creating anything.
// Every call into the plugin goes through a noexcept trampoline defined here and compiled
// into the plugin, so no exception ever crosses the library boundary: errors travel back as
// text in a caller-owned buffer and the host re-throws them.
//
// Writing a plugin:
//     class MyCompressor : public cddp::Compressor { ... MyCompressor(const cddp::ParamMap&); };
//     static const cddp::ParamSpec kParams[] = {{"ratio", cddp::ParamType::Double, "0.01", 1e-9, 1, "density"}};
//     CDDP_DEFINE_COMPRESSOR_PLUGIN(MyCompressor, "mine", "1.0.0", "one line", kParams, "cpu")
//
// What it will not do: it does not make plugins portable across LibTorch versions or
// compilers. Tensors cross the boundary as C++ objects, so the host refuses any mismatch.
#pragma once

#include <cddp/compressor.h>
#include <cddp/plugin_params.h>

#include <torch/version.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>

// Bump on any change to cddp_plugin_info, Compressor, Compressed, CompressContext or ParamMap.
#define CDDP_PLUGIN_ABI_VERSION 1u
#define CDDP_PLUGIN_ENTRY_SYMBOL "cddp_compressor_plugin_v1"

#define CDDP_STRINGIFY_IMPL(x) #x
#define CDDP_STRINGIFY(x) CDDP_STRINGIFY_IMPL(x)
#define CDDP_TORCH_VERSION_STRING                                           \
  CDDP_STRINGIFY(TORCH_VERSION_MAJOR) "." CDDP_STRINGIFY(TORCH_VERSION_MINOR) \
  "." CDDP_STRINGIFY(TORCH_VERSION_PATCH)

#if defined(_GLIBCXX_USE_CXX11_ABI)
#define CDDP_CXX11_ABI _GLIBCXX_USE_CXX11_ABI
#else
#define CDDP_CXX11_ABI -1
#endif

#define CDDP_PLUGIN_EXPORT extern "C" __attribute__((visibility("default")))

extern "C" {

// Returned by every fallible trampoline: 0 on success, else `err` holds a NUL-terminated
// message (truncated to err_len).
typedef int cddp_status;

struct cddp_plugin_info {
  uint32_t abi_version;        // CDDP_PLUGIN_ABI_VERSION the plugin was built with
  uint32_t struct_size;        // sizeof(cddp_plugin_info), a second guard against skew
  const char* name;            // e.g. "topk"; what configs name
  const char* version;         // the plugin's own semantic version
  const char* description;     // one line
  const char* torch_version;   // "MAJOR.MINOR.PATCH" of the LibTorch it was built against
  int32_t cxx11_abi;           // _GLIBCXX_USE_CXX11_ABI it was built with
  const char* devices;         // comma-separated c10 device names: "cpu" or "cpu,cuda"
  const cddp::ParamSpec* params;
  size_t num_params;

  // Returns nullptr and fills err on invalid parameters.
  cddp::Compressor* (*create)(const cddp::ParamMap* params, char* err, size_t err_len);
  void (*destroy)(cddp::Compressor* c);
  cddp_status (*compress)(cddp::Compressor* c, const at::Tensor* grad, const cddp::CompressContext* ctx,
                          cddp::Compressed* out, char* err, size_t err_len);
  cddp_status (*compress_with_feedback)(cddp::Compressor* c, const at::Tensor* grad, at::Tensor* residual,
                                        const cddp::CompressContext* ctx, cddp::Compressed* out, char* err,
                                        size_t err_len);
  cddp_status (*decompress_add)(const cddp::Compressor* c, const cddp::Compressed* in, at::Tensor* dense,
                                char* err, size_t err_len);
};

typedef const cddp_plugin_info* (*cddp_plugin_entry_fn)();

}  // extern "C"

namespace cddp::plugin_detail {

inline void write_error(char* err, size_t len, const char* what) {
  if (!err || len == 0) return;
  std::strncpy(err, what ? what : "unknown error", len - 1);
  err[len - 1] = '\0';
}

// Runs f, turning any exception into a status + message. Plugin-side only.
template <class F>
cddp_status guarded(char* err, size_t len, F&& f) noexcept {
  try {
    f();
    return 0;
  } catch (const c10::Error& e) {
    write_error(err, len, e.what_without_backtrace());
  } catch (const std::exception& e) {
    write_error(err, len, e.what());
  } catch (...) {
    write_error(err, len, "non-standard exception thrown inside plugin");
  }
  return 1;
}

template <class T>
struct Trampolines {
  static cddp::Compressor* create(const cddp::ParamMap* params, char* err, size_t len) noexcept {
    cddp::Compressor* made = nullptr;
    guarded(err, len, [&] { made = new T(*params); });
    return made;
  }
  static void destroy(cddp::Compressor* c) noexcept { delete c; }
  static cddp_status compress(cddp::Compressor* c, const at::Tensor* g, const cddp::CompressContext* ctx,
                              cddp::Compressed* out, char* err, size_t len) noexcept {
    return guarded(err, len, [&] { *out = c->compress(*g, *ctx); });
  }
  static cddp_status compress_with_feedback(cddp::Compressor* c, const at::Tensor* g, at::Tensor* r,
                                            const cddp::CompressContext* ctx, cddp::Compressed* out,
                                            char* err, size_t len) noexcept {
    return guarded(err, len, [&] { *out = c->compress_with_feedback(*g, *r, *ctx); });
  }
  static cddp_status decompress_add(const cddp::Compressor* c, const cddp::Compressed* in, at::Tensor* dense,
                                    char* err, size_t len) noexcept {
    return guarded(err, len, [&] { c->decompress_add_(*in, *dense); });
  }
};

}  // namespace cddp::plugin_detail

// Defines the plugin's entry point. CLASS needs a constructor taking `const cddp::ParamMap&`
// that validates with cddp::ParamReader. PARAM_SPECS is a static array of cddp::ParamSpec.
#define CDDP_DEFINE_COMPRESSOR_PLUGIN(CLASS, NAME, VERSION, DESCRIPTION, PARAM_SPECS, DEVICES)       \
  CDDP_PLUGIN_EXPORT const cddp_plugin_info* cddp_compressor_plugin_v1() {                            \
    using T_ = ::cddp::plugin_detail::Trampolines<CLASS>;                                           \
    static const cddp_plugin_info info = {                                                          \
        CDDP_PLUGIN_ABI_VERSION, static_cast<uint32_t>(sizeof(cddp_plugin_info)), NAME, VERSION,    \
        DESCRIPTION, CDDP_TORCH_VERSION_STRING, CDDP_CXX11_ABI, DEVICES, PARAM_SPECS,               \
        sizeof(PARAM_SPECS) / sizeof(PARAM_SPECS[0]), &T_::create, &T_::destroy, &T_::compress,     \
        &T_::compress_with_feedback, &T_::decompress_add};                                          \
    return &info;                                                                                   \
  }
