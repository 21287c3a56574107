// Reading an op's options object (main thread). The options are declared once, on the TypeScript
// side (lib/options.ts: type, default, range, allowed values); its parser validates the user's
// options and fills every default, so the object that arrives here is COMPLETE. This reader knows
// no default: a missing key is ERR_INTERNAL naming it (a wrapper that forgot to fill it), a value
// of the wrong type is ERR_ARG naming it — never silently a default.
#pragma once
#include <napi.h>
#include <cmath>
#include <cstdint>
#include <string>
#include "common/errors.h"

namespace fl {

class OptionReader {
 public:
  OptionReader(const Napi::Value& v, const char* op) : op_(op) {
    FL_CHECK(v.IsObject(), ERR_ARG, op, ": expected an options object");
    obj_ = v.As<Napi::Object>();
  }

  // Whether the optional key (a tensor beside the declared options) is present.
  bool has(const char* key) const {
    Napi::Value v = obj_.Get(key);
    return !v.IsUndefined() && !v.IsNull();
  }
  Napi::Value raw(const char* key) const { return obj_.Get(key); }

  double num(const char* key) const {
    Napi::Value v = need(key);
    FL_CHECK(v.IsNumber(), ERR_ARG, op_, " option '", key, "': expected a number");
    return v.As<Napi::Number>().DoubleValue();
  }
  int64_t integer(const char* key) const {
    double d = num(key);
    FL_CHECK(std::isfinite(d) && std::floor(d) == d, ERR_ARG, op_, " option '", key, "': expected an integer, got ", d);
    return static_cast<int64_t>(d);
  }
  bool flag(const char* key) const {
    Napi::Value v = need(key);
    FL_CHECK(v.IsBoolean(), ERR_ARG, op_, " option '", key, "': expected true or false");
    return v.As<Napi::Boolean>().Value();
  }
  std::string string(const char* key) const {
    Napi::Value v = need(key);
    FL_CHECK(v.IsString(), ERR_ARG, op_, " option '", key, "': expected a string");
    return v.As<Napi::String>().Utf8Value();
  }

 private:
  Napi::Value need(const char* key) const {
    Napi::Value v = obj_.Get(key);
    FL_CHECK(!v.IsUndefined() && !v.IsNull(), ERR_INTERNAL, op_, ": option '", key,
             "' missing (lib/options.ts fills every option before the native call)");
    return v;
  }
  Napi::Object obj_;
  const char* op_;
};

}  // namespace fl
