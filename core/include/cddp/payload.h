// payload.h — what a compressor puts on the wire for one tensor, how the ranks' payloads
// combine, and what a plugin may keep between steps. Part of plugin ABI version 2.
//
// Three kinds of payload (PayloadKind), declared by the plugin as data (PluginCaps):
//   Gather  per-rank payloads (sparse selections, bit-packed codes with scales). The host
//           gathers every rank's payload (sizes first when they vary), then the plugin
//           combines them in rank order into the average, or into its own aggregate such as a
//           majority vote, so that every rank ends bitwise identical.
//   Sum     payloads that may be added as they are (random-k values at shared indices, fp16
//           casts): the host allreduces the payload tensors and the plugin decodes the sum once.
//   Rounds  multi-round linear protocols (PowerSGD): the plugin gets a RoundCollective (an
//           allreduce-sum over the same ranks, nothing else) and returns the average and its
//           own approximation of what this rank contributed.
// Sparse selections (values + indices, `Compressed`) are Gather payloads the host knows how to
// average itself (PluginCaps::selection): top-k and threshold keep the host's fast sparse path.
//
// It will not communicate (the host does), keep error feedback (the host does: residual =
// acc − D(own payload), or acc − approximation for Rounds) or hold state: a plugin declares the
// state it needs (StateSpec), and the host allocates it, hands it in and checkpoints it.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace cddp {

enum class PayloadKind : int32_t { Gather = 1, Sum = 2, Rounds = 3 };
const char* payload_kind_name(PayloadKind kind);  // "gather", "sum", "rounds"

// One rank's encoding of one tensor. Every part is contiguous and travels as it is: bytes for
// Gather, elementwise sums for Sum (floating-point parts only).
struct Payload {
  std::vector<at::Tensor> parts;
  int64_t numel = 0;                // of the tensor it encodes
  std::vector<int64_t> shape;
  at::ScalarType dtype = at::ScalarType::Float;
  int world_size = 1;               // CompressContext::world_size it was encoded for (not sent)

  // Exactly the bytes handed to the collectives for this payload.
  int64_t wire_bytes() const;
};

// One tensor a plugin keeps between steps for one parameter (PowerSGD's warm-start Q, a
// quantizer's running scale). The host creates it zero-filled on the parameter's device, or
// keeps what a checkpoint held.
struct StateSpec {
  std::string name;
  std::vector<int64_t> shape;
  at::ScalarType dtype = at::ScalarType::Float;
};
using PluginState = std::map<std::string, at::Tensor>;

// The only collective a Rounds plugin may call: in place, the elementwise sum over the ranks
// of the same communicator. Every rank must call it the same number of times with the same
// shapes. Errors (a dead peer) throw.
class RoundCollective {
 public:
  virtual ~RoundCollective() = default;
  virtual int world_size() const = 0;
  virtual void allreduce_sum_(at::Tensor& tensor) = 0;
};

// What a plugin can do, as data (the ABI's cddp_plugin_caps, copied out on the host).
struct PluginCaps {
  PayloadKind kind = PayloadKind::Gather;
  bool selection = true;        // the payload is a sparse selection: compress()/decompress_add_()
  bool shared_indices = false;  // selection whose indices agree on every rank (a Sum of values)
  bool fused_feedback = false;  // compress_with_feedback() is one fused pass
  double default_density = -1;  // when the parameters set no `ratio`; -1: depends on the data
  std::vector<c10::DeviceType> devices{c10::DeviceType::CPU};
};

}  // namespace cddp
