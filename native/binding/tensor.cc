#include "binding/tensor.h"
#include <cstring>
#include "binding/addon_data.h"
#include "binding/init.h"
#include "binding/worker.h"
#include "common/errors.h"

namespace fl {

std::atomic<int64_t> LiveStats::tensors{0};
std::atomic<int64_t> LiveStats::bytes{0};

namespace {

// dtype <-> TypedArray table (the dtypes' JS names: common/tensor_ops.h); static_asserts pin
// element sizes to the JS array types
struct DtypeRow {
  torch::ScalarType st;
  napi_typedarray_type ta;
  size_t elemSize;
};
static_assert(sizeof(float) == 4 && sizeof(double) == 8, "float32/float64 sizes");
static_assert(sizeof(int64_t) == 8 && sizeof(uint8_t) == 1 && sizeof(int32_t) == 4, "integer sizes");
const DtypeRow kDtypes[] = {
    {torch::kFloat32, napi_float32_array, 4},
    {torch::kFloat64, napi_float64_array, 8},
    {torch::kInt64, napi_bigint64_array, 8},
    {torch::kInt32, napi_int32_array, 4},
    {torch::kUInt8, napi_uint8_array, 1},
};

const DtypeRow* rowFor(torch::ScalarType st) {
  for (const auto& r : kDtypes)
    if (r.st == st) return &r;
  return nullptr;
}

const char* typedArrayName(napi_typedarray_type t) {
  switch (t) {
    case napi_float32_array: return "Float32Array";
    case napi_float64_array: return "Float64Array";
    case napi_bigint64_array: return "BigInt64Array";
    case napi_int32_array: return "Int32Array";
    case napi_uint8_array: return "Uint8Array";
    default: return "an unsupported TypedArray";
  }
}

int64_t tensorBytes(const torch::Tensor& t) {
  return t.defined() ? t.numel() * static_cast<int64_t>(t.element_size()) : 0;
}

}  // namespace

std::vector<int64_t> readShape(Napi::Value v, const char* what) {
  FL_CHECK(v.IsArray(), ERR_ARG, what, ": expected an array of non-negative integers");
  Napi::Array a = v.As<Napi::Array>();
  std::vector<int64_t> shape;
  for (uint32_t i = 0; i < a.Length(); ++i) {
    Napi::Value e = a.Get(i);
    FL_CHECK(e.IsNumber(), ERR_ARG, what, "[", i, "]: expected an integer");
    double d = e.As<Napi::Number>().DoubleValue();
    FL_CHECK(d >= 0 && d == static_cast<double>(static_cast<int64_t>(d)), ERR_SHAPE, what, "[", i,
             "]: expected a non-negative integer, got ", d);
    shape.push_back(static_cast<int64_t>(d));
  }
  return shape;
}

namespace {

// tensorFromTypedArray(data: TypedArray, shape: number[], device?: string) -> Tensor
Napi::Value FromTypedArray(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    FL_CHECK(info.Length() >= 2 && info[0].IsTypedArray(), ERR_ARG,
             "tensor(data, shape): data must be a Float32Array, Float64Array, BigInt64Array, Int32Array or Uint8Array");
    Napi::TypedArray ta = info[0].As<Napi::TypedArray>();
    const DtypeRow* row = nullptr;
    for (const auto& r : kDtypes)
      if (r.ta == ta.TypedArrayType()) row = &r;
    FL_CHECK(row, ERR_DTYPE, "tensor(data, shape): unsupported data type ", typedArrayName(ta.TypedArrayType()),
             "; expected Float32Array, Float64Array, BigInt64Array, Int32Array or Uint8Array");
    std::vector<int64_t> shape = readShape(info[1], "shape");
    int64_t n = 1;
    for (auto d : shape) n *= d;
    FL_CHECK(n == static_cast<int64_t>(ta.ElementLength()), ERR_SHAPE, "tensor(data, shape): shape ",
             shapeStr(shape), " holds ", n, " elements but data has ", ta.ElementLength());
    torch::Tensor t = torch::empty(shape, torch::TensorOptions().dtype(row->st));
    if (n > 0) {
      auto* src = static_cast<uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
      std::memcpy(t.data_ptr(), src, static_cast<size_t>(n) * row->elemSize);
    }
    if (info.Length() >= 3 && info[2].IsString()) {
      torch::Device dev = parseDevice(info[2].As<Napi::String>().Utf8Value());
      if (!dev.is_cpu()) t = t.to(dev);
    }
    return wrapTensor(info.Env(), t);
  });
}

// tensorTo(t, deviceOrDtype, ctl?) -> Promise<Tensor>: Tensor.to as an op on the compute thread
// (datasets and other large copies; Tensor.to stays synchronous for small tensors)
Napi::Value TensorToJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    torch::Tensor t = unwrapTensor(info[0], "tensorTo(t)");
    FL_CHECK(info.Length() >= 2 && info[1].IsString(), ERR_ARG, "tensorTo(t, deviceOrDtype): expected a string");
    std::string s = info[1].As<Napi::String>().Utf8Value();
    if (namesDevice(s)) parseDevice(s);  // a bad name rejects before the op
    else parseDtype(s);
    return startOp(info.Env(), info[2], [t, s](OpContext&) -> Finisher {
      torch::Tensor r = convertTo(t, s);
      return [r](Napi::Env env) -> Napi::Value { return wrapTensor(env, r); };
    });
  });
}

// tensorIndex(t, indices: int64 [K], ctl?) -> Promise<Tensor [K, ...]>: Tensor.index as an op
Napi::Value TensorIndexJs(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    torch::Tensor t = unwrapTensor(info[0], "tensorIndex(t)");
    torch::Tensor idx = unwrapTensor(info[1], "tensorIndex(indices)");
    checkRowIndex(t, idx);
    return startOp(info.Env(), info[2], [t, idx](OpContext&) -> Finisher {
      torch::Tensor r = indexRows(t, idx);
      return [r](Napi::Env env) -> Napi::Value { return wrapTensor(env, r); };
    });
  });
}

// memory() -> { tensors, bytes, v8External }: live Tensor handles and the bytes their tensors
// hold; v8External: the native bytes V8 counts for this isolate (what handles reported with
// AdjustExternalMemory: tensors, models), which drives its garbage collection
Napi::Value Memory(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("tensors", Napi::Number::New(info.Env(), static_cast<double>(LiveStats::tensors.load())));
  o.Set("bytes", Napi::Number::New(info.Env(), static_cast<double>(LiveStats::bytes.load())));
  int64_t external = Napi::MemoryManagement::AdjustExternalMemory(info.Env(), 0);
  o.Set("v8External", Napi::Number::New(info.Env(), static_cast<double>(external)));
  return o;
}

}  // namespace

Napi::Value toTypedArray(Napi::Env env, const torch::Tensor& t0) {
  torch::Tensor t = t0.detach().to(torch::kCPU);
  const DtypeRow* row = rowFor(t.scalar_type());
  if (!row) {
    t = t.to(torch::kFloat64);
    row = rowFor(torch::kFloat64);
  }
  // One copy into a fresh tensor whose memory becomes the ArrayBuffer (no zero-filled
  // buffer, no second copy); the finalizer releases the tensor.
  torch::Tensor owned;
  if (t.is_contiguous()) {
    // plain memcpy: single-threaded, so a busy core cannot stall an OpenMP team here
    owned = torch::empty(t.sizes(), t.options());
    if (t.numel()) std::memcpy(owned.data_ptr(), t.data_ptr(), t.numel() * t.element_size());
  } else {
    owned = t.contiguous();
  }
  size_t n = static_cast<size_t>(owned.numel());
  Napi::ArrayBuffer buf;
  if (n == 0) {
    buf = Napi::ArrayBuffer::New(env, 0);
  } else {
    auto* keep = new torch::Tensor(owned);
    buf = Napi::ArrayBuffer::New(env, keep->data_ptr(), n * row->elemSize,
                                 [](Napi::Env, void*, torch::Tensor* k) { delete k; }, keep);
  }
  switch (row->ta) {
    case napi_float32_array: return Napi::Float32Array::New(env, n, buf, 0);
    case napi_float64_array: return Napi::Float64Array::New(env, n, buf, 0);
    case napi_bigint64_array: return Napi::BigInt64Array::New(env, n, buf, 0);
    case napi_int32_array: return Napi::Int32Array::New(env, n, buf, 0);
    default: return Napi::Uint8Array::New(env, n, buf, 0);
  }
}

Napi::Value toFloat64Array(Napi::Env env, const torch::Tensor& t) {
  return toTypedArray(env, t.detach().to(torch::kCPU, torch::kFloat64).reshape({-1}));
}

Napi::Function TensorWrap::Define(Napi::Env env) {
  return DefineClass(env, "Tensor",
                     {InstanceAccessor<&TensorWrap::Shape>("shape"),
                      InstanceAccessor<&TensorWrap::Dtype>("dtype"),
                      InstanceAccessor<&TensorWrap::Device>("device"),
                      InstanceAccessor<&TensorWrap::Disposed>("disposed"),
                      InstanceMethod<&TensorWrap::ToArray>("toArray"),
                      InstanceMethod<&TensorWrap::To>("to"),
                      InstanceMethod<&TensorWrap::Index>("index"),
                      InstanceMethod<&TensorWrap::Slice>("slice"),
                      InstanceMethod<&TensorWrap::Reshape>("reshape"),
                      InstanceMethod<&TensorWrap::Clone>("clone"),
                      InstanceMethod<&TensorWrap::Item>("item"),
                      InstanceMethod<&TensorWrap::Dispose>("dispose")});
}

TensorWrap::TensorWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TensorWrap>(info) {}

TensorWrap::~TensorWrap() { reset(torch::Tensor()); }

void TensorWrap::reset(torch::Tensor t) {
  int64_t before = hasTensor_ ? bytes_ : 0;
  if (hasTensor_) {
    LiveStats::tensors--;
    LiveStats::bytes -= bytes_;
  }
  t_ = std::move(t);
  hasTensor_ = t_.defined();
  bytes_ = tensorBytes(t_);
  if (hasTensor_) {
    LiveStats::tensors++;
    LiveStats::bytes += bytes_;
  }
  // tell V8 what this handle holds natively, so that un-disposed tensors drive garbage collection
  int64_t delta = (hasTensor_ ? bytes_ : 0) - before;
  if (delta != 0) Napi::MemoryManagement::AdjustExternalMemory(Env(), delta);
}

const torch::Tensor& TensorWrap::tensor() const {
  FL_CHECK(hasTensor_, ERR_DISPOSED, "this Tensor was disposed; it can no longer be used");
  return t_;
}

Napi::Value TensorWrap::Shape(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    auto s = tensor().sizes();
    Napi::Array a = Napi::Array::New(info.Env(), s.size());
    for (size_t i = 0; i < s.size(); ++i) a.Set(i, Napi::Number::New(info.Env(), static_cast<double>(s[i])));
    return a;
  });
}
Napi::Value TensorWrap::Dtype(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value { return Napi::String::New(info.Env(), dtypeName(tensor().scalar_type())); });
}
Napi::Value TensorWrap::Device(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value { return Napi::String::New(info.Env(), deviceName(tensor().device())); });
}
Napi::Value TensorWrap::Disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !hasTensor_); }
Napi::Value TensorWrap::ToArray(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value { return toTypedArray(info.Env(), tensor()); });
}
Napi::Value TensorWrap::To(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    FL_CHECK(info.Length() >= 1 && info[0].IsString(), ERR_ARG, "to(device|dtype): expected a string");
    return wrapTensor(info.Env(), convertTo(tensor(), info[0].As<Napi::String>().Utf8Value()));
  });
}
// index(indices: Tensor int64 [K]) -> rows of this tensor along dim 0: [K, ...]
Napi::Value TensorWrap::Index(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    return wrapTensor(info.Env(), indexRows(tensor(), unwrapTensor(info[0], "index(indices)")));
  });
}
// slice(start, end) -> rows [start, end) along dim 0 (a copy, contiguous)
Napi::Value TensorWrap::Slice(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    const torch::Tensor& t = tensor();
    FL_CHECK(info.Length() >= 2 && info[0].IsNumber() && info[1].IsNumber(), ERR_ARG, "slice(start, end): expected two integers");
    int64_t a = info[0].As<Napi::Number>().Int64Value(), b = info[1].As<Napi::Number>().Int64Value();
    FL_CHECK(t.dim() >= 1 && 0 <= a && a <= b && b <= t.size(0), ERR_SHAPE, "slice(", a, ", ", b,
             "): expected 0 <= start <= end <= ", t.dim() ? t.size(0) : 0);
    return wrapTensor(info.Env(), t.slice(0, a, b).contiguous());
  });
}
Napi::Value TensorWrap::Reshape(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    FL_CHECK(info.Length() >= 1 && info[0].IsArray(), ERR_ARG, "reshape(shape): expected an array");
    Napi::Array a = info[0].As<Napi::Array>();
    std::vector<int64_t> shape;
    for (uint32_t i = 0; i < a.Length(); ++i) shape.push_back(a.Get(i).As<Napi::Number>().Int64Value());
    const torch::Tensor& t = tensor();
    int64_t n = 1;
    bool infer = false;
    for (auto d : shape) { if (d == -1) infer = true; else n *= d; }
    FL_CHECK(infer ? (n > 0 && t.numel() % n == 0) : n == t.numel(), ERR_SHAPE, "reshape(", shapeStr(shape),
             "): a tensor of shape ", shapeStr(t.sizes()), " has ", t.numel(), " elements");
    return wrapTensor(info.Env(), t.reshape(shape).contiguous());
  });
}
Napi::Value TensorWrap::Clone(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value { return wrapTensor(info.Env(), tensor().clone()); });
}
Napi::Value TensorWrap::Item(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    const torch::Tensor& t = tensor();
    FL_CHECK(t.numel() == 1, ERR_SHAPE, "item(): expected a tensor with one element, got shape ", shapeStr(t.sizes()));
    return Napi::Number::New(info.Env(), t.item<double>());
  });
}
void TensorWrap::Dispose(const Napi::CallbackInfo&) { reset(torch::Tensor()); }

Napi::Object wrapTensor(Napi::Env env, torch::Tensor t) {
  Napi::Object o = addonData(env).tensor.New({});
  TensorWrap::Unwrap(o)->reset(std::move(t));
  return o;
}

bool isTensor(Napi::Value v) {
  return v.IsObject() && v.As<Napi::Object>().InstanceOf(addonData(v.Env()).tensor.Value());
}

torch::Tensor unwrapTensor(Napi::Value v, const char* what) {
  FL_CHECK(isTensor(v), ERR_ARG, what, ": expected a Tensor");
  return TensorWrap::Unwrap(v.As<Napi::Object>())->tensor();
}

void InitTensor(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = TensorWrap::Define(env);
  addonData(env).tensor = Napi::Persistent(ctor);
  exports.Set("Tensor", ctor);
  exports.Set("tensorFromTypedArray", Napi::Function::New(env, FromTypedArray, "tensorFromTypedArray"));
  exports.Set("memory", Napi::Function::New(env, Memory, "memory"));
  exports.Set("tensorTo", Napi::Function::New(env, TensorToJs, "tensorTo"));
  exports.Set("tensorIndex", Napi::Function::New(env, TensorIndexJs, "tensorIndex"));
}

}  // namespace fl
