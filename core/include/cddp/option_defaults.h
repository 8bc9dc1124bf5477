// option_defaults.h — the one place for every default that the library's options
// (CompressedSGDOptions, CompressedAdamWOptions) and cddp-train's config (trainer/config/
// train_config.h, docs/config.md) share. Both read them from here, so the two cannot drift;
// each option's meaning is documented where it is declared (compressed_sgd.h, compressed_adamw.h).
//
// Three defaults differ between the two on purpose, and both values are here with the reason:
// min_numel, value_dtype and exchange. Plain constants only: no types, no parsing, no torch.
#pragma once

#include <cstdint>

namespace cddp::defaults {

// Compression, both optimizers.
inline constexpr bool kErrorFeedback = true;
inline constexpr const char* kNonfinite = "error";        // "error" | "skip_step"
inline constexpr const char* kIndexCoding = "block16";    // "block16" | "plain"
inline constexpr bool kCompress1d = true;
inline constexpr bool kAutoDense = true;

// min_numel is 0 in the library and 32768 in the trainer. The library compresses every tensor it
// is given, with no threshold measured on anybody's model. The trainer's default is a measured
// choice for the models it trains: at 1 % a small tensor gets a handful of entries a step, and
// the small tensors (biases, the classifier) are the ones that matter most per parameter.
// Sending the study mlp's 20,480-entry classifier dense lifted top-k 1 % from 1.34 to 0.57
// points under dense, over three seeds, for 80 kB of dense allreduce a step (docs/results.md,
// "Small tensors dense: the min_numel default").
inline constexpr int64_t kLibraryMinNumel = 0;
inline constexpr int64_t kTrainerMinNumel = 32768;

// CompressedSGD.
inline constexpr const char* kMomentumMode = "dgc";       // "dgc" | "global"
inline constexpr const char* kScope = "layer";            // "layer" | "model"
inline constexpr const char* kValueDtype = "fp32";        // "fp32" | "bf16" | "fp16"
inline constexpr const char* kExchange = "allgather";     // "allgather" | "sparse_allreduce" | "auto"
// value_dtype and exchange: fp32 and the allgather in the library, which sends what it is given
// the way every peer's top-k does; bf16 and "auto" in the trainer, measured on its models
// (docs/results.md, "The wire defaults"): on the study mlp at W = 4 and 100 Mbit/s, top-k 1 %
// with bf16 values and the sparse allreduce ended at 86.93 ± 0.05 % over 3 seeds against the
// fp32 allgather's 86.94 ± 0.11 %, in 0.68× its step time; on simple_cnn 87.76 % against 87.39 %
// (one seed). The residual keeps each value's bf16 rounding, so nothing is lost; "auto" keeps the
// allgather where the sparse allreduce does not pay (W = 2: the same bytes in three collectives).
inline constexpr const char* kTrainerValueDtype = "bf16";
inline constexpr const char* kTrainerExchange = "auto";
inline constexpr bool kResidualLrScaling = false;
inline constexpr bool kOverlap = false;
inline constexpr double kBucketCapMb = 25;       // PyTorch DDP's bucket_cap_mb
inline constexpr double kFirstBucketCapMb = 1;   // and its first bucket

// CompressedAdamW (its weight decay is not here: the trainer's weight_decay is shared with SGD
// and defaults to 0, the library's to torch::optim::AdamW's 1e-2).
inline constexpr double kAdamBeta1 = 0.9;
inline constexpr double kAdamBeta2 = 0.999;
inline constexpr double kAdamEps = 1e-8;
inline constexpr bool kAmsgrad = false;
inline constexpr const char* kAdamWMode = "onebit";       // "onebit" | "naive"
inline constexpr int64_t kOnebitWarmupSteps = 100;

}  // namespace cddp::defaults
