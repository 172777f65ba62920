// bias_act on CPU: y = clamp(act(x + b) * gain, -clamp, clamp) and its first/second order gradients
// with the bias gradient (sum of dx over every dim but `dim`) fused into the gradient pass.
//
// Layout: x, y, g, dy are dense tensors with identical strides (contiguous or channels_last; the
// Python wrapper guarantees it). The element at memory offset o has channel (o / inner) % C with
// C = size(dim) and inner = stride(dim). Two loop shapes:
//   inner > 1  (e.g. NCHW, dim=1): rows of `inner` contiguous elements with one bias value each;
//              long rows are cut into fixed segments so that even one row runs in parallel.
//   inner == 1 (channels_last dim=1, or the last dim): the channel is the fastest index; chunks of
//              whole rows of C elements, the bias vector is read contiguously.
// Inner loops are contiguous and branch-free (selects), so -O3 -march=native vectorizes them.
// The bias gradient is deterministic: every work item writes its partial sums (double) into its own
// slot and the slots are summed in a fixed order; work items depend on the shape only.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common.h"

namespace {

using ilsgan::Acc;
using ilsgan::check_float_dtype;

constexpr double kSeluScale = 1.0507009873554804934193349852946;
constexpr double kSeluAlpha = 1.6732632423543772848170429916717;
constexpr int64_t kSeg = 8192;  // elements per work item (a piece of output stays in L1/L2 for the db sum)

template <int A, typename T>
inline T act_fwd(T v, T alpha) {
  if constexpr (A == 1) {
    return v;
  } else if constexpr (A == 2) {
    return v > T(0) ? v : T(0);
  } else if constexpr (A == 3) {
    return v > T(0) ? v : v * alpha;
  } else if constexpr (A == 4) {
    return std::tanh(v);
  } else if constexpr (A == 5) {
    return T(1) / (T(1) + std::exp(-v));
  } else if constexpr (A == 6) {
    return v >= T(0) ? v : std::expm1(v);
  } else if constexpr (A == 7) {
    return v >= T(0) ? T(kSeluScale) * v : T(kSeluScale * kSeluAlpha) * std::expm1(v);
  } else if constexpr (A == 8) {
    return std::max(v, T(0)) + std::log1p(std::exp(-std::abs(v)));
  } else {
    return v / (T(1) + std::exp(-v));
  }
}

// First (G=1) or second (G=2) derivative of act at x+b. XSRC: computed from xr = x + b; otherwise
// from yy = y / gain (the saved output).
template <int A, int G, bool XSRC, typename T>
inline T act_deriv(T xr, T yy, T alpha) {
  if constexpr (A == 1) {
    return G == 1 ? T(1) : T(0);
  } else if constexpr (A == 2 || A == 3) {
    const bool pos = XSRC ? (xr > T(0)) : (yy > T(0));
    if constexpr (G == 2) return T(0);
    return pos ? T(1) : (A == 2 ? T(0) : alpha);
  } else if constexpr (A == 4) {
    const T d = T(1) - yy * yy;
    return G == 1 ? d : d * (T(-2) * yy);
  } else if constexpr (A == 5) {
    const T d = yy * (T(1) - yy);
    return G == 1 ? d : d * (T(1) - T(2) * yy);
  } else if constexpr (A == 6) {
    return yy >= T(0) ? T(G == 1 ? 1 : 0) : yy + T(1);
  } else if constexpr (A == 7) {
    return yy >= T(0) ? T(G == 1 ? kSeluScale : 0) : yy + T(kSeluScale * kSeluAlpha);
  } else if constexpr (A == 8) {
    const T one_minus_c = -std::expm1(-yy);  // 1 - exp(-y) = sigmoid(x)
    return G == 1 ? one_minus_c : (T(1) - one_minus_c) * one_minus_c;
  } else {
    const T c = std::exp(xr);
    const T d = c + T(1);
    if constexpr (G == 1) return xr > T(40) ? T(1) : c * (xr + d) / (d * d);
    return xr > T(40) ? T(0) : c * (xr * (T(2) - d) + T(2) * d) / (d * d * d);
  }
}

struct Layout {
  int64_t numel, C, inner;
};

Layout layout_of(const at::Tensor& t, int64_t dim, bool channels) {
  Layout l{t.numel(), 1, t.numel()};
  if (channels && t.size(dim) > 1) {
    l.C = t.size(dim);
    l.inner = t.stride(dim);
  }
  if (l.inner == 0) l.inner = 1;
  return l;
}

// Calls fn(begin, end, c, item) for contiguous pieces [begin, end) of one row (inner > 1), one
// work item per (row, segment); or fn(begin, end, -1, item) for chunks of whole rows (inner == 1).
// Returns the number of work items (the slots of the partial sums).
struct Plan {
  bool rows;            // inner > 1
  int64_t nrows;        // rows: outer*C;  inner==1: outer
  int64_t seg_per_row;  // rows only
  int64_t seg_len;      // rows only
  int64_t nchunks;      // inner==1 only
  int64_t rows_per_chunk;
  int64_t items() const { return rows ? nrows * seg_per_row : nchunks; }
};

Plan make_plan(const Layout& l) {
  Plan p{};
  if (l.inner > 1 || l.C == 1) {
    p.rows = true;
    p.nrows = l.numel / l.inner;
    p.seg_per_row = (l.inner + kSeg - 1) / kSeg;
    p.seg_len = (l.inner + p.seg_per_row - 1) / p.seg_per_row;
  } else {
    p.rows = false;
    p.nrows = l.numel / l.C;
    int64_t want = std::max<int64_t>(1, std::min<int64_t>(256, l.numel / kSeg));
    p.rows_per_chunk = std::max<int64_t>(1, (p.nrows + want - 1) / want);
    p.nchunks = (p.nrows + p.rows_per_chunk - 1) / p.rows_per_chunk;
  }
  return p;
}

template <typename F>
void run_plan(const Plan& p, const Layout& l, const F& fn) {
  if (p.rows) {
    const int64_t items = p.items();
    const int64_t grain = std::max<int64_t>(1, kSeg / std::max<int64_t>(1, p.seg_len));
    at::parallel_for(0, items, grain, [&](int64_t i0, int64_t i1) {
      for (int64_t it = i0; it < i1; ++it) {
        const int64_t r = it / p.seg_per_row, s = it % p.seg_per_row;
        const int64_t b0 = r * l.inner + s * p.seg_len;
        const int64_t b1 = std::min(r * l.inner + l.inner, b0 + p.seg_len);
        fn(b0, b1, r % l.C, it);
      }
    });
  } else {
    at::parallel_for(0, p.nchunks, 1, [&](int64_t i0, int64_t i1) {
      for (int64_t it = i0; it < i1; ++it) {
        const int64_t r0 = it * p.rows_per_chunk, r1 = std::min(p.nrows, r0 + p.rows_per_chunk);
        fn(r0 * l.C, r1 * l.C, int64_t(-1), it);
      }
    });
  }
}

// Inner loops are plain functions over __restrict__ pointers with every scalar passed by value:
// (lambdas capturing by reference made GCC reload the scalars on every iteration and turn the
// reductions into gathers).

// ------------------------------------------------------------------------------------------------
// Forward. BVEC: per-element bias vector (channel fastest) instead of one bias value.

template <int A, bool BVEC, typename scalar_t, typename T>
inline void fwd_span(const scalar_t* __restrict__ x, scalar_t* __restrict__ y, int64_t n,
                     const T* __restrict__ bvec, T bb, T alpha, T gain, T clamp) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const T v = T(x[i]) + (BVEC ? bvec[i] : bb);
    const T r = act_fwd<A, T>(v, alpha) * gain;
    y[i] = scalar_t(std::min(std::max(r, -clamp), clamp));
  }
}

template <int A, typename scalar_t>
void fwd_kernel(const at::Tensor& x, const c10::optional<at::Tensor>& b, at::Tensor& y, const Layout& l,
                double alpha_, double gain_, double clamp_) {
  using T = typename Acc<scalar_t>::type;
  const T alpha = T(alpha_), gain = T(gain_);
  const T clamp = clamp_ >= 0 ? T(clamp_) : std::numeric_limits<T>::infinity();
  const scalar_t* xp = x.data_ptr<scalar_t>();
  scalar_t* yp = y.data_ptr<scalar_t>();
  const bool has_b = b.has_value() && b->defined();
  std::vector<T> bias(l.C, T(0));
  if (has_b) {
    const scalar_t* bp = b->data_ptr<scalar_t>();
    for (int64_t c = 0; c < l.C; ++c) bias[c] = T(bp[c]);
  }
  const T* bv = bias.data();
  const int64_t C = l.C;
  Plan p = make_plan(l);
  run_plan(p, l, [=](int64_t b0, int64_t b1, int64_t c, int64_t) {
    if (c >= 0) {
      fwd_span<A, false, scalar_t, T>(xp + b0, yp + b0, b1 - b0, nullptr, bv[c], alpha, gain, clamp);
    } else {
      for (int64_t r = b0; r < b1; r += C)
        fwd_span<A, true, scalar_t, T>(xp + r, yp + r, C, bv, T(0), alpha, gain, clamp);
    }
  });
}

// ------------------------------------------------------------------------------------------------
// Gradient: out = g * gain * act^(G)(x + b) [* dy for G=2], zero where the output was clamped;
// db = sum of out over every dim but `dim`.

template <typename T>
struct GradScalars {
  T alpha, gain, inv_gain, clamp;
};

template <int A, int G, bool XSRC, bool CLAMP, bool BVEC, typename scalar_t, typename T>
inline void grad_span(const scalar_t* __restrict__ g, const scalar_t* __restrict__ x,
                      const scalar_t* __restrict__ y, const scalar_t* __restrict__ dy, scalar_t* __restrict__ out,
                      int64_t n, const T* __restrict__ bvec, T bb, const GradScalars<T> s) {
  constexpr bool READ_Y = !XSRC && (A != 1 || CLAMP);  // linear without clamp reads nothing
  const T alpha = s.alpha, gain = s.gain, inv_gain = s.inv_gain, clamp = s.clamp;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    T xr = T(0), yv = T(0);
    if constexpr (XSRC) xr = T(x[i]) + (BVEC ? bvec[i] : bb);
    if constexpr (READ_Y) yv = T(y[i]);
    T d = act_deriv<A, G, XSRC, T>(xr, yv * inv_gain, alpha) * gain * T(g[i]);
    if constexpr (G == 2) d = d * T(dy[i]);
    if constexpr (CLAMP) {
      T v;
      if constexpr (XSRC) v = act_fwd<A, T>(xr, alpha) * gain; else v = yv;
      d = (v > -clamp && v < clamp) ? d : T(0);
    }
    out[i] = scalar_t(d);
  }
}

template <typename scalar_t, typename T>
inline T sum_span(const scalar_t* __restrict__ o, int64_t n) {
  T s = T(0);
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += T(o[i]);
  return s;
}

template <typename scalar_t, typename T>
inline void acc_span(T* __restrict__ acc, const scalar_t* __restrict__ o, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) acc[i] += T(o[i]);
}

template <int A, int G, bool XSRC, bool CLAMP, typename scalar_t>
void grad_kernel(const at::Tensor& g, const at::Tensor& x, const c10::optional<at::Tensor>& b,
                 const at::Tensor& y, const at::Tensor& dy, at::Tensor& out, at::Tensor* db, const Layout& l,
                 double alpha_, double gain_, double clamp_) {
  using T = typename Acc<scalar_t>::type;
  const GradScalars<T> sc{T(alpha_), T(gain_), gain_ != 0 ? T(1.0 / gain_) : T(0), T(clamp_)};
  const scalar_t* gp = g.data_ptr<scalar_t>();
  const scalar_t* xp = XSRC ? x.data_ptr<scalar_t>() : nullptr;
  const scalar_t* yp = XSRC ? nullptr : (y.defined() ? y.data_ptr<scalar_t>() : nullptr);
  const scalar_t* dyp = G == 2 ? dy.data_ptr<scalar_t>() : nullptr;
  scalar_t* op = out.data_ptr<scalar_t>();
  const bool has_b = b.has_value() && b->defined();
  std::vector<T> bias(l.C, T(0));
  if (has_b && XSRC) {
    const scalar_t* bp = b->data_ptr<scalar_t>();
    for (int64_t c = 0; c < l.C; ++c) bias[c] = T(bp[c]);
  }
  const T* bv = bias.data();
  const int64_t C = l.C;
  auto at_ = [](const scalar_t* ptr, int64_t i) { return ptr ? ptr + i : nullptr; };

  Plan p = make_plan(l);
  const bool want_db = db != nullptr;
  const int64_t nslots = p.rows ? p.items() : p.items() * l.C;
  std::vector<double> part(want_db ? nslots : 0, 0.0);
  double* partp = part.data();
  // The bias gradient sums the freshly written piece of `out` while it is still in cache (a
  // separate, trivially vectorized loop: no second pass over memory).
  run_plan(p, l, [=](int64_t b0, int64_t b1, int64_t c, int64_t item) {
    if (c >= 0) {
      grad_span<A, G, XSRC, CLAMP, false, scalar_t, T>(gp + b0, at_(xp, b0), at_(yp, b0), at_(dyp, b0), op + b0,
                                                      b1 - b0, nullptr, bv[c], sc);
      if (want_db) partp[item] = double(sum_span<scalar_t, T>(op + b0, b1 - b0));
    } else {
      std::vector<T> facc(want_db ? C : 0, T(0));
      for (int64_t r = b0; r < b1; r += C) {
        grad_span<A, G, XSRC, CLAMP, true, scalar_t, T>(gp + r, at_(xp, r), at_(yp, r), at_(dyp, r), op + r, C,
                                                       bv, T(0), sc);
        if (want_db) acc_span<scalar_t, T>(facc.data(), op + r, C);
      }
      if (want_db) {
        double* dst = partp + item * C;
        for (int64_t j = 0; j < C; ++j) dst[j] = double(facc[j]);
      }
    }
  });
  if (want_db) {
    std::vector<double> sums(l.C, 0.0);
    if (p.rows) {
      for (int64_t r = 0; r < p.nrows; ++r)
        for (int64_t s = 0; s < p.seg_per_row; ++s) sums[r % l.C] += part[r * p.seg_per_row + s];
    } else {
      for (int64_t it = 0; it < p.items(); ++it)
        for (int64_t c = 0; c < l.C; ++c) sums[c] += part[it * l.C + c];
    }
    scalar_t* dbp = db->data_ptr<scalar_t>();
    for (int64_t c = 0; c < l.C; ++c) dbp[c] = scalar_t(sums[c]);
  }
}

// ------------------------------------------------------------------------------------------------
// Checks and dispatch.

void check_dense_like(const at::Tensor& t, const at::Tensor& ref, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "bias_act (cpu): ", name, " must be a CPU tensor");
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), "bias_act (cpu): ", name, " must have dtype ",
              ref.scalar_type(), ", got ", t.scalar_type());
  TORCH_CHECK(t.sizes() == ref.sizes(), "bias_act (cpu): ", name, " must have shape ", ref.sizes(), ", got ",
              t.sizes());
  TORCH_CHECK(t.is_non_overlapping_and_dense(), "bias_act (cpu): ", name, " must be dense (contiguous or channels_last)");
  TORCH_CHECK(t.strides() == ref.strides() || t.numel() <= 1, "bias_act (cpu): ", name,
              " must have the same strides as the other inputs");
}

void check_common(const at::Tensor& x, const c10::optional<at::Tensor>& b, int64_t dim, int64_t act, double clamp) {
  TORCH_CHECK(x.device().is_cpu(), "bias_act (cpu): x must be a CPU tensor");
  check_float_dtype(x, "bias_act (cpu)", "x");
  TORCH_CHECK(x.is_non_overlapping_and_dense(), "bias_act (cpu): x must be dense (contiguous or channels_last)");
  TORCH_CHECK(act >= 1 && act <= 9, "bias_act (cpu): act index must be in 1..9, got ", act);
  TORCH_CHECK(x.dim() == 0 || (dim >= 0 && dim < x.dim()), "bias_act (cpu): dim out of range");
  if (b.has_value() && b->defined()) {
    TORCH_CHECK(b->device().is_cpu(), "bias_act (cpu): b must be a CPU tensor");
    TORCH_CHECK(b->dim() == 1 && b->is_contiguous(), "bias_act (cpu): b must be contiguous 1-D");
    TORCH_CHECK(x.dim() > 0 && b->size(0) == x.size(dim), "bias_act (cpu): b must have x.shape[dim] elements");
    TORCH_CHECK(b->scalar_type() == x.scalar_type(), "bias_act (cpu): b must have the dtype of x");
  }
  (void)clamp;
}

#define ILSGAN_ACT_SWITCH(act, ...)                         \
  switch (act) {                                            \
    case 1: { constexpr int A = 1; __VA_ARGS__; } break;    \
    case 2: { constexpr int A = 2; __VA_ARGS__; } break;    \
    case 3: { constexpr int A = 3; __VA_ARGS__; } break;    \
    case 4: { constexpr int A = 4; __VA_ARGS__; } break;    \
    case 5: { constexpr int A = 5; __VA_ARGS__; } break;    \
    case 6: { constexpr int A = 6; __VA_ARGS__; } break;    \
    case 7: { constexpr int A = 7; __VA_ARGS__; } break;    \
    case 8: { constexpr int A = 8; __VA_ARGS__; } break;    \
    case 9: { constexpr int A = 9; __VA_ARGS__; } break;    \
    default: TORCH_CHECK(false, "bias_act: bad act index"); \
  }

at::Tensor bias_act_fwd(const at::Tensor& x, const c10::optional<at::Tensor>& b, int64_t dim, int64_t act,
                        double alpha, double gain, double clamp) {
  check_common(x, b, dim, act, clamp);
  at::Tensor y = at::empty_like(x);
  if (x.numel() == 0) return y;
  const Layout l = layout_of(x, dim, b.has_value() && b->defined());
  ILSGAN_DISPATCH_FLOATS(x.scalar_type(), "bias_act_fwd", [&] {
    ILSGAN_ACT_SWITCH(act, fwd_kernel<A, scalar_t>(x, b, y, l, alpha, gain, clamp));
  });
  return y;
}

template <int A, int G, bool CLAMP, typename scalar_t>
void grad_dispatch_src(bool xsrc, const at::Tensor& g, const at::Tensor& x, const c10::optional<at::Tensor>& b,
                       const at::Tensor& y, const at::Tensor& dy, at::Tensor& out, at::Tensor* db, const Layout& l,
                       double alpha, double gain, double clamp) {
  if constexpr (A == 9) {
    grad_kernel<A, G, true, CLAMP, scalar_t>(g, x, b, y, dy, out, db, l, alpha, gain, clamp);
  } else if constexpr (A <= 3) {
    if (xsrc)
      grad_kernel<A, G, true, CLAMP, scalar_t>(g, x, b, y, dy, out, db, l, alpha, gain, clamp);
    else
      grad_kernel<A, G, false, CLAMP, scalar_t>(g, x, b, y, dy, out, db, l, alpha, gain, clamp);
  } else {
    grad_kernel<A, G, false, CLAMP, scalar_t>(g, x, b, y, dy, out, db, l, alpha, gain, clamp);
  }
}

std::tuple<at::Tensor, at::Tensor> bias_act_grad(const at::Tensor& g, const c10::optional<at::Tensor>& x_,
                                                 const c10::optional<at::Tensor>& b,
                                                 const c10::optional<at::Tensor>& y_,
                                                 const c10::optional<at::Tensor>& dy_, int64_t order, int64_t dim,
                                                 int64_t act, double alpha, double gain, double clamp, bool need_db) {
  check_common(g, b, dim, act, clamp);
  TORCH_CHECK(order == 1 || order == 2, "bias_act_grad (cpu): order must be 1 or 2");
  const at::Tensor x = x_.has_value() ? *x_ : at::Tensor();
  const at::Tensor y = y_.has_value() ? *y_ : at::Tensor();
  const at::Tensor dy = dy_.has_value() ? *dy_ : at::Tensor();
  if (x.defined()) check_dense_like(x, g, "x");
  if (y.defined()) check_dense_like(y, g, "y");
  if (dy.defined()) check_dense_like(dy, g, "dy");
  // Which input the derivative is computed from.
  bool xsrc;
  if (act == 9) {
    xsrc = true;
  } else if (act <= 3) {
    xsrc = !y.defined() && x.defined();
  } else {
    xsrc = false;
  }
  if (xsrc) {
    TORCH_CHECK(x.defined(), "bias_act_grad (cpu): this activation needs x");
  } else {
    TORCH_CHECK(y.defined() || (act == 1 && clamp < 0), "bias_act_grad (cpu): this activation needs y");
  }
  TORCH_CHECK(order == 1 || dy.defined(), "bias_act_grad (cpu): order 2 needs dy");
  TORCH_CHECK(order == 1 || (act >= 4), "bias_act_grad (cpu): order 2 is only defined for smooth activations");
  TORCH_CHECK(g.dim() == 0 || (dim >= 0 && dim < g.dim()), "bias_act_grad (cpu): dim out of range");

  at::Tensor out = at::empty_like(g);
  at::Tensor db = at::zeros({need_db ? g.size(dim) : 0}, g.options());
  if (g.numel() == 0) return {out, db};
  const Layout l = layout_of(g, dim, need_db || (b.has_value() && b->defined()));
  at::Tensor* dbp = need_db ? &db : nullptr;
  const bool cl = clamp >= 0;
  ILSGAN_DISPATCH_FLOATS(g.scalar_type(), "bias_act_grad", [&] {
    ILSGAN_ACT_SWITCH(act, {
      if (order == 1) {
        if (cl) grad_dispatch_src<A, 1, true, scalar_t>(xsrc, g, x, b, y, dy, out, dbp, l, alpha, gain, clamp);
        else grad_dispatch_src<A, 1, false, scalar_t>(xsrc, g, x, b, y, dy, out, dbp, l, alpha, gain, clamp);
      } else if constexpr (A >= 4) {
        if (cl) grad_dispatch_src<A, 2, true, scalar_t>(xsrc, g, x, b, y, dy, out, dbp, l, alpha, gain, clamp);
        else grad_dispatch_src<A, 2, false, scalar_t>(xsrc, g, x, b, y, dy, out, dbp, l, alpha, gain, clamp);
      }
    });
  });
  return {out, db};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ilsgan_cpu, m) {
  m.def("bias_act_fwd(Tensor x, Tensor? b, int dim, int act, float alpha, float gain, float clamp) -> Tensor",
        &bias_act_fwd);
  m.def(
      "bias_act_grad(Tensor g, Tensor? x, Tensor? b, Tensor? y, Tensor? dy, int order, int dim, int act, "
      "float alpha, float gain, float clamp, bool need_db) -> (Tensor, Tensor)",
      &bias_act_grad);
}
