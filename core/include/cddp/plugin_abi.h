// plugin_abi.h — the one header a compressor plugin needs, and the versioned ABI between
// a plugin library and the host.
//
// Modelled on NCCL's plugin ABI: the library exports a single `extern "C"` entry point,
// `cddp_compressor_plugin_v2`, that returns a pointer to a static `cddp_plugin_info`. Its
// capabilities are data (cddp_plugin_caps: payload kind, selection, shared indices, fused
// error feedback, default density, devices). The host checks abi_version, struct_size, the
// LibTorch version and the C++ ABI flag *before* creating anything. A library that exports
// only the version-1 entry point (`cddp_compressor_plugin_v1`, a sparsifier) is adapted: the
// host reads its capabilities once from the compressor it created. Every call into the plugin
// goes through a noexcept trampoline defined here and compiled into the plugin, so no
// exception ever crosses the library boundary in either direction: errors travel back as text
// in a caller-owned buffer and the other side re-throws them.
//
// Writing a plugin (see payload.h for the kinds):
//     class MyCompressor : public cddp::Compressor { ... MyCompressor(const cddp::ParamMap&); };
//     static const cddp::ParamSpec kParams[] = {{"ratio", cddp::ParamType::Double, "0.01", 1e-9, 1, "density"}};
//     CDDP_DEFINE_COMPRESSOR_PLUGIN_V2(MyCompressor, "mine", "1.0.0", "one line", kParams,
//                                      CDDP_CAPS_SELECTION(0.01, "cpu"))
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
#include <stdexcept>
#include <vector>

// Bump on any incompatible change to cddp_plugin_info, Compressor, Compressed, Payload,
// CompressContext or ParamMap. Fields appended to cddp_plugin_info keep the version: the host
// reads them only when struct_size covers them (encode_into and compress_with_momentum_feedback
// are). So do virtual functions appended to Compressor: the host calls a plugin's compressor
// only through the trampolines compiled into that plugin, never through its vtable.
#define CDDP_PLUGIN_ABI_VERSION 2u
#define CDDP_PLUGIN_ENTRY_SYMBOL "cddp_compressor_plugin_v2"
#define CDDP_PLUGIN_ABI_VERSION_V1 1u
#define CDDP_PLUGIN_ENTRY_SYMBOL_V1 "cddp_compressor_plugin_v1"

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

// Payload kinds (cddp::PayloadKind).
#define CDDP_PAYLOAD_GATHER 1
#define CDDP_PAYLOAD_SUM 2
#define CDDP_PAYLOAD_ROUNDS 3

// What the plugin can do, as data. The host never asks the compressor object for these.
struct cddp_plugin_caps {
  int32_t payload_kind;     // CDDP_PAYLOAD_*
  int32_t selection;        // 1: payloads are sparse selections (compress/decompress_add)
  int32_t shared_indices;   // 1: a selection with the same indices on every rank (kind SUM)
  int32_t fused_feedback;   // 1: compress_with_feedback is one fused pass
  double default_density;   // density when the parameters set no `ratio`; -1: data-dependent
  const char* devices;      // comma-separated c10 device names: "cpu" or "cpu,cuda"
};

// A host-owned handle through which a ROUNDS plugin sums tensors over the ranks.
struct cddp_round_collective {
  void* host;
  int32_t world_size;
  cddp_status (*allreduce_sum)(void* host, at::Tensor* tensor, char* err, size_t err_len);
};

struct cddp_plugin_info {
  uint32_t abi_version;        // CDDP_PLUGIN_ABI_VERSION the plugin was built with
  uint32_t struct_size;        // sizeof(cddp_plugin_info) as the plugin saw it
  const char* name;            // e.g. "topk"; what configs name
  const char* version;         // the plugin's own semantic version
  const char* description;     // one line
  const char* torch_version;   // "MAJOR.MINOR.PATCH" of the LibTorch it was built against
  int32_t cxx11_abi;           // _GLIBCXX_USE_CXX11_ABI it was built with
  const cddp::ParamSpec* params;
  size_t num_params;
  cddp_plugin_caps caps;

  // Returns nullptr and fills err on invalid parameters.
  cddp::Compressor* (*create)(const cddp::ParamMap* params, char* err, size_t err_len);
  void (*destroy)(cddp::Compressor* c);
  // Selections (caps.selection = 1).
  cddp_status (*compress)(cddp::Compressor* c, const at::Tensor* grad, const cddp::CompressContext* ctx,
                          cddp::Compressed* out, char* err, size_t err_len);
  cddp_status (*compress_with_feedback)(cddp::Compressor* c, const at::Tensor* grad, at::Tensor* residual,
                                        const cddp::CompressContext* ctx, cddp::Compressed* out, char* err,
                                        size_t err_len);
  cddp_status (*decompress_add)(const cddp::Compressor* c, const cddp::Compressed* in, at::Tensor* dense,
                                char* err, size_t err_len);
  // Every other payload (Compressor's ABI-v2 methods).
  cddp_status (*encode)(cddp::Compressor* c, const at::Tensor* acc, cddp::PluginState* state,
                        const cddp::CompressContext* ctx, cddp::Payload* out, char* err, size_t err_len);
  cddp_status (*decode_add)(const cddp::Compressor* c, const cddp::Payload* in, at::Tensor* dense, char* err,
                            size_t err_len);
  cddp_status (*combine)(const cddp::Compressor* c, const std::vector<cddp::Payload>* ranks, at::Tensor* average,
                         char* err, size_t err_len);
  cddp_status (*decode_sum)(const cddp::Compressor* c, const cddp::Payload* sum, int32_t world, at::Tensor* average,
                            char* err, size_t err_len);
  cddp_status (*run_rounds)(cddp::Compressor* c, const at::Tensor* acc, cddp::PluginState* state,
                            cddp_round_collective* collective, const cddp::CompressContext* ctx, at::Tensor* average,
                            at::Tensor* approx, char* err, size_t err_len);
  cddp_status (*state_specs)(const cddp::Compressor* c, const std::vector<int64_t>* shape, int32_t dtype,
                             std::vector<cddp::StateSpec>* out, char* err, size_t err_len);
  cddp_status (*wire_bytes)(const cddp::Compressor* c, const std::vector<int64_t>* shape, int32_t dtype,
                            double density, int64_t* out, char* err, size_t err_len);

  // ---- Appended within ABI 2: the host reads these only when struct_size covers them, and a
  // plugin built before them (struct_size == CDDP_PLUGIN_INFO_V2_BASE_SIZE) still loads. ----
  // Gather/Sum: Compressor::encode_into. `out` holds on entry the tensor's previous payload,
  // whose parts the plugin may write into (null: the host calls encode with an empty `out`).
  cddp_status (*encode_into)(cddp::Compressor* c, const at::Tensor* acc, cddp::PluginState* state,
                             const cddp::CompressContext* ctx, cddp::Payload* out, char* err, size_t err_len);
  // Selections: Compressor::compress_with_momentum_feedback (DGC's momentum correction in front
  // of error feedback; null: the host runs the unfused chain itself).
  cddp_status (*compress_with_momentum_feedback)(cddp::Compressor* c, const at::Tensor* grad, at::Tensor* velocity,
                                                 double momentum, at::Tensor* residual,
                                                 const cddp::CompressContext* ctx, cddp::Compressed* out, char* err,
                                                 size_t err_len);
};

// The size of the first ABI-2 layout (up to wire_bytes): the least a version-2 plugin declares.
#define CDDP_PLUGIN_INFO_V2_BASE_SIZE (offsetof(cddp_plugin_info, wire_bytes) + sizeof(void*))

// The version-1 layout, frozen: what `cddp_compressor_plugin_v1` returns. The host reads it to
// adapt a version-1 plugin; CDDP_DEFINE_COMPRESSOR_PLUGIN still writes it, so a version-1
// plugin's source builds unchanged.
struct cddp_plugin_info_v1 {
  uint32_t abi_version;  // 1
  uint32_t struct_size;
  const char* name;
  const char* version;
  const char* description;
  const char* torch_version;
  int32_t cxx11_abi;
  const char* devices;
  const cddp::ParamSpec* params;
  size_t num_params;
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
typedef const cddp_plugin_info_v1* (*cddp_plugin_entry_fn_v1)();

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

// The plugin-side view of the host's cddp_round_collective: a host error becomes an exception
// inside the plugin, which the trampoline turns back into a status for the host.
class HostCollective final : public cddp::RoundCollective {
 public:
  explicit HostCollective(cddp_round_collective& c) : c_(c) {}
  int world_size() const override { return c_.world_size; }
  void allreduce_sum_(at::Tensor& tensor) override {
    char err[1024] = {0};
    if (c_.allreduce_sum(c_.host, &tensor, err, sizeof err) != 0) throw std::runtime_error(err);
  }

 private:
  cddp_round_collective& c_;
};

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
  static cddp_status compress_with_momentum_feedback(cddp::Compressor* c, const at::Tensor* g, at::Tensor* u,
                                                     double m, at::Tensor* r, const cddp::CompressContext* ctx,
                                                     cddp::Compressed* out, char* err, size_t len) noexcept {
    return guarded(err, len, [&] { *out = c->compress_with_momentum_feedback(*g, *u, m, *r, *ctx); });
  }
  static cddp_status decompress_add(const cddp::Compressor* c, const cddp::Compressed* in, at::Tensor* dense,
                                    char* err, size_t len) noexcept {
    return guarded(err, len, [&] { c->decompress_add_(*in, *dense); });
  }
  static cddp_status encode(cddp::Compressor* c, const at::Tensor* acc, cddp::PluginState* state,
                            const cddp::CompressContext* ctx, cddp::Payload* out, char* err, size_t len) noexcept {
    return guarded(err, len, [&] { *out = c->encode(*acc, *state, *ctx); });
  }
  static cddp_status encode_into(cddp::Compressor* c, const at::Tensor* acc, cddp::PluginState* state,
                                 const cddp::CompressContext* ctx, cddp::Payload* out, char* err,
                                 size_t len) noexcept {
    return guarded(err, len, [&] { c->encode_into(*acc, *state, *ctx, *out); });
  }
  static cddp_status decode_add(const cddp::Compressor* c, const cddp::Payload* in, at::Tensor* dense, char* err,
                                size_t len) noexcept {
    return guarded(err, len, [&] { c->decode_add_(*in, *dense); });
  }
  static cddp_status combine(const cddp::Compressor* c, const std::vector<cddp::Payload>* ranks,
                             at::Tensor* average, char* err, size_t len) noexcept {
    return guarded(err, len, [&] { c->combine(*ranks, *average); });
  }
  static cddp_status decode_sum(const cddp::Compressor* c, const cddp::Payload* sum, int32_t world,
                                at::Tensor* average, char* err, size_t len) noexcept {
    return guarded(err, len, [&] { c->decode_sum(*sum, world, *average); });
  }
  static cddp_status run_rounds(cddp::Compressor* c, const at::Tensor* acc, cddp::PluginState* state,
                                cddp_round_collective* coll, const cddp::CompressContext* ctx, at::Tensor* average,
                                at::Tensor* approx, char* err, size_t len) noexcept {
    return guarded(err, len, [&] {
      HostCollective host(*coll);
      c->run_rounds(*acc, *state, host, *ctx, *average, *approx);
    });
  }
  static cddp_status state_specs(const cddp::Compressor* c, const std::vector<int64_t>* shape, int32_t dtype,
                                 std::vector<cddp::StateSpec>* out, char* err, size_t len) noexcept {
    return guarded(err, len, [&] { *out = c->state_specs(*shape, static_cast<at::ScalarType>(dtype)); });
  }
  static cddp_status wire_bytes(const cddp::Compressor* c, const std::vector<int64_t>* shape, int32_t dtype,
                                double density, int64_t* out, char* err, size_t len) noexcept {
    return guarded(err, len, [&] { *out = c->wire_bytes(*shape, static_cast<at::ScalarType>(dtype), density); });
  }
};

}  // namespace cddp::plugin_detail

// Capabilities, for CDDP_DEFINE_COMPRESSOR_PLUGIN_V2's last argument.
//   a sparse selection the host averages (top-k, threshold); DENSITY -1 when data-dependent:
#define CDDP_CAPS_SELECTION(DENSITY, DEVICES) (cddp_plugin_caps{CDDP_PAYLOAD_GATHER, 1, 0, 0, DENSITY, DEVICES})
//   the same, with compress_with_feedback fused:
#define CDDP_CAPS_SELECTION_FUSED(DENSITY, DEVICES) \
  (cddp_plugin_caps{CDDP_PAYLOAD_GATHER, 1, 0, 1, DENSITY, DEVICES})
//   a selection whose indices agree on every rank (seeded random-k): values are summed:
#define CDDP_CAPS_SHARED_SELECTION(DENSITY, DEVICES) (cddp_plugin_caps{CDDP_PAYLOAD_SUM, 1, 1, 0, DENSITY, DEVICES})
//   encode() + combine() (quantizers, signs) / encode() + decode_sum() (casts) / run_rounds():
#define CDDP_CAPS_GATHER(DEVICES) (cddp_plugin_caps{CDDP_PAYLOAD_GATHER, 0, 0, 0, -1.0, DEVICES})
#define CDDP_CAPS_SUM(DEVICES) (cddp_plugin_caps{CDDP_PAYLOAD_SUM, 0, 0, 0, -1.0, DEVICES})
#define CDDP_CAPS_ROUNDS(DEVICES) (cddp_plugin_caps{CDDP_PAYLOAD_ROUNDS, 0, 0, 0, -1.0, DEVICES})

// Defines the plugin's ABI-v2 entry point. CLASS needs a constructor taking
// `const cddp::ParamMap&` that validates with cddp::ParamReader. PARAM_SPECS is a static array
// of cddp::ParamSpec; CAPS one of the CDDP_CAPS_* above (or a cddp_plugin_caps of your own).
#define CDDP_DEFINE_COMPRESSOR_PLUGIN_V2(CLASS, NAME, VERSION, DESCRIPTION, PARAM_SPECS, CAPS) \
  CDDP_DEFINE_COMPRESSOR_PLUGIN_V2_N(CLASS, NAME, VERSION, DESCRIPTION, PARAM_SPECS,              \
                                     sizeof(PARAM_SPECS) / sizeof(PARAM_SPECS[0]), CAPS)
// The same with an explicit parameter count: 0 for a plugin that takes no parameters
// (PARAM_SPECS may then be nullptr).
#define CDDP_DEFINE_COMPRESSOR_PLUGIN_V2_N(CLASS, NAME, VERSION, DESCRIPTION, PARAM_SPECS, NUM_PARAMS, CAPS) \
  CDDP_PLUGIN_EXPORT const cddp_plugin_info* cddp_compressor_plugin_v2() {                                \
    using T_ = ::cddp::plugin_detail::Trampolines<CLASS>;                                                 \
    static const cddp_plugin_info info = {CDDP_PLUGIN_ABI_VERSION,                                        \
                                          static_cast<uint32_t>(sizeof(cddp_plugin_info)),                \
                                          NAME,                                                           \
                                          VERSION,                                                        \
                                          DESCRIPTION,                                                    \
                                          CDDP_TORCH_VERSION_STRING,                                      \
                                          CDDP_CXX11_ABI,                                                 \
                                          PARAM_SPECS,                                                    \
                                          NUM_PARAMS,                                                     \
                                          CAPS,                                                           \
                                          &T_::create,                                                    \
                                          &T_::destroy,                                                   \
                                          &T_::compress,                                                  \
                                          &T_::compress_with_feedback,                                    \
                                          &T_::decompress_add,                                            \
                                          &T_::encode,                                                    \
                                          &T_::decode_add,                                                \
                                          &T_::combine,                                                   \
                                          &T_::decode_sum,                                                \
                                          &T_::run_rounds,                                                \
                                          &T_::state_specs,                                               \
                                          &T_::wire_bytes,                                                \
                                          &T_::encode_into,                                               \
                                          &T_::compress_with_momentum_feedback};                          \
    return &info;                                                                                         \
  }

// The version-1 entry point, for sparsifiers written before ABI v2: it still builds, and the
// host adapts it (capabilities from the compressor's shared_indices(), default_density() and
// has_fused_feedback()). New plugins use CDDP_DEFINE_COMPRESSOR_PLUGIN_V2.
#define CDDP_DEFINE_COMPRESSOR_PLUGIN(CLASS, NAME, VERSION, DESCRIPTION, PARAM_SPECS, DEVICES)       \
  CDDP_PLUGIN_EXPORT const cddp_plugin_info_v1* cddp_compressor_plugin_v1() {                         \
    using T_ = ::cddp::plugin_detail::Trampolines<CLASS>;                                           \
    static const cddp_plugin_info_v1 info = {                                                       \
        CDDP_PLUGIN_ABI_VERSION_V1, static_cast<uint32_t>(sizeof(cddp_plugin_info_v1)), NAME, VERSION, \
        DESCRIPTION, CDDP_TORCH_VERSION_STRING, CDDP_CXX11_ABI, DEVICES, PARAM_SPECS,               \
        sizeof(PARAM_SPECS) / sizeof(PARAM_SPECS[0]), &T_::create, &T_::destroy, &T_::compress,     \
        &T_::compress_with_feedback, &T_::decompress_add};                                          \
    return &info;                                                                                   \
  }
