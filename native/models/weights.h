// Weights from a PyTorch state dict into a model (lib/science/weights reads the file's layout):
// the mathematics of model.loadWeights, N-API-free. The TypeScript side parses the file (zip /
// legacy pickle / safetensors), maps its keys onto the model's names and passes, per tensor, where
// its storage's bytes are in the file and the strided view over them; this reads those bytes on
// the compute thread and copies them into the parameters and buffers.
#pragma once
#include <torch/torch.h>
#include <string>
#include <vector>
#include "models/classifier.h"

namespace fl {

// One tensor of a weights file, bound for one of the model's parameters or buffers.
struct WeightSource {
  std::string target;            // the model's state name (Classifier::namedState)
  std::string dtype;             // the file's dtype: float32 | float64 | float16 | bfloat16 |
                                 // int64 | int32 | int16 | int8 | uint8 | bool
  std::vector<int64_t> shape;    // the file tensor's sizes ([] for 0-d)
  std::vector<int64_t> strides;  // in elements, one per dimension
  int64_t offset = 0;            // storage offset in elements
  int64_t byteStart = 0;         // where the storage starts in the file, bytes
  int64_t byteLength = 0;        // the storage's length, bytes
};

// A parameter or buffer as the key mapping sees it.
struct StateEntry {
  std::string name;
  std::vector<int64_t> shape;
  std::string dtype;  // float32 | float64 | int64 | ...
};

// The model's parameters and buffers, in namedState order.
std::vector<StateEntry> stateEntries(Classifier& m);

// Reads each source's elements from the file at `path` and copies them into the parameter or
// buffer it names, cast to that tensor's dtype and moved to its device (a [C] normalisation
// buffer may fill a [1, C, 1, 1] one: equal element counts are enough for norm_mean / norm_std).
// Every source is checked first — its target exists and is named once, shapes agree, float goes
// to float and integer to integer, its byte range lies inside the file and its view inside its
// storage — so a bad source (ERR_FORMAT) changes nothing. Contiguous same-dtype tensors are read
// straight into the parameter; the others through one temporary of their storage span.
void loadWeights(Classifier& m, const std::string& path, const std::vector<WeightSource>& sources);

// torch's ScalarType for a dtype name above; ERR_FORMAT for any other name.
torch::ScalarType weightDtype(const std::string& name);

}  // namespace fl
