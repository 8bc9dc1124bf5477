// quantizer_support.h — what the stochastic quantizer plugins (qsgd, terngrad, natural) share:
// their uniform draws, fixed-width bit packing, and the mean of the ranks' decodes.
//
//  - uniform01(key, i): a float in [0, 1) for element i, from Philox4x32-10 (philox.h) keyed by
//    the run seed and a per-plugin stream tag, counter (i/4, step, parameter): every rank, run
//    and thread count draws the same numbers, and the global RNG is never touched. Different
//    tags give independent streams (random-k uses none of these).
//  - BitWriter / BitReader: codes of `width` bits (1..32), LSB first, back to back.
//  - mean_of_decodes: the Gather aggregate of an unbiased quantizer, (Σ_r D(p_r)) / W summed
//    in rank order, so that every rank writes the same bits.
// Header-only: each plugin compiles it. It will not allocate or decide a wire format.
#pragma once

#include "philox.h"

#include <cddp/compressor.h>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <vector>

namespace cddp::quant {

struct Stream {
  philox::Key key;
  int64_t step, param;
};

// Stream tags: one per plugin, so that two quantizers never share draws.
enum : uint32_t { kTagQsgd = 0x51534744u, kTagTernGrad = 0x5445524Eu, kTagNatural = 0x4E415455u };

inline Stream stream_for(const CompressContext& ctx, uint32_t tag) {
  return Stream{philox::Key{static_cast<uint32_t>(ctx.seed) ^ tag, static_cast<uint32_t>(ctx.seed >> 32)}, ctx.step,
                ctx.param_index};
}

// Draws for elements [4b, 4b+4) come from one Philox block: callers walk i in order and
// refill every fourth element.
class Uniforms {
 public:
  explicit Uniforms(const Stream& s) : s_(s) {}
  float at(int64_t i) {
    const uint64_t block = static_cast<uint64_t>(i) >> 2;
    if (block != block_) {
      b_ = philox::philox4x32_10(philox::randomk_counter(block, s_.step, s_.param), s_.key);
      block_ = block;
    }
    return static_cast<float>(b_.c[i & 3] >> 8) * (1.0f / 16777216.0f);  // 24 bits: exact in float
  }

 private:
  Stream s_;
  uint64_t block_ = ~uint64_t{0};
  philox::Block b_{};
};

inline int64_t packed_bytes(int64_t count, int width) { return (count * width + 7) / 8; }

class BitWriter {
 public:
  BitWriter(uint8_t* out, int width) : out_(out), width_(width) {}
  void put(uint32_t code) {
    uint64_t v = code;
    int left = width_;
    while (left > 0) {
      const int room = 8 - static_cast<int>(bit_ & 7);
      const int n = left < room ? left : room;
      out_[bit_ >> 3] |= static_cast<uint8_t>((v & ((1u << n) - 1)) << (bit_ & 7));
      v >>= n;
      left -= n;
      bit_ += n;
    }
  }

 private:
  uint8_t* out_;
  int width_;
  int64_t bit_ = 0;
};

class BitReader {
 public:
  BitReader(const uint8_t* in, int width) : in_(in), width_(width) {}
  uint32_t get() {
    uint64_t v = 0;
    int got = 0;
    while (got < width_) {
      const int room = 8 - static_cast<int>(bit_ & 7);
      const int n = width_ - got < room ? width_ - got : room;
      v |= static_cast<uint64_t>((in_[bit_ >> 3] >> (bit_ & 7)) & ((1u << n) - 1)) << got;
      got += n;
      bit_ += n;
    }
    return static_cast<uint32_t>(v);
  }

 private:
  const uint8_t* in_;
  int width_;
  int64_t bit_ = 0;
};

// (Σ_r D(ranks[r])) / W into `average`, rank order.
inline void mean_of_decodes(const Compressor& codec, const std::vector<Payload>& ranks, at::Tensor& average) {
  TORCH_CHECK(!ranks.empty(), codec.name(), ": combine of no ranks");
  TORCH_CHECK(average.is_contiguous() && average.numel() == ranks[0].numel, codec.name(),
              ": combine needs a contiguous output of ", ranks[0].numel, " entries");
  average.zero_();
  for (const auto& p : ranks) codec.decode_add_(p, average);
  if (ranks.size() > 1) average.div_(static_cast<double>(ranks.size()));
}

// The checks every quantizer makes on its input, naming the parameter.
inline at::Tensor checked_input(const char* plugin, const at::Tensor& acc, const CompressContext& ctx) {
  TORCH_CHECK(acc.is_cpu(), plugin, ": parameter '", ctx.param_name, "' is on ", acc.device(), "; ", plugin,
              " runs on CPU");
  TORCH_CHECK(acc.scalar_type() == at::kFloat || acc.scalar_type() == at::kDouble, plugin, ": parameter '",
              ctx.param_name, "' is ", acc.scalar_type(), "; expected float32 or float64");
  at::Tensor x = acc.reshape(-1).to(at::kFloat).contiguous();
  TORCH_CHECK(x.numel() == 0 || at::isfinite(x).all().item<bool>(), plugin,
              ": non-finite value (NaN or Inf) in parameter '", ctx.param_name, "' at step ", ctx.step);
  return x;
}

inline Payload payload_like(const at::Tensor& acc, const CompressContext& ctx) {
  Payload p;
  p.numel = acc.numel();
  p.shape = acc.sizes().vec();
  p.dtype = acc.scalar_type();
  p.world_size = ctx.world_size;
  return p;
}

inline int64_t numel_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

}  // namespace cddp::quant
