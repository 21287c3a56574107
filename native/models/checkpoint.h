// Checkpoints: one versioned file holding a model's weights (named parameters and buffers), its
// spec, free-form meta JSON (epoch, history, ...), the CPU generator state and, optionally, an
// optimizer's state as a nested torch::serialize archive under the key "optimizer".
//
// File layout (little-endian): "FLCKPT" | uint16 version | uint64 payload length | uint32 CRC-32
// of the payload | payload = a torch::serialize archive (zip). Written to `path.tmp-<pid>` and
// renamed into place, so a reader never sees half a file. Loading checks magic, version, length,
// CRC, every tensor's name, shape and dtype against the model the spec builds: a truncated,
// corrupted or mismatched checkpoint is ERR_FORMAT and changes nothing.
#pragma once
#include <torch/torch.h>
#include <functional>
#include <memory>
#include <string>
#include "models/classifier.h"

namespace fl {

// 2: training steps draw augmentation, attack starts and dropout from the step's seed only (no
// reseeding of LibTorch's global generator), so a version-1 training state cannot resume exactly
// (its weights still load anywhere).
constexpr uint16_t kCheckpointVersion = 2;
// The oldest version whose optimizer state resumes training (loadTrainState refuses older ones).
constexpr uint16_t kResumableCheckpointVersion = 2;

// Writes `m` (weights, spec, kind), `metaJson` (must be valid JSON; ERR_ARG otherwise) and the CPU
// generator state to `path` atomically. `writeOptimizer`, when not empty, fills the nested archive
// stored under "optimizer" (e.g. [&](auto& a) { optimizer.save(a); }). ERR_IO when the file cannot
// be written.
void saveCheckpoint(const std::string& path, Classifier& m, const std::string& metaJson,
                    const std::function<void(torch::serialize::OutputArchive&)>& writeOptimizer);

struct LoadedCheckpoint {
  ClassifierPtr model;   // built from the spec, weights loaded, on `device`, eval mode
  std::string metaJson;  // as saved
  // The whole archive: read the optimizer with
  //   torch::serialize::InputArchive sub; archive->read("optimizer", sub); optimizer.load(sub);
  std::shared_ptr<torch::serialize::InputArchive> archive;
  bool hasOptimizer = false;
  uint16_t version = 0;
  torch::Tensor rngState;  // CPU generator state when saved (uint8)
};

// Loads a checkpoint (model built from its spec; TorchScript checkpoints reload the archive at the
// recorded path). `restoreRng` also sets the CPU generator to the saved state.
LoadedCheckpoint loadCheckpoint(const std::string& path, const torch::Device& device, bool restoreRng = false);

// Copies a checkpoint's weights into an existing model after checking every name, shape and
// dtype (ERR_FORMAT on any mismatch, the model unchanged).
void loadCheckpointState(const std::string& path, Classifier& m);

// The CPU default generator's state, and setting it (thread-safe).
torch::Tensor cpuRngState();
void setCpuRngState(const torch::Tensor& state);

#ifdef FL_TEST_HOOKS
// (test build only: CMakeLists.txt's FL_TEST_HOOKS) A check of the optimizer sub-archive for the
// tests (it changes the model's weights): two Adam steps on a random batch [4, 1, 28, 28],
// saveCheckpoint with the optimizer state, loadCheckpoint, a fresh Adam loaded from
// archive->read("optimizer"), and the largest difference of exp_avg / exp_avg_sq and step between
// the two optimizers.
struct OptimizerSelfTest {
  bool hasOptimizer = false;
  int64_t steps = -1;   // the loaded optimizer's step count
  double maxDiff = 0;
};
OptimizerSelfTest checkpointOptimizerSelfTest(Classifier& m, const std::string& path);
#endif

}  // namespace fl
