// The plain tensor facts and operations behind the JS Tensor class (binding/tensor.cc) and the
// ops: dtype and device names as JavaScript spells them, Tensor.to / Tensor.index, and waiting
// for a device. No N-API.
#pragma once
#include <torch/torch.h>
#include <cstdint>
#include <string>

namespace fl {

// dtype names used in JavaScript: float32 | float64 | int64 | uint8 | int32 (ERR_DTYPE otherwise)
torch::ScalarType parseDtype(const std::string& name);
std::string dtypeName(torch::ScalarType t);
// 'cpu' | 'cuda' | 'cuda:N'; ERR_DEVICE when CUDA is asked for and absent or N is out of range
torch::Device parseDevice(const std::string& name);
std::string deviceName(const torch::Device& d);
// Whether `s` names a device ('cpu', 'cuda...') rather than a dtype (Tensor.to takes either)
bool namesDevice(const std::string& s);

// "[2, 3]": a shape as the error messages print it
std::string shapeStr(c10::IntArrayRef s);

// t converted to a device ('cpu' | 'cuda' | 'cuda:N') or a dtype name: one home for Tensor.to
// and the asynchronous tensorTo
torch::Tensor convertTo(const torch::Tensor& t, const std::string& deviceOrDtype);

// Checks what index(indices) promises: idx a 1-D int64 tensor, t not a scalar (ERR_DTYPE / ERR_SHAPE)
void checkRowIndex(const torch::Tensor& t, const torch::Tensor& idx);
// Rows `idx` (1-D int64 [K]) of t along dim 0, a copy [K, ...]; ERR_SHAPE for an index out of range
torch::Tensor indexRows(const torch::Tensor& t, const torch::Tensor& idx);

// Waits for the work queued on t's device (CUDA kernels run asynchronously): call before reading a
// clock around device work. No-op for CPU tensors and undefined ones.
void syncDevice(const torch::Tensor& t);

}  // namespace fl
