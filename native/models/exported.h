// Programs exported by torch.export (.pt2 archives), run op by op through LibTorch's dispatcher
// with autograd intact (exported.cc). N-API-free.
#pragma once
#include <string>
#include "models/classifier.h"

namespace fl {

// A model from an exported program's spec (lib/science/exported.ts builds it from the archive):
//   { "arch": "exported", "path": archive path, "torchVersion": the exporter's torch,
//     "program": the text of the archive's models/<name>.json (export schema 8.x: graph_module),
//     "state": [{ "name": module name, "shape": [..], "dtype": export ScalarType code, "param": bool }] }
// The state starts at zero; the weights load through models/weights.h (or a checkpoint's state).
// ERR_FORMAT names the op, input or output that FisherLens does not run: ops outside the pure
// ATen allowlist, custom ops, ops this LibTorch lacks (with the exporter's torch version), lifted
// constants, train-mode outputs (buffer mutations), more than one input or output.
// kind() is "exported"; specJson() returns the spec, so a checkpoint rebuilds the model from it.
ClassifierPtr createExported(const std::string& specJson);

}  // namespace fl
