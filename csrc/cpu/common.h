// Helpers shared by the CPU kernels: argument checks, vectorizable exp and 1/sqrt, RBF features.
//
// gcc does not vectorize std::exp / std::sqrt without -ffast-math / -fno-math-errno (not set by
// setup.py): the float versions below are plain arithmetic that it vectorizes (SSE2 by default,
// AVX2 with FASTGEO_MARCH_NATIVE=1); the double versions call libm (float64 is the accuracy path).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <cstdlib>
#include <limits>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace fastgeo {
namespace cpu {

// exp(x) for float, |error| about 1.6 ulp where the result is normal (x in [-87.3, 88.3]; phi
// only needs x <= 0); 0 where it would be subnormal (as the reference's features: subnormal
// operands make every later product many times slower), inf above 88.3.
// x = n ln2 + r with |r| <= ln2/2, exp(r) by a degree-7 Taylor polynomial, 2^n by exponent bits.
// Under the default -ftrapping-math gcc will not turn the clamps and selects into
// vector blends (a comparison may raise an FP flag), so this function and the loops using it are
// compiled with -fno-trapping-math (and -fno-math-errno): nothing
// here reads FP exception flags or errno. Selects are written as ternaries: std::min/max come
// from headers compiled outside this region and would block vectorization.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math", "no-math-errno")
#endif
inline float fexp(float x) {
  const float t = x * 1.44269504088896341f;
  const float n = (t + 12582912.0f) - 12582912.0f;  // round to nearest: adding 1.5 * 2^23
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;  // ln2 split: exact hi + lo
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const bool tiny = n < -126.0f;  // 2^n itself subnormal: the result is 0
  const float n_lo = tiny ? 0.0f : n;  // keep the exponent bits in range
  const float n_c = n_lo > 127.0f ? 127.0f : n_lo;
  const int32_t bits = (static_cast<int32_t>(n_c) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  const float y = p * scale;  // subnormal only at n = -126 with p < 1, then flushed below
  const float y_low = (tiny || y < std::numeric_limits<float>::min()) ? 0.0f : y;
  return x > 88.3f ? std::numeric_limits<float>::infinity() : y_low;
}

// 1/sqrt(x) for normal float x (FLT_MIN <= x <= FLT_MAX): bit-trick guess then three Newton
// steps (relative error 1.7e-3 -> 5e-6 -> 4e-11 -> rounding), a few ulp in all. Outside that
// range (0, subnormals, inf, NaN) the guess is wrong: callers use add_rsqrt, which takes the exact
// 1/std::sqrt there.
inline float frsqrt_normal(float x) {
  int32_t i;
  std::memcpy(&i, &x, sizeof(i));
  i = 0x5f375a86 - (i >> 1);
  float y;
  std::memcpy(&y, &i, sizeof(y));
  const float hx = 0.5f * x;
  y = y * (1.5f - hx * y * y);
  y = y * (1.5f - hx * y * y);
  y = y * (1.5f - hx * y * y);
  return y;
}

// v[k] = exp(-g[k] * v[k]) for k < K: phi from the squared distances.
inline void exp_neg_scaled(float* v, const float* g, int64_t K) {
#pragma omp simd
  for (int64_t k = 0; k < K; ++k) v[k] = fexp(-g[k] * v[k]);
}

// v[k] = (v[k] + zeta[k])^-1/2 for k < D: sigma from phi W^T. The fast path where every sum is
// a normal float; where one is not (zeta tiny, phi underflowing, weights overflowing to inf) the
// whole row takes the exact 1/std::sqrt, as torch.rsqrt on the CPU: the kernels agree with the
// reference over the whole float range, at the cost of one comparison per element.
inline void add_rsqrt(float* v, const float* zeta, int64_t D) {
  int32_t outside = 0;
#pragma omp simd reduction(| : outside)
  for (int64_t k = 0; k < D; ++k) {
    const float x = v[k] + zeta[k];
    v[k] = x;
    outside |= (x >= std::numeric_limits<float>::min() && x <= std::numeric_limits<float>::max()) ? 0 : 1;
  }
  if (outside) {
    for (int64_t k = 0; k < D; ++k) v[k] = 1.0f / std::sqrt(v[k]);
    return;
  }
#pragma omp simd
  for (int64_t k = 0; k < D; ++k) v[k] = frsqrt_normal(v[k]);
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif
inline void exp_neg_scaled(double* v, const double* g, int64_t K) {
  for (int64_t k = 0; k < K; ++k) {
    const double y = std::exp(-g[k] * v[k]);
    v[k] = y < std::numeric_limits<double>::min() ? 0.0 : y;  // no subnormals, as the reference
  }
}
inline void add_rsqrt(double* v, const double* zeta, int64_t D) {
  for (int64_t k = 0; k < D; ++k) v[k] = 1.0 / std::sqrt(v[k] + zeta[k]);
}

// Checks shared by the RBF ops; returns nothing, raises with the argument's name.
inline void check_rbf_params(const at::Tensor& ref, const char* ref_name, const at::Tensor& centers,
                             const at::Tensor& gammas, const at::Tensor& weights) {
  TORCH_CHECK_TYPE(ref.scalar_type() == at::kFloat || ref.scalar_type() == at::kDouble, ref_name,
                   " must be float32 or float64, got ", ref.scalar_type());
  TORCH_CHECK_VALUE(centers.dim() == 2, "centers must be (K, d), got ", centers.sizes());
  TORCH_CHECK_VALUE(gammas.dim() == 1 && gammas.size(0) == centers.size(0),
                    "gammas must be (K,) with K = centers.size(0), got ", gammas.sizes());
  TORCH_CHECK_VALUE(weights.dim() == 2 && weights.size(1) == centers.size(0),
                    "weights must be (D, K) with K = centers.size(0), got ", weights.sizes());
  TORCH_CHECK_VALUE(ref.size(-1) == centers.size(1), ref_name, " has latent dimension ", ref.size(-1),
                    " but centers have d = ", centers.size(1));
  for (const at::Tensor* t : {&centers, &gammas, &weights}) {
    TORCH_CHECK_TYPE(t->scalar_type() == ref.scalar_type(), "fastgeo: all tensors must share ", ref_name,
                     "'s dtype ", ref.scalar_type(), ", got ", t->scalar_type());
    TORCH_CHECK_VALUE(t->device().is_cpu(), "fastgeo CPU kernel got a tensor on ", t->device());
  }
  TORCH_CHECK_VALUE(ref.device().is_cpu(), "fastgeo CPU kernel got ", ref_name, " on ", ref.device());
}

inline void check_zeta(const at::Tensor& zeta, const at::Tensor& weights) {
  TORCH_CHECK_VALUE(zeta.dim() == 1 && zeta.size(0) == weights.size(0),
                    "zeta must be (D,) with D = weights.size(0), got ", zeta.sizes());
  TORCH_CHECK_TYPE(zeta.scalar_type() == weights.scalar_type(), "zeta must have dtype ", weights.scalar_type(),
                   ", got ", zeta.scalar_type());
  TORCH_CHECK_VALUE(zeta.device().is_cpu(), "fastgeo CPU kernel got zeta on ", zeta.device());
}

// An input as a contiguous tensor outside autograd. The kernels call ATen (BLAS) on views of
// their inputs, possibly from OpenMP worker threads where no autograd-exclusion guard is set:
// detaching keeps those calls out of autograd, whatever the caller's requires_grad.
inline at::Tensor plain(const at::Tensor& t) { return t.detach().contiguous(); }

// A new uninitialized output tensor. Large outputs (>= 8 MiB, e.g. grad_x of segment_sqdist)
// get 2 MiB-aligned memory advised for transparent huge pages on Linux: first touch of fresh
// 4 KiB pages costs more than the kernel itself at these sizes (~0.25 s vs ~0.04 s for 400 MB
// here, THP in "madvise" mode). Small outputs come from the default allocator.
inline at::Tensor new_output(at::IntArrayRef sizes, const at::TensorOptions& opts) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr size_t kHuge = size_t(2) << 20;
  size_t nbytes = opts.dtype().itemsize();
  for (int64_t s : sizes) nbytes *= static_cast<size_t>(s);
  if (nbytes >= (size_t(8) << 20)) {
    const size_t padded = (nbytes + kHuge - 1) / kHuge * kHuge;
    void* ptr = nullptr;
    if (posix_memalign(&ptr, kHuge, padded) == 0) {
      madvise(ptr, padded, MADV_HUGEPAGE);  // advice only: failure leaves ordinary pages
      return at::from_blob(ptr, sizes, [](void* p) { std::free(p); }, opts);
    }
  }
#endif
  return at::empty(sizes, opts);
}

// Transposed copy of centers, (d, K): the K axis innermost so the loops over k vectorize.
inline at::Tensor centers_t(const at::Tensor& centers) { return centers.detach().t().contiguous(); }

// phi[r, k] = exp(-gammas[k] * ||z[r] - c_k||^2) for rows r of z (rows, d) -> phi (rows, K).
template <typename T>
void rbf_features(const T* z, int64_t rows, int64_t d, const T* cT, const T* gammas, int64_t K,
                  T* phi) {
  for (int64_t r = 0; r < rows; ++r) {
    T* out = phi + r * K;
    const T* zr = z + r * d;
    for (int64_t k = 0; k < K; ++k) out[k] = T(0);
    for (int64_t j = 0; j < d; ++j) {
      const T zj = zr[j];
      const T* c = cT + j * K;
#pragma omp simd
      for (int64_t k = 0; k < K; ++k) {
        const T diff = zj - c[k];
        out[k] += diff * diff;
      }
    }
    exp_neg_scaled(out, gammas, K);
  }
}

// Gradients through phi, given h[r, k] = dL/dphi[r, k] * phi[r, k] (rows, K), scratch hg (K):
//   grad_z[r]     = sum_k h[r,k] (-2 gamma_k) (z_r - c_k)            written (rows, d)
//   grad_cT[j, k] += sum_r h[r,k] (2 gamma_k) (z_rj - c_kj)          accumulated, (d, K), if given
//   grad_g[k]     += -sum_r h[r,k] ||z_r - c_k||^2                    accumulated, (K,), if given
template <typename T>
void rbf_features_backward(const T* z, int64_t rows, int64_t d, const T* cT, const T* gammas,
                           int64_t K, const T* h, T* hg, T* grad_z, T* grad_cT, T* grad_g) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* zr = z + r * d;
    const T* hr = h + r * K;
#pragma omp simd
    for (int64_t k = 0; k < K; ++k) hg[k] = T(2) * gammas[k] * hr[k];
    for (int64_t j = 0; j < d; ++j) {
      const T zj = zr[j];
      const T* c = cT + j * K;
      T acc = T(0);
#pragma omp simd reduction(+ : acc)
      for (int64_t k = 0; k < K; ++k) acc += hg[k] * (zj - c[k]);
      if (grad_z) grad_z[r * d + j] = -acc;
      if (grad_cT) {
        T* gc = grad_cT + j * K;
#pragma omp simd
        for (int64_t k = 0; k < K; ++k) gc[k] += hg[k] * (zj - c[k]);
      }
    }
    if (grad_g) {
      for (int64_t k = 0; k < K; ++k) {
        T sq = T(0);
        for (int64_t j = 0; j < d; ++j) {
          const T diff = zr[j] - cT[j * K + k];
          sq += diff * diff;
        }
        grad_g[k] -= hr[k] * sq;
      }
    }
  }
}

// Split [0, n) into `chunks` contiguous pieces; piece c is [chunk_begin(c), chunk_begin(c + 1)).
inline int64_t chunk_begin(int64_t n, int64_t chunks, int64_t c) { return n * c / chunks; }

// Rows per tile so that a (rows, D) tile of T takes about `bytes` (sized to stay in L2),
// within [lo, hi].
inline int64_t tile_rows(int64_t D, int64_t elem_size, int64_t lo, int64_t hi,
                         int64_t bytes = int64_t(1) << 18) {
  const int64_t rows = bytes / (std::max<int64_t>(D, 1) * elem_size);
  return std::min(hi, std::max(lo, rows));
}

// Number of independent work chunks: one per thread (deterministic for a given thread count).
inline int64_t num_chunks(int64_t tiles) {
  return std::max<int64_t>(1, std::min<int64_t>(tiles, at::get_num_threads()));
}

}  // namespace cpu
}  // namespace fastgeo
