// Precompiled header: the heavy includes every translation unit needs.
#pragma once
#include <torch/torch.h>
#include <napi.h>
