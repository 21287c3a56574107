// Registration only: each binding file (native/binding/) exports one Init function (binding/init.h).
#include <napi.h>
#include "binding/addon_data.h"
#include "binding/init.h"
#include "common/compute_thread.h"

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData(new fl::AddonData());
  fl::InitBackend(env, exports);
  fl::installForkGuard();
  fl::InitCancelToken(env, exports);
  fl::InitTensor(env, exports);
  fl::InitModels(env, exports);
  fl::InitData(env, exports);
  fl::InitFisher(env, exports);
  fl::InitMetrics(env, exports);
  fl::InitAttacks(env, exports);
  fl::InitAutoAttack(env, exports);
  fl::InitTrain(env, exports);
  fl::InitCheckpoint(env, exports);
  fl::InitWeights(env, exports);
  return exports;
}

NODE_API_MODULE(fisherlens, Init)
