#include "binding/cancel_token.h"
#include "binding/addon_data.h"
#include "binding/init.h"

namespace fl {
namespace {

class CancelToken : public Napi::ObjectWrap<CancelToken> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "CancelToken",
                       {InstanceMethod<&CancelToken::Cancel>("cancel"),
                        InstanceAccessor<&CancelToken::Cancelled>("cancelled")});
  }
  explicit CancelToken(const Napi::CallbackInfo& info)
      : Napi::ObjectWrap<CancelToken>(info), flag(std::make_shared<std::atomic<bool>>(false)) {}
  void Cancel(const Napi::CallbackInfo&) { flag->store(true); }
  Napi::Value Cancelled(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), flag->load()); }
  std::shared_ptr<std::atomic<bool>> flag;
};

}  // namespace

std::shared_ptr<std::atomic<bool>> cancelFlag(Napi::Value v) {
  if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(addonData(v.Env()).cancel.Value())) return nullptr;
  return CancelToken::Unwrap(v.As<Napi::Object>())->flag;
}

void InitCancelToken(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = CancelToken::Define(env);
  addonData(env).cancel = Napi::Persistent(ctor);
  exports.Set("CancelToken", ctor);
}

}  // namespace fl
