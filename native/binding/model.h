// The JS class Model: a Classifier behind an ObjectWrap handle (binding/model.cc). The other
// binding files take models with unwrapModel.
#pragma once
#include <napi.h>
#include "models/classifier.h"

namespace fl {
// The Classifier behind a JS Model handle; ERR_ARG if not one, ERR_DISPOSED if disposed.
ClassifierPtr unwrapModel(Napi::Value v, const char* what);
Napi::Object wrapModel(Napi::Env env, ClassifierPtr m);
}  // namespace fl
