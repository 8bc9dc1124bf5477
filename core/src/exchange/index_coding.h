// index_coding.h — how a sparse selection's indices are laid out on the wire (IndexCoding,
// declared in gradient_exchange.h): the byte counts every rank computes from the counts alone,
// and the Block16 encoder and decoder. Internal to core/src/exchange.
//
// It will not pack values, pad, or talk to other ranks: GradientExchange does.
#pragma once

#include <cddp/gradient_exchange.h>

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace cddp::detail {

// Bytes of `count` indices as plain int32 (int64 from 2^31 entries on).
int64_t plain_index_bytes(int64_t count, int64_t numel);
// Bytes of `count` indices Block16-coded: 4 per 65,536-entry block plus 2 per index.
int64_t block16_bytes(int64_t count, int64_t numel);
// Whether a selection of `count` entries travels Block16-coded (the smaller coding wins).
bool block16(IndexCoding coding, int64_t count, int64_t numel);

// Writes block16_bytes(n, numel) bytes at `dst` (8-byte aligned): the per-block uint32 counts,
// then the low 16 bits of each index, block after block. `idx`: [n] int32 or int64, contiguous;
// throws if an index is outside [0, numel). If the list is not grouped by block already, it is
// regrouped by a stable counting sort and `order` receives the permutation (order[pos] = list
// position sent at pos), which the values must follow; else `order` is left empty.
void encode_block16(const at::Tensor& idx, int64_t numel, uint8_t* dst, std::vector<int64_t>& order);
// The inverse, into `out` ([n] int32 or int64, contiguous). Throws, naming rank `from`, when the
// block counts do not add up to n or an index reaches past numel.
void decode_block16(const uint8_t* src, int64_t n, int64_t numel, at::Tensor& out, int from);

}  // namespace cddp::detail
