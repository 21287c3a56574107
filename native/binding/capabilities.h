// Init functions of the capability files (data.cc, fisher.cc, metrics.cc, attacks.cc, train.cc,
// models/checkpoint.cc). Each registers its ops on the addon's exports.
#pragma once
#include <napi.h>
namespace fl {
void InitData(Napi::Env env, Napi::Object exports);
void InitFisher(Napi::Env env, Napi::Object exports);
void InitMetrics(Napi::Env env, Napi::Object exports);
void InitAttacks(Napi::Env env, Napi::Object exports);
void InitAutoAttack(Napi::Env env, Napi::Object exports);
void InitTrain(Napi::Env env, Napi::Object exports);
void InitCheckpoint(Napi::Env env, Napi::Object exports);
void InitCapabilities(Napi::Env env, Napi::Object exports);
}  // namespace fl
