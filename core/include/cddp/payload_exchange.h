// payload_exchange.h — *how* the payloads of codecs that are not selections are averaged
// across ranks: one collective pattern per PayloadKind (payload.h).
//
//  - gather: every rank's payloads for all slots of the step are packed into one byte buffer,
//            padded to the largest rank's size (Gloo in LibTorch 1.13 gathers equal sizes only),
//            and allgathered once. When a slot's size is not declared (the plugin's cost model
//            says -1) the part sizes are allgathered first. Each slot's codec then combines the
//            ranks' payloads in rank order, so every rank writes the same bits.
//  - sum:    the payload parts of every slot, grouped by dtype, go through one allreduce per
//            dtype; the codec decodes the sum once.
//  - rounds: the codec runs its own protocol through a RoundCollective over the same
//            communicator (allreduce-sum and nothing else), whose bytes are counted here.
// Received parts are flat (1-D) tensors of the dtype the local payload's part has.
//
// It will not decide routing, keep residuals or state, or apply the average: CompressedSGD
// does. A payload whose size disagrees with what its plugin declared is a clear error naming
// the plugin and the parameter, on the rank that sent it, before any collective.
#pragma once

#include <cddp/communicator.h>
#include <cddp/compression_stats.h>
#include <cddp/compressor.h>

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace cddp {

struct PayloadSlot {
  const Payload* local = nullptr;      // this rank's payload (gather, sum)
  const Compressor* codec = nullptr;   // combines or decodes it
  at::Tensor* average = nullptr;       // out: contiguous [numel], every entry written
  std::string name;                    // the parameter, for error messages
  // >= 0: the bytes the plugin's cost model declared for this payload (same on every rank):
  // checked against the payload, and the sizes exchange is skipped when every slot declares.
  int64_t declared_bytes = -1;
};

// RoundCollective over a Communicator: allreduce-sum only, bytes counted into a StepStats.
class CountingRoundCollective final : public RoundCollective {
 public:
  CountingRoundCollective(Communicator& comm, StepStats& stats) : comm_(comm), stats_(stats) {}
  int world_size() const override { return comm_.world_size(); }
  void allreduce_sum_(at::Tensor& tensor) override;

 private:
  Communicator& comm_;
  StepStats& stats_;
};

class PayloadExchange {
 public:
  explicit PayloadExchange(Communicator& comm) : comm_(comm) {}

  // Gather payloads: one allgather (plus one for the sizes unless every slot declares them).
  void gather(std::vector<PayloadSlot>& slots, StepStats& stats);
  // Sum payloads: one allreduce per part dtype.
  void sum(std::vector<PayloadSlot>& slots, StepStats& stats);

 private:
  Communicator& comm_;
  at::Tensor packed_;                 // reused from call to call: the same sizes come back each step
  std::vector<at::Tensor> gathered_;
};

}  // namespace cddp
