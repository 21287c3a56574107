// Registration only: each capability file exports one Init function.
#include <napi.h>
#include "common/addon_data.h"
#include "common/tensor.h"
#include "common/worker.h"
#include "models/model_wrap.h"
#include "backend.h"
#include "capabilities.h"

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
