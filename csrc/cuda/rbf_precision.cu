// rbf_precision: beta = W phi(z) + zeta (P, D), its z-gradient, and the features phi (P, K).
// A block owns kRows latent points; their phi rows sit in shared memory and each thread walks
// output columns with coalesced reads of W^T (forward) or W (backward).
#include "common.cuh"
#include "kernels.h"

namespace fastgeo_cuda {

constexpr int kRows = 8;

template <typename T>
__global__ void rbf_features_kernel(const T* __restrict__ z, const T* __restrict__ centers,
                                    const T* __restrict__ gammas, int64_t P, int64_t d, int64_t K,
                                    T* __restrict__ phi) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= P * K) return;
  const int64_t p = i / K, k = i % K;
  T sq = T(0);
  for (int64_t j = 0; j < d; ++j) {
    const T diff = z[p * d + j] - centers[k * d + j];
    sq += diff * diff;
  }
  const T value = exp(-gammas[k] * sq);
  phi[i] = value < normal_min<T>() ? T(0) : value;
}

template <typename T>
__global__ void rbf_precision_fwd_kernel(const T* __restrict__ z, const T* __restrict__ centers,
                                         const T* __restrict__ gammas, const T* __restrict__ wt,
                                         const T* __restrict__ zeta, int64_t P, int64_t d, int64_t K, int64_t D,
                                         T* __restrict__ beta) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* phi = reinterpret_cast<T*>(smem_raw);  // (kRows, K)
  const int64_t row0 = (int64_t)blockIdx.x * kRows;
  phi_rows(z, centers, gammas, row0, kRows, P, d, K, phi);
  __syncthreads();
  for (int64_t col = threadIdx.x; col < D; col += blockDim.x) {
    T acc[kRows];
    for (int r = 0; r < kRows; ++r) acc[r] = T(0);
    for (int64_t k = 0; k < K; ++k) {
      const T w = wt[k * D + col];
      for (int r = 0; r < kRows; ++r) acc[r] += phi[r * K + k] * w;
    }
    for (int r = 0; r < kRows; ++r)
      if (row0 + r < P) beta[(row0 + r) * D + col] = acc[r] + zeta[col];
  }
}

template <typename T>
__global__ void rbf_precision_bwd_z_kernel(const T* __restrict__ grad, const T* __restrict__ z,
                                           const T* __restrict__ centers, const T* __restrict__ gammas,
                                           const T* __restrict__ w, int64_t P, int64_t d, int64_t K, int64_t D,
                                           T* __restrict__ grad_z) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* phi = reinterpret_cast<T*>(smem_raw);  // (kRows, K)
  T* gphi = phi + kRows * K;                // (kRows, K): grad_beta @ W
  const int64_t row0 = (int64_t)blockIdx.x * kRows;
  phi_rows(z, centers, gammas, row0, kRows, P, d, K, phi);
  for (int64_t idx = threadIdx.x; idx < kRows * K; idx += blockDim.x) {
    const int64_t r = idx / K, k = idx % K, p = row0 + r;
    T acc = T(0);
    if (p < P)
      for (int64_t col = 0; col < D; ++col) acc += grad[p * D + col] * w[col * K + k];
    gphi[idx] = acc;
  }
  __syncthreads();
  // grad_z[p, j] = sum_k gphi phi (-2 gamma_k) (z[p, j] - c[k, j])
  for (int64_t idx = threadIdx.x; idx < kRows * d; idx += blockDim.x) {
    const int64_t r = idx / d, j = idx % d, p = row0 + r;
    if (p >= P) continue;
    T acc = T(0);
    for (int64_t k = 0; k < K; ++k)
      acc += gphi[r * K + k] * phi[r * K + k] * T(-2) * gammas[k] * (z[p * d + j] - centers[k * d + j]);
    grad_z[p * d + j] = acc;
  }
}

template <typename T>
cudaError_t rbf_features(const T* z, const T* centers, const T* gammas, int64_t P, int64_t d, int64_t K, T* phi,
                         cudaStream_t stream) {
  if (P * K == 0) return cudaSuccess;
  rbf_features_kernel<T><<<(unsigned)ceil_div(P * K, 256), 256, 0, stream>>>(z, centers, gammas, P, d, K, phi);
  return cudaGetLastError();
}

template <typename T>
cudaError_t rbf_precision_forward(const T* z, const T* centers, const T* gammas, const T* weights_t,
                                  const T* zeta, int64_t P, int64_t d, int64_t K, int64_t D, T* beta,
                                  cudaStream_t stream) {
  if (P * D == 0) return cudaSuccess;
  const size_t smem = sizeof(T) * kRows * K;
  cudaError_t err = allow_smem(rbf_precision_fwd_kernel<T>, smem);
  if (err != cudaSuccess) return err;
  rbf_precision_fwd_kernel<T><<<(unsigned)ceil_div(P, kRows), kThreads, smem, stream>>>(
      z, centers, gammas, weights_t, zeta, P, d, K, D, beta);
  return cudaGetLastError();
}

template <typename T>
cudaError_t rbf_precision_backward_z(const T* grad, const T* z, const T* centers, const T* gammas,
                                     const T* weights, int64_t P, int64_t d, int64_t K, int64_t D, T* grad_z,
                                     cudaStream_t stream) {
  if (P * d == 0) return cudaSuccess;
  const size_t smem = sizeof(T) * 2 * kRows * K;
  cudaError_t err = allow_smem(rbf_precision_bwd_z_kernel<T>, smem);
  if (err != cudaSuccess) return err;
  rbf_precision_bwd_z_kernel<T><<<(unsigned)ceil_div(P, kRows), kThreads, smem, stream>>>(
      grad, z, centers, gammas, weights, P, d, K, D, grad_z);
  return cudaGetLastError();
}

#define FASTGEO_INSTANTIATE(T)                                                                             \
  template cudaError_t rbf_features<T>(const T*, const T*, const T*, int64_t, int64_t, int64_t, T*,           \
                                       cudaStream_t);                                                         \
  template cudaError_t rbf_precision_forward<T>(const T*, const T*, const T*, const T*, const T*, int64_t,    \
                                                int64_t, int64_t, int64_t, T*, cudaStream_t);                 \
  template cudaError_t rbf_precision_backward_z<T>(const T*, const T*, const T*, const T*, const T*, int64_t, \
                                                   int64_t, int64_t, int64_t, T*, cudaStream_t);
FASTGEO_INSTANTIATE(float)
FASTGEO_INSTANTIATE(double)
#undef FASTGEO_INSTANTIATE

}  // namespace fastgeo_cuda
