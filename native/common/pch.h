// Precompiled header: the heavy include every translation unit needs. LibTorch only: napi.h is
// included by the binding files (native/binding/) alone, so a mathematics file that reaches for
// N-API does not compile.
#pragma once
#include <torch/torch.h>
