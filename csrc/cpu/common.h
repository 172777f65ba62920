// What the CPU kernels share: the dtypes they take, the type they compute in, and its check.
// float16 and bfloat16 are loaded, computed and accumulated in float32; float32 in float32; float64
// in float64. Included by every csrc/cpu/*.cpp (header only: inline functions, templates, macros).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

namespace ilsgan {

// Compute / accumulation type of a storage type T.
template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };

// The same as a ScalarType: the dtype of the reductions and per-sample parameters.
inline at::ScalarType acc_scalar_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

// `op: name must be float16, bfloat16, float32 or float64` unless t has one of the dtypes
// ILSGAN_DISPATCH_FLOATS instantiates.
inline void check_float_dtype(const at::Tensor& t, const char* op, const char* name) {
  const at::ScalarType s = t.scalar_type();
  TORCH_CHECK(s == at::kFloat || s == at::kDouble || s == at::kHalf || s == at::kBFloat16, op, ": ", name,
              " must be float16, bfloat16, float32 or float64, got ", s);
}

}  // namespace ilsgan

// Runs the lambda (__VA_ARGS__) with scalar_t = the storage type of TYPE (one of the four above).
#define ILSGAN_DISPATCH_FLOATS(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)
