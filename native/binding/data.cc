// N-API glue of the data ops (data.h): reads the paths and options, runs the reader on the compute
// thread and writes the tensors. See lib/data/index.ts for the public API.
#include "binding/init.h"
#include "binding/options.h"
#include "binding/tensor.h"
#include "binding/worker.h"
#include "common/errors.h"
#include "data.h"

namespace fl {

namespace {

std::string strArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  FL_CHECK(info.Length() > i && info[i].IsString(), ERR_ARG, what, ": expected a path (string)");
  return info[i].As<Napi::String>().Utf8Value();
}

Finisher finishLoaded(const LoadedData& r) {
  return [r](Napi::Env env) -> Napi::Value {
    Napi::Object o = Napi::Object::New(env);
    o.Set("images", wrapTensor(env, r.images));
    if (r.labels.defined()) o.Set("labels", wrapTensor(env, r.labels));
    o.Set("numClasses", Napi::Number::New(env, static_cast<double>(r.numClasses)));
    return o;
  };
}

// loadIdx(imagesPath, labelsPath | '', numClasses, ctl?) -> Promise<{ images, labels?, numClasses }>
Napi::Value LoadIdxJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    std::string img = strArg(info, 0, "loadIdx(images)");
    std::string lbl = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "";
    int64_t k = info.Length() > 2 && info[2].IsNumber() ? info[2].As<Napi::Number>().Int64Value() : 10;
    return startOp(info.Env(), info[3], [img, lbl, k](OpContext&) { return finishLoaded(loadIdxPair(img, lbl, k)); });
  });
}

// loadCifar(paths: string[], variant: 10 | 100, coarse: boolean, ctl?) -> Promise<{ images, labels, numClasses }>
Napi::Value LoadCifarJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    FL_CHECK(info.Length() >= 2 && info[0].IsArray() && info[1].IsNumber(), ERR_ARG,
             "loadCifar(paths, variant): expected an array of paths and 10 or 100");
    std::vector<std::string> paths;
    Napi::Array a = info[0].As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); ++i) {
      FL_CHECK(a.Get(i).IsString(), ERR_ARG, "loadCifar(paths): paths must be strings");
      paths.push_back(a.Get(i).As<Napi::String>().Utf8Value());
    }
    FL_CHECK(!paths.empty(), ERR_ARG, "loadCifar(paths): no files given");
    int variant = info[1].As<Napi::Number>().Int32Value();
    FL_CHECK(variant == 10 || variant == 100, ERR_ARG, "loadCifar: variant must be 10 or 100, got ", variant);
    bool coarse = info.Length() > 2 && info[2].ToBoolean().Value();
    return startOp(info.Env(), info[3], [paths, variant, coarse](OpContext& ctx) {
      return finishLoaded(loadCifar(paths, variant, coarse));
    });
  });
}

// loadNpy(path, role: 'images' | 'labels' | 'raw', ctl?) -> Promise<Tensor>
Napi::Value LoadNpyJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    std::string path = strArg(info, 0, "loadNpy(path)");
    NpyRole role = parseNpyRole(info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "raw");
    return startOp(info.Env(), info[2], [path, role](OpContext&) -> Finisher {
      torch::Tensor t = loadNpy(path, role);
      return [t](Napi::Env env) -> Napi::Value { return wrapTensor(env, t); };
    });
  });
}

// appendNpy(path, tensor, ctl?) -> Promise<number>: appends the tensor's values as little-endian
// float32 in C order to the existing file `path` (the body of an .npy whose header lib/data
// NpyWriter wrote), on the compute thread; resolves to the number of values written.
Napi::Value AppendNpyJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    std::string path = strArg(info, 0, "appendNpy(path)");
    torch::Tensor t = unwrapTensor(info[1], "appendNpy(tensor)");
    return startOp(info.Env(), info[2], [path, t](OpContext&) -> Finisher {
      const double n = static_cast<double>(appendNpy(path, t));
      return [n](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, n); };
    });
  });
}

// synthetic({ kind, n, numClasses, channels, size, noise, margin, seed }, ctl?) -> Promise<{ images, labels, numClasses }>
// (complete options: lib/options.ts SYNTHETIC_OPTIONS declares, validates and fills them)
Napi::Value SyntheticJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    OptionReader o(info[0], "synthetic");
    std::string kind = o.string("kind");
    int64_t n = o.integer("n"), k = o.integer("numClasses");
    int64_t c = o.integer("channels"), s = o.integer("size");
    double noise = o.num("noise"), margin = o.num("margin");
    uint64_t seed = static_cast<uint64_t>(o.integer("seed"));
    return startOp(info.Env(), info[1], [=](OpContext&) {
      return finishLoaded(synthetic(kind, n, k, c, s, noise, margin, seed));
    });
  });
}

// augment(x, seed, pad, flip, ctl?) -> Promise<Tensor>
Napi::Value AugmentJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    torch::Tensor x = unwrapTensor(info[0], "augment(x)");
    FL_CHECK(info.Length() >= 4 && info[1].IsNumber() && info[2].IsNumber(), ERR_ARG, "augment(x, seed, pad, flip)");
    uint64_t seed = static_cast<uint64_t>(info[1].As<Napi::Number>().Int64Value());
    int64_t pad = info[2].As<Napi::Number>().Int64Value();
    bool flip = info[3].ToBoolean().Value();
    return startOp(info.Env(), info[4], [x, seed, pad, flip](OpContext&) -> Finisher {
      torch::Tensor y = augment(x, seed, pad, flip);
      return [y](Napi::Env env) -> Napi::Value { return wrapTensor(env, y); };
    });
  });
}

}  // namespace

void InitData(Napi::Env env, Napi::Object exports) {
  exports.Set("loadIdx", Napi::Function::New(env, LoadIdxJs, "loadIdx"));
  exports.Set("loadCifar", Napi::Function::New(env, LoadCifarJs, "loadCifar"));
  exports.Set("loadNpy", Napi::Function::New(env, LoadNpyJs, "loadNpy"));
  exports.Set("appendNpy", Napi::Function::New(env, AppendNpyJs, "appendNpy"));
  exports.Set("synthetic", Napi::Function::New(env, SyntheticJs, "synthetic"));
  exports.Set("augment", Napi::Function::New(env, AugmentJs, "augment"));
}

}  // namespace fl
