// quantizer_support.h — what the stochastic quantizer plugins (qsgd, terngrad, natural) share:
// their uniform draws, fixed-width bit packing, and the mean of the ranks' decodes.
//
//  - Uniforms: a 16-bit uniform k/2^16 for element i, from Philox4x32-10 (philox.h) keyed by
//    the run seed and a per-plugin stream tag, counter (block, step, parameter): every rank, run,
//    CPU and thread count draws the same numbers, and the global RNG is never touched. Different
//    tags give independent streams (random-k uses none of these).
//  - BitWriter / BitReader: codes of `width` bits (1..32), LSB first, back to back.
//  - all_finite / checked_input: the input checks every quantizer makes, naming the parameter.
//  - mean_of_decodes: the Gather aggregate of an unbiased quantizer, (Σ_r D(p_r)) / W summed
//    in rank order, so that every rank writes the same bits.
// Header-only: each plugin compiles it. It will not allocate or decide a wire format.
#pragma once

#include "philox.h"
#include "philox_lanes.h"

#include <cddp/compressor.h>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
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

// The draws, 16 bits an element: one Philox4x32-10 block gives eight. Elements come in chunks of
// kChunk = 512, each from 64 consecutive blocks (block number 64·(i / 512) + (r mod 64), r = i mod
// 512), lane (r mod 256) / 64 of it, and of that 32-bit word the low 16 bits for r < 256 and the
// high 16 bits otherwise: a layout in which a vector of consecutive blocks is stored as it is
// (philox_lanes.h, AVX-512/AVX2 when the CPU has them). Element i's draw depends on i alone, never
// on the thread count or the CPU. Half as many Philox blocks as one 32-bit word an element: the
// rounds were most of the encode's time.
//
// The price of 16 bits: u = k/2^16 takes 2^16 values, so a stochastic rounding "up when u < p"
// rounds up with probability ⌈p·2^16⌉/2^16 ∈ [p, p + 2^−16): each decoded entry is biased by at
// most 2^−16 of the gap between its two neighbours, always away from the lower one (each
// quantizer's header states the bound in its own terms). The ≥1,000-seed unbiasedness tests
// cannot resolve a bias that small (their allowance is ~5.4σ/√S), and stated here is all of it.
class Uniforms {
 public:
  static constexpr int kBlocks = 64, kWords = 4 * kBlocks, kChunk = 2 * kWords;

  explicit Uniforms(const Stream& s) : s_(s) {}
  // k in [0, 2^16) for element i, with u = k / 2^16. In order is fastest.
  uint32_t bits16(int64_t i) {
    const int64_t base = i & ~int64_t{kChunk - 1};
    if (base != base_) fill(base);
    return k_[i - base];
  }
  float at(int64_t i) { return static_cast<float>(bits16(i)) * (1.0f / 65536.0f); }  // exact in float
  // The kChunk draws of elements [base, base + kChunk), base a multiple of kChunk.
  const uint16_t* chunk(int64_t base) {
    if (base != base_) fill(base);
    return k_;
  }
  // The draws of elements [i0, i0 + len) into out, whole runs of a chunk at a time.
  void copy(int64_t i0, int64_t len, uint16_t* out) {
    while (len > 0) {
      const int64_t base = i0 & ~int64_t{kChunk - 1}, run = std::min<int64_t>(len, base + kChunk - i0);
      std::memcpy(out, chunk(base) + (i0 - base), size_t(run) * sizeof(uint16_t));
      out += run, i0 += run, len -= run;
    }
  }

 private:
  void fill(int64_t base) {
    uint32_t words[kWords];
    philox::fill_lanes(s_.key, static_cast<uint64_t>(base / kChunk) * kBlocks, s_.step, s_.param, kBlocks, words);
    for (int r = 0; r < kWords; ++r) {
      k_[r] = static_cast<uint16_t>(words[r]);
      k_[kWords + r] = static_cast<uint16_t>(words[r] >> 16);
    }
    base_ = base;
  }

  Stream s_;
  int64_t base_ = -1;
  uint16_t k_[kChunk];
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
  // put(code[j]) for j < len, the same bytes. Eight codes of `width` bits are exactly `width`
  // bytes, so from the first code that starts on a byte boundary on, whole groups of eight are
  // packed into one word and stored at once: no loop-carried bit count, no branch a code.
  void put_many(const uint32_t* code, int64_t len) {
    int64_t j = 0;
    while (j < len && (fill_ & 7) != 0) put(code[j++]);
    if (len - j >= 8) {
      for (; fill_ >= 8; fill_ -= 8, acc_ >>= 8) *out_++ = static_cast<uint8_t>(acc_);  // byte-aligned: whole bytes
      switch (width_) {
        case 2: j = groups<2>(code, j, len); break;
        case 3: j = groups<3>(code, j, len); break;
        case 4: j = groups<4>(code, j, len); break;
        case 5: j = groups<5>(code, j, len); break;
        case 6: j = groups<6>(code, j, len); break;
        case 9: j = groups<9>(code, j, len); break;
        default: break;  // other widths: one code at a time below
      }
    }
    while (j < len) put(code[j++]);
  }

 private:
  // Eight codes into W bytes, LSB first (little-endian), as put() stores them. In one 64-bit word
  // for W ≤ 8; for W = 9 the eighth code's top 8 bits make the ninth byte (a 128-bit word took
  // twice as long: its shifts are two-register instructions).
  template <int W>
  int64_t groups(const uint32_t* code, int64_t j, int64_t len) {
    static_assert(W >= 2 && W <= 9, "8·W bits must fit 64 bits and one more byte");
    for (; j + 8 <= len; j += 8) {
      uint64_t g = 0;
      for (int k = 0; k < (W == 9 ? 7 : 8); ++k) g |= static_cast<uint64_t>(code[j + k]) << (k * W);
      if constexpr (W == 9) {
        g |= static_cast<uint64_t>(code[j + 7]) << 63;  // its low bit is bit 63
        out_[8] = static_cast<uint8_t>(code[j + 7] >> 1);  // and its other 8 bits the ninth byte
      }
      std::memcpy(out_, &g, W < 8 ? W : 8);
      out_ += W;
    }
    return j;
  }

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

inline void fail_nonfinite(const char* plugin, const CompressContext& ctx) {
  TORCH_CHECK(false, plugin, ": non-finite value (NaN or Inf) in parameter '", ctx.param_name, "' at step ", ctx.step);
}

// The checks every quantizer makes on its input, naming the parameter. check_finite false: the
// caller checks finiteness in a pass of its own (max_abs_if_finite) and fails with fail_nonfinite.
inline at::Tensor checked_input(const char* plugin, const at::Tensor& acc, const CompressContext& ctx,
                                bool check_finite = true) {
  TORCH_CHECK(acc.is_cpu(), plugin, ": parameter '", ctx.param_name, "' is on ", acc.device(), "; ", plugin,
              " runs on CPU");
  TORCH_CHECK(acc.scalar_type() == at::kFloat || acc.scalar_type() == at::kDouble, plugin, ": parameter '",
              ctx.param_name, "' is ", acc.scalar_type(), "; expected float32 or float64");
  at::Tensor x = acc.reshape(-1).to(at::kFloat).contiguous();
  if (check_finite && !all_finite(x.data_ptr<float>(), x.numel())) fail_nonfinite(plugin, ctx);
  return x;
}

// What a payload says about the tensor it encodes (its parts are the caller's).
inline void describe_payload(Payload& p, const at::Tensor& acc, const CompressContext& ctx) {
  p.numel = acc.numel();
  p.shape = acc.sizes().vec();
  p.dtype = acc.scalar_type();
  p.world_size = ctx.world_size;
}

inline int64_t numel_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

}  // namespace cddp::quant
