// data (data.cc): dataset readers (IDX, CIFAR binary, NumPy .npy), synthetic sets and CIFAR
// augmentation. Every reader returns images float32 [N, C, H, W] in [0, 1] and labels int64 [N];
// a bad file is ERR_FORMAT naming the file and what was wrong, a missing one ERR_IO. The ops'
// glue is binding/data.cc; training (train.cc) uses augment.
#pragma once
#include <torch/torch.h>
#include <cstdint>
#include <string>
#include <vector>

namespace fl {

struct LoadedData {
  torch::Tensor images;  // float32 [N, C, H, W] in [0, 1]
  torch::Tensor labels;  // int64 [N]; undefined when no labels were read
  int64_t numClasses = 0;
};

// IDX (LeCun's MNIST format, plain or gzip): images [N, H, W] ubyte -> [N, 1, H, W] float32 / 255;
// labels [N] ubyte -> int64, each in [0, numClasses). lblPath "": images only.
LoadedData loadIdxPair(const std::string& imgPath, const std::string& lblPath, int64_t numClasses);

// CIFAR binary: records of [label bytes][3072 bytes: 1024 R, 1024 G, 1024 B, row-major 32×32].
// variant 10: 1 label byte; 100: coarse then fine label byte (coarse picks which). Files concatenated.
LoadedData loadCifar(const std::vector<std::string>& paths, int variant, bool coarse);

// NumPy .npy (C order; little-endian or single-byte types), read as what it holds:
//   Images  [N, H, W], [N, C, H, W] (C = 1, 3) or [N, H, W, C] (C = 1, 3, 4) -> float32 [N, C, H, W]
//           in [0, 1] (uint8 / 255; float values must already lie in [0, 1]);
//   Labels  a 1-D integer array [N], all ≥ 0 -> int64 [N];
//   Raw     the array in its own dtype and shape.
enum class NpyRole { Images, Labels, Raw };
NpyRole parseNpyRole(const std::string& role);  // "images" | "labels" | "raw"; ERR_ARG otherwise
torch::Tensor loadNpy(const std::string& path, NpyRole role);

// Appends t's values as little-endian float32 in C order to the existing file `path` (the body of
// an .npy whose header lib/data's NpyWriter wrote); returns the number of values written.
// ERR_DTYPE unless t is floating point, ERR_IO when the file cannot be appended to.
int64_t appendNpy(const std::string& path, const torch::Tensor& t);

// Synthetic sets: kind "gaussian" (K class means uniform in [0.25, 0.75]^D; x = clamp(mean_y +
// noise·N(0, I), 0, 1)) or "linear" (x uniform in [0, 1]^D, y = argmax_k (W (x − 0.5))_k for a
// random W [K, D]; points whose top-two margin is below `margin` are redrawn, so a linear
// classifier separates them). n samples of c channels of s × s pixels, k classes, from `seed`.
LoadedData synthetic(const std::string& kind, int64_t n, int64_t k, int64_t c, int64_t s, double noise, double margin,
                     uint64_t seed);

// CIFAR augmentation, the one implementation (Dataset.augmentedBatches, augment() and the training
// step): x [B, C, H, W] -> new [B, C, H, W], each image zero-padded by `pad` pixels, cropped back
// at a random offset in [0, 2·pad]² and mirrored left-right with probability ½ (when `flip`).
// Randomness from a mt19937_64 seeded by `seed`: the same seed gives the same batch everywhere.
torch::Tensor augment(const torch::Tensor& x, uint64_t seed, int64_t pad, bool flip);

}  // namespace fl
