// The JS class Tensor: a native torch::Tensor behind a JS object (ObjectWrap). JavaScript holds
// the handle; data crosses only through fromTypedArray / toArray. Live handles are counted so that
// memory() shows leaks. The plain operations behind it are in common/tensor_ops.h.
#pragma once
#include <napi.h>
#include <torch/torch.h>
#include <atomic>
#include <vector>
#include "common/tensor_ops.h"

namespace fl {

class TensorWrap : public Napi::ObjectWrap<TensorWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit TensorWrap(const Napi::CallbackInfo& info);
  ~TensorWrap() override;

  // The tensor, or ERR_DISPOSED when dispose() was called.
  const torch::Tensor& tensor() const;
  void reset(torch::Tensor t);

 private:
  Napi::Value Shape(const Napi::CallbackInfo& info);
  Napi::Value Dtype(const Napi::CallbackInfo& info);
  Napi::Value Device(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);
  Napi::Value ToArray(const Napi::CallbackInfo& info);
  Napi::Value To(const Napi::CallbackInfo& info);
  Napi::Value Index(const Napi::CallbackInfo& info);
  Napi::Value Slice(const Napi::CallbackInfo& info);
  Napi::Value Reshape(const Napi::CallbackInfo& info);
  Napi::Value Clone(const Napi::CallbackInfo& info);
  Napi::Value Item(const Napi::CallbackInfo& info);
  void Dispose(const Napi::CallbackInfo& info);

  torch::Tensor t_;
  bool hasTensor_ = false;
  int64_t bytes_ = 0;
};

// A JS array of non-negative integers (a shape, or any such key): ERR_ARG / ERR_SHAPE naming `what`
std::vector<int64_t> readShape(Napi::Value v, const char* what);

// Live-handle accounting (all threads): handles alive and the bytes their tensors hold.
struct LiveStats {
  static std::atomic<int64_t> tensors;
  static std::atomic<int64_t> bytes;
};

// Wraps a tensor into a new JS Tensor handle (main thread only).
Napi::Object wrapTensor(Napi::Env env, torch::Tensor t);
// The tensor behind a JS Tensor handle; ERR_ARG if `v` is not one, ERR_DISPOSED if disposed.
torch::Tensor unwrapTensor(Napi::Value v, const char* what);
bool isTensor(Napi::Value v);

// Copy of a tensor's data into a new TypedArray of the matching type (any device)
Napi::Value toTypedArray(Napi::Env env, const torch::Tensor& t);
// 1-D double results (per-sample values) as a Float64Array
Napi::Value toFloat64Array(Napi::Env env, const torch::Tensor& t);

}  // namespace fl
