#pragma once
#include <napi.h>
namespace fl {
void InitBackend(Napi::Env env, Napi::Object exports);
}
