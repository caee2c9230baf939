// Launch functions of fastgeo's CUDA kernels: raw pointers, no torch headers, so that every .cu
// file compiles with a bare `nvcc -c` in seconds. All tensors are contiguous, row-major.
// Each returns the launch's cudaError_t (cudaSuccess when nothing had to run).
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

namespace fastgeo_cuda {

// out (B, N-1) = ||x[:, n+1] - x[:, n]||^2 for x (B, N, D).
template <typename T>
cudaError_t segment_sqdist_forward(const T* x, int64_t B, int64_t N, int64_t D, T* out, cudaStream_t stream);

// grad (B, N-1), x (B, N, D) -> grad_x (B, N, D).
template <typename T>
cudaError_t segment_sqdist_backward(const T* grad, const T* x, int64_t B, int64_t N, int64_t D, T* grad_x,
                                    cudaStream_t stream);

// phi (P, K) = exp(-gammas * ||z - centers||^2) for z (P, d), centers (K, d).
template <typename T>
cudaError_t rbf_features(const T* z, const T* centers, const T* gammas, int64_t P, int64_t d, int64_t K, T* phi,
                         cudaStream_t stream);

// beta (P, D) = phi(z) W^T + zeta; weights_t is W^T, (K, D).
template <typename T>
cudaError_t rbf_precision_forward(const T* z, const T* centers, const T* gammas, const T* weights_t,
                                  const T* zeta, int64_t P, int64_t d, int64_t K, int64_t D, T* beta,
                                  cudaStream_t stream);

// grad (P, D) -> grad_z (P, d); weights is W, (D, K).
template <typename T>
cudaError_t rbf_precision_backward_z(const T* grad, const T* z, const T* centers, const T* gammas,
                                     const T* weights, int64_t P, int64_t d, int64_t K, int64_t D, T* grad_z,
                                     cudaStream_t stream);

// out (B, N-1) = ||sigma(points[:, n+1]) - sigma(points[:, n])||^2, fused (no (B, N, D) buffer).
template <typename T>
cudaError_t rbf_segment_sqdist_forward(const T* points, const T* centers, const T* gammas, const T* weights_t,
                                       const T* zeta, int64_t B, int64_t N, int64_t d, int64_t K, int64_t D,
                                       T* out, cudaStream_t stream);

// grad (B, N-1) -> grad_points (B, N, d); grad_weights (D, K) and grad_zeta (D,) are accumulated
// (atomically: zero them first) when non-null.
template <typename T>
cudaError_t rbf_segment_sqdist_backward(const T* grad, const T* points, const T* centers, const T* gammas,
                                        const T* weights, const T* weights_t, const T* zeta, int64_t B,
                                        int64_t N, int64_t d, int64_t K, int64_t D, T* grad_points,
                                        T* grad_weights, T* grad_zeta, cudaStream_t stream);

}  // namespace fastgeo_cuda
