// The Init function of each binding file: each registers its JS classes and functions on the
// addon's exports. binding/addon.cc calls them in this order.
#pragma once
#include <napi.h>
namespace fl {
void InitBackend(Napi::Env env, Napi::Object exports);      // binding/backend.cc
void InitCancelToken(Napi::Env env, Napi::Object exports);  // binding/cancel_token.cc
void InitTensor(Napi::Env env, Napi::Object exports);       // binding/tensor.cc
void InitModels(Napi::Env env, Napi::Object exports);       // binding/model.cc
void InitData(Napi::Env env, Napi::Object exports);         // binding/data.cc
void InitFisher(Napi::Env env, Napi::Object exports);       // binding/fisher.cc
void InitMetrics(Napi::Env env, Napi::Object exports);      // binding/metrics.cc
void InitAttacks(Napi::Env env, Napi::Object exports);      // binding/attacks.cc
void InitAutoAttack(Napi::Env env, Napi::Object exports);   // binding/autoattack.cc
void InitTrain(Napi::Env env, Napi::Object exports);        // binding/train.cc
void InitCheckpoint(Napi::Env env, Napi::Object exports);   // binding/checkpoint.cc
void InitWeights(Napi::Env env, Napi::Object exports);      // binding/weights.cc
}  // namespace fl
