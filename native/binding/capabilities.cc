#include "binding/capabilities.h"
namespace fl {
void InitCapabilities(Napi::Env env, Napi::Object exports) {
  InitData(env, exports);
  InitFisher(env, exports);
  InitMetrics(env, exports);
  InitAttacks(env, exports);
  InitAutoAttack(env, exports);
  InitTrain(env, exports);
  InitCheckpoint(env, exports);
}
}  // namespace fl
