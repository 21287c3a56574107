// Reading an op's options object (main thread): a missing key or null gives the default; a
// value of the wrong type is ERR_ARG naming the option — never silently the default.
#pragma once
#include <napi.h>
#include <string>
#include "common/errors.h"

namespace fl {

inline Napi::Value optValue(const Napi::Value& opts, const char* key) {
  if (!opts.IsObject()) return Napi::Value();
  Napi::Value v = opts.As<Napi::Object>().Get(key);
  return v.IsNull() ? Napi::Value() : v;
}

inline double numOpt(const Napi::Value& opts, const char* key, double def) {
  Napi::Value v = optValue(opts, key);
  if (v.IsEmpty() || v.IsUndefined()) return def;
  FL_CHECK(v.IsNumber(), ERR_ARG, "option '", key, "': expected a number");
  return v.As<Napi::Number>().DoubleValue();
}

inline bool boolOpt(const Napi::Value& opts, const char* key, bool def) {
  Napi::Value v = optValue(opts, key);
  if (v.IsEmpty() || v.IsUndefined()) return def;
  FL_CHECK(v.IsBoolean(), ERR_ARG, "option '", key, "': expected true or false");
  return v.As<Napi::Boolean>().Value();
}

inline std::string strOpt(const Napi::Value& opts, const char* key, const std::string& def) {
  Napi::Value v = optValue(opts, key);
  if (v.IsEmpty() || v.IsUndefined()) return def;
  FL_CHECK(v.IsString(), ERR_ARG, "option '", key, "': expected a string");
  return v.As<Napi::String>().Utf8Value();
}

}  // namespace fl
