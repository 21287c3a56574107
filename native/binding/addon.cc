// Registration only: each binding file (native/binding/) exports one Init function.
#include <napi.h>
#include "binding/addon_data.h"
#include "binding/tensor.h"
#include "binding/worker.h"
#include "binding/model.h"
#include "binding/backend.h"
#include "binding/capabilities.h"

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData(new fl::AddonData());
  fl::InitBackend(env, exports);
  fl::InitWorker(env, exports);
  fl::InitTensor(env, exports);
  fl::InitModels(env, exports);
  fl::InitCapabilities(env, exports);
  return exports;
}

NODE_API_MODULE(fisherlens, Init)
