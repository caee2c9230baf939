// Fused rbf_segment_sqdist: ||sigma(z_{n+1}) - sigma(z_n)||^2 without a (B, N, D) buffer.
//
// Forward: a block owns kRows consecutive points (flattened over (b, n)) and the segments that
// start there; phi of those points plus one halo point sits in shared memory, each thread takes
// output columns, forms sigma for all kRows + 1 points in registers and accumulates the squared
// differences; a block reduction gives each segment's sum.
// Backward: a block owns kRows points plus a halo on each side. Per chunk of kThreads columns it
// forms grad_beta = -1/2 sigma^3 grad_sigma in shared memory, adds grad_beta @ W into grad_phi
// (shared), and, when asked, grad_beta^T phi into grad_weights and sum(grad_beta) into grad_zeta
// (atomics across blocks); finally grad_points = sum_k grad_phi phi (-2 gamma) (z - c).
#include "common.cuh"
#include "kernels.h"

namespace fastgeo_cuda {

constexpr int kRows = 8;

template <typename T>
__device__ __forceinline__ T inv_sqrt(T x) {
  return T(1) / sqrt(x);  // IEEE sqrt and division (rsqrt is approximate in float)
}

template <typename T>
__global__ void rbf_segment_sqdist_fwd_kernel(const T* __restrict__ points, const T* __restrict__ centers,
                                              const T* __restrict__ gammas, const T* __restrict__ wt,
                                              const T* __restrict__ zeta, int64_t B, int64_t N, int64_t d,
                                              int64_t K, int64_t D, T* __restrict__ out) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* phi = reinterpret_cast<T*>(smem_raw);  // (kRows + 1, K)
  __shared__ T scratch[32];
  const int64_t P = B * N, row0 = (int64_t)blockIdx.x * kRows;
  phi_rows(points, centers, gammas, row0, kRows + 1, P, d, K, phi);
  __syncthreads();
  T acc[kRows];
  for (int r = 0; r < kRows; ++r) acc[r] = T(0);
  for (int64_t col = threadIdx.x; col < D; col += blockDim.x) {
    T sig[kRows + 1];
    for (int r = 0; r <= kRows; ++r) sig[r] = T(0);
    for (int64_t k = 0; k < K; ++k) {
      const T w = wt[k * D + col];
      for (int r = 0; r <= kRows; ++r) sig[r] += phi[r * K + k] * w;
    }
    for (int r = 0; r <= kRows; ++r) sig[r] = inv_sqrt(sig[r] + zeta[col]);
    for (int r = 0; r < kRows; ++r) {
      const T diff = sig[r + 1] - sig[r];
      acc[r] += diff * diff;
    }
  }
  for (int r = 0; r < kRows; ++r) {
    const T total = block_sum(acc[r], scratch);
    const int64_t m = row0 + r, n = m % N;
    if (threadIdx.x == 0 && m < P && n < N - 1) out[(m / N) * (N - 1) + n] = total;
  }
}

template <typename T>
__global__ void rbf_segment_sqdist_bwd_kernel(const T* __restrict__ grad, const T* __restrict__ points,
                                              const T* __restrict__ centers, const T* __restrict__ gammas,
                                              const T* __restrict__ w, const T* __restrict__ wt,
                                              const T* __restrict__ zeta, int64_t B, int64_t N, int64_t d,
                                              int64_t K, int64_t D, T* __restrict__ grad_points,
                                              T* __restrict__ grad_w, T* __restrict__ grad_zeta) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* phi = reinterpret_cast<T*>(smem_raw);  // (kRows + 2, K); row r + 1 is point row0 + r
  T* gphi = phi + (kRows + 2) * K;          // (kRows, K)
  T* gbeta = gphi + kRows * K;              // (kRows, blockDim.x): one chunk of columns
  const int64_t P = B * N, row0 = (int64_t)blockIdx.x * kRows;
  phi_rows(points, centers, gammas, row0 - 1, kRows + 2, P, d, K, phi);
  for (int64_t idx = threadIdx.x; idx < kRows * K; idx += blockDim.x) gphi[idx] = T(0);
  // Upstream gradients of the segments before and after each point (0 at curve ends / padding).
  T g_prev[kRows], g_next[kRows];
  for (int r = 0; r < kRows; ++r) {
    const int64_t m = row0 + r, b = m / N, n = m % N;
    g_prev[r] = (m < P && n > 0) ? grad[b * (N - 1) + n - 1] : T(0);
    g_next[r] = (m < P && n < N - 1) ? grad[b * (N - 1) + n] : T(0);
  }
  __syncthreads();
  for (int64_t col0 = 0; col0 < D; col0 += blockDim.x) {
    const int64_t col = col0 + threadIdx.x;
    if (col < D) {
      T sig[kRows + 2];
      for (int r = 0; r < kRows + 2; ++r) sig[r] = T(0);
      for (int64_t k = 0; k < K; ++k) {
        const T wk = wt[k * D + col];
        for (int r = 0; r < kRows + 2; ++r) sig[r] += phi[r * K + k] * wk;
      }
      T zsum = T(0);
      for (int r = 0; r < kRows + 2; ++r) sig[r] = inv_sqrt(sig[r] + zeta[col]);
      for (int r = 0; r < kRows; ++r) {
        const T s = sig[r + 1];
        const T gsig = T(2) * (s - sig[r]) * g_prev[r] - T(2) * (sig[r + 2] - s) * g_next[r];
        const T gb = T(-0.5) * s * s * s * gsig;  // d sigma / d beta = -1/2 beta^-3/2
        gbeta[r * blockDim.x + threadIdx.x] = gb;
        zsum += gb;
      }
      if (grad_zeta != nullptr) atomicAdd(grad_zeta + col, zsum);
    } else {
      for (int r = 0; r < kRows; ++r) gbeta[r * blockDim.x + threadIdx.x] = T(0);
    }
    __syncthreads();
    const int64_t width = (D - col0 < (int64_t)blockDim.x) ? D - col0 : blockDim.x;
    for (int64_t idx = threadIdx.x; idx < kRows * K; idx += blockDim.x) {
      const int64_t r = idx / K, k = idx % K;
      T acc = T(0);
      for (int64_t c = 0; c < width; ++c) acc += gbeta[r * blockDim.x + c] * w[(col0 + c) * K + k];
      gphi[idx] += acc;
    }
    if (grad_w != nullptr) {
      for (int64_t idx = threadIdx.x; idx < width * K; idx += blockDim.x) {
        const int64_t c = idx / K, k = idx % K;
        T acc = T(0);
        for (int r = 0; r < kRows; ++r) acc += gbeta[r * blockDim.x + c] * phi[(r + 1) * K + k];
        atomicAdd(grad_w + (col0 + c) * K + k, acc);
      }
    }
    __syncthreads();  // gbeta is overwritten by the next chunk
  }
  for (int64_t idx = threadIdx.x; idx < kRows * d; idx += blockDim.x) {
    const int64_t r = idx / d, j = idx % d, m = row0 + r;
    if (m >= P) continue;
    T acc = T(0);
    for (int64_t k = 0; k < K; ++k)
      acc += gphi[r * K + k] * phi[(r + 1) * K + k] * T(-2) * gammas[k] * (points[m * d + j] - centers[k * d + j]);
    grad_points[m * d + j] = acc;
  }
}

template <typename T>
cudaError_t rbf_segment_sqdist_forward(const T* points, const T* centers, const T* gammas, const T* weights_t,
                                       const T* zeta, int64_t B, int64_t N, int64_t d, int64_t K, int64_t D,
                                       T* out, cudaStream_t stream) {
  if (B * (N - 1) == 0) return cudaSuccess;
  const size_t smem = sizeof(T) * (kRows + 1) * K;
  cudaError_t err = allow_smem(rbf_segment_sqdist_fwd_kernel<T>, smem);
  if (err != cudaSuccess) return err;
  rbf_segment_sqdist_fwd_kernel<T><<<(unsigned)ceil_div(B * N, kRows), kThreads, smem, stream>>>(
      points, centers, gammas, weights_t, zeta, B, N, d, K, D, out);
  return cudaGetLastError();
}

template <typename T>
cudaError_t rbf_segment_sqdist_backward(const T* grad, const T* points, const T* centers, const T* gammas,
                                        const T* weights, const T* weights_t, const T* zeta, int64_t B,
                                        int64_t N, int64_t d, int64_t K, int64_t D, T* grad_points,
                                        T* grad_weights, T* grad_zeta, cudaStream_t stream) {
  if (B * N == 0) return cudaSuccess;
  const size_t smem = sizeof(T) * ((2 * kRows + 2) * K + kRows * kThreads);
  cudaError_t err = allow_smem(rbf_segment_sqdist_bwd_kernel<T>, smem);
  if (err != cudaSuccess) return err;
  rbf_segment_sqdist_bwd_kernel<T><<<(unsigned)ceil_div(B * N, kRows), kThreads, smem, stream>>>(
      grad, points, centers, gammas, weights, weights_t, zeta, B, N, d, K, D, grad_points, grad_weights,
      grad_zeta);
  return cudaGetLastError();
}

#define FASTGEO_INSTANTIATE(T)                                                                                \
  template cudaError_t rbf_segment_sqdist_forward<T>(const T*, const T*, const T*, const T*, const T*, int64_t, \
                                                     int64_t, int64_t, int64_t, int64_t, T*, cudaStream_t);     \
  template cudaError_t rbf_segment_sqdist_backward<T>(const T*, const T*, const T*, const T*, const T*,         \
                                                      const T*, const T*, int64_t, int64_t, int64_t, int64_t,  \
                                                      int64_t, T*, T*, T*, cudaStream_t);
FASTGEO_INSTANTIATE(float)
FASTGEO_INSTANTIATE(double)
#undef FASTGEO_INSTANTIATE

}  // namespace fastgeo_cuda
