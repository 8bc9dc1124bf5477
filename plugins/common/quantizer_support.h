// quantizer_support.h — what the stochastic quantizer plugins (qsgd, terngrad, natural) share:
// their uniform draws, fixed-width bit packing, and the mean of the ranks' decodes.
//
//  - uniform01(key, i): a float in [0, 1) for element i, from Philox4x32-10 (philox.h) keyed by
//    the run seed and a per-plugin stream tag, counter (i/4, step, parameter): every rank, run
//    and thread count draws the same numbers, and the global RNG is never touched. Different
//    tags give independent streams (random-k uses none of these).
//  - BitWriter / BitReader: codes of `width` bits (1..32), LSB first, back to back.
//  - all_finite / checked_input: the input checks every quantizer makes, naming the parameter.
//  - mean_of_decodes: the Gather aggregate of an unbiased quantizer, (Σ_r D(p_r)) / W summed
//    in rank order, so that every rank writes the same bits.
// Header-only: each plugin compiles it. It will not allocate or decide a wire format.
#pragma once

#include "philox.h"

#include <cddp/compressor.h>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>
#include <limits>
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

// Draws for elements [4b, 4b+4) come from one Philox block. Callers ask for any i (in order is
// fastest): the draws are made kChunk at a time, the Philox rounds running across 64 blocks at
// once so that the compiler can vectorise them. Element i's draw depends on i alone.
class Uniforms {
 public:
  static constexpr int kBlocks = 64, kChunk = 4 * kBlocks;

  explicit Uniforms(const Stream& s) : s_(s) {}
  // The top 24 bits of lane i%4 of block i/4: k with u = k / 2^24.
  uint32_t bits24(int64_t i) {
    const int64_t base = i & ~int64_t{kChunk - 1};
    if (base != base_) fill(base);
    return k_[i - base];
  }
  float at(int64_t i) { return static_cast<float>(bits24(i)) * (1.0f / 16777216.0f); }  // exact in float

 private:
  // philox::philox4x32_10 over blocks base/4 .. base/4 + kBlocks − 1, lanes kept apart.
  void fill(int64_t base) {
    uint32_t c0[kBlocks], c1[kBlocks], c2[kBlocks], c3[kBlocks];
    const uint64_t block0 = static_cast<uint64_t>(base) >> 2;
    for (int j = 0; j < kBlocks; ++j) {
      const philox::Block c = philox::randomk_counter(block0 + j, s_.step, s_.param);
      c0[j] = c.c[0], c1[j] = c.c[1], c2[j] = c.c[2], c3[j] = c.c[3];
    }
    uint32_t k0 = s_.key.k0, k1 = s_.key.k1;
    for (int round = 0; round < 10; ++round) {
      for (int j = 0; j < kBlocks; ++j) {
        const uint64_t p0 = uint64_t{0xD2511F53u} * c0[j], p1 = uint64_t{0xCD9E8D57u} * c2[j];
        const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1[j] ^ k0, n2 = static_cast<uint32_t>(p0 >> 32) ^ c3[j] ^ k1;
        c0[j] = n0, c1[j] = static_cast<uint32_t>(p1), c2[j] = n2, c3[j] = static_cast<uint32_t>(p0);
      }
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    for (int j = 0; j < kBlocks; ++j) {
      k_[4 * j] = c0[j] >> 8, k_[4 * j + 1] = c1[j] >> 8, k_[4 * j + 2] = c2[j] >> 8, k_[4 * j + 3] = c3[j] >> 8;
    }
    base_ = base;
  }

  Stream s_;
  int64_t base_ = -1;
  uint32_t k_[kChunk];
};

inline int64_t packed_bytes(int64_t count, int width) { return (count * width + 7) / 8; }

// Codes of `width` bits (1..32), LSB first, back to back, into out[0, packed_bytes(count, width)).
// Whole bytes are stored as they fill; flush() (or the destructor) stores the last partial one.
class BitWriter {
 public:
  BitWriter(uint8_t* out, int width) : out_(out), width_(width) {}
  ~BitWriter() { flush(); }
  BitWriter(const BitWriter&) = delete;
  BitWriter& operator=(const BitWriter&) = delete;
  void put(uint32_t code) {  // code < 2^width
    acc_ |= static_cast<uint64_t>(code) << fill_;
    fill_ += width_;
    if (fill_ >= 32) {  // at most 63 bits held: store 4 bytes
      for (int b = 0; b < 4; ++b) out_[b] = static_cast<uint8_t>(acc_ >> (8 * b));
      out_ += 4;
      acc_ >>= 32;
      fill_ -= 32;
    }
  }
  void flush() {
    for (; fill_ > 0; fill_ -= 8, acc_ >>= 8) *out_++ = static_cast<uint8_t>(acc_);
    fill_ = 0;
  }

 private:
  uint8_t* out_;
  int width_;
  uint64_t acc_ = 0;
  int fill_ = 0;
};

// Reads what BitWriter wrote, byte by byte as needed: never past the last byte of the codes read.
class BitReader {
 public:
  BitReader(const uint8_t* in, int width) : in_(in), width_(width), mask_((uint64_t{1} << width) - 1) {}
  uint32_t get() {
    while (have_ < width_) {
      acc_ |= static_cast<uint64_t>(*in_++) << have_;
      have_ += 8;
    }
    const uint32_t code = static_cast<uint32_t>(acc_ & mask_);
    acc_ >>= width_;
    have_ -= width_;
    return code;
  }

 private:
  const uint8_t* in_;
  int width_;
  uint64_t mask_;
  uint64_t acc_ = 0;
  int have_ = 0;
};

// True when no entry is NaN or ±Inf: one vectorisable pass (at::isfinite(x).all() took 30 times as long).
inline bool all_finite(const float* x, int64_t n) {
  int ok = 1;
  for (int64_t i = 0; i < n; ++i) ok &= std::fabs(x[i]) <= std::numeric_limits<float>::max();
  return ok != 0;
}

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
  TORCH_CHECK(all_finite(x.data_ptr<float>(), x.numel()), plugin,
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
