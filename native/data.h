// Data capabilities other capability files use (data.cc).
#pragma once
#include <torch/torch.h>
#include <cstdint>

namespace fl {

// CIFAR augmentation, the one implementation (Dataset.augmentedBatches, augment() and the training
// step): x [B, C, H, W] -> new [B, C, H, W], each image zero-padded by `pad` pixels, cropped back
// at a random offset in [0, 2·pad]² and mirrored left-right with probability ½ (when `flip`).
// Randomness from a mt19937_64 seeded by `seed`: the same seed gives the same batch everywhere.
torch::Tensor augment(const torch::Tensor& x, uint64_t seed, int64_t pad, bool flip);

}  // namespace fl
