// segment_sqdist: out[b, n] = ||x[b, n+1] - x[b, n]||^2 and its backward (memory bound).
#include "common.cuh"
#include "kernels.h"

namespace fastgeo_cuda {

// One warp per segment, lanes stride over D (coalesced), shuffle reduction.
template <typename T>
__global__ void segment_sqdist_fwd_kernel(const T* __restrict__ x, int64_t S, int64_t N, int64_t D,
                                          T* __restrict__ out) {
  const int64_t s = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (s >= S) return;  // whole warps exit together
  const int64_t b = s / (N - 1), n = s % (N - 1);
  const T* a = x + (b * N + n) * D;
  T acc = T(0);
  for (int64_t j = lane; j < D; j += 32) {
    const T diff = a[D + j] - a[j];
    acc += diff * diff;
  }
  for (int off = 16; off > 0; off >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, off);
  if (lane == 0) out[s] = acc;
}

// One thread per element of grad_x: 2 (x_n - x_{n-1}) g_{n-1} - 2 (x_{n+1} - x_n) g_n.
template <typename T>
__global__ void segment_sqdist_bwd_kernel(const T* __restrict__ grad, const T* __restrict__ x, int64_t B,
                                          int64_t N, int64_t D, T* __restrict__ gx) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= B * N * D) return;
  const int64_t n = (i / D) % N, b = i / (N * D);
  T g = T(0);
  if (n > 0) g += T(2) * (x[i] - x[i - D]) * grad[b * (N - 1) + n - 1];
  if (n < N - 1) g -= T(2) * (x[i + D] - x[i]) * grad[b * (N - 1) + n];
  gx[i] = g;
}

template <typename T>
cudaError_t segment_sqdist_forward(const T* x, int64_t B, int64_t N, int64_t D, T* out, cudaStream_t stream) {
  const int64_t S = B * (N - 1);
  if (S == 0) return cudaSuccess;
  const int warps = kThreads / 32;
  segment_sqdist_fwd_kernel<T><<<(unsigned)ceil_div(S, warps), kThreads, 0, stream>>>(x, S, N, D, out);
  return cudaGetLastError();
}

template <typename T>
cudaError_t segment_sqdist_backward(const T* grad, const T* x, int64_t B, int64_t N, int64_t D, T* grad_x,
                                    cudaStream_t stream) {
  const int64_t total = B * N * D;
  if (total == 0) return cudaSuccess;
  segment_sqdist_bwd_kernel<T><<<(unsigned)ceil_div(total, 256), 256, 0, stream>>>(grad, x, B, N, D, grad_x);
  return cudaGetLastError();
}

#define FASTGEO_INSTANTIATE(T)                                                                       \
  template cudaError_t segment_sqdist_forward<T>(const T*, int64_t, int64_t, int64_t, T*, cudaStream_t); \
  template cudaError_t segment_sqdist_backward<T>(const T*, const T*, int64_t, int64_t, int64_t, T*,      \
                                                  cudaStream_t);
FASTGEO_INSTANTIATE(float)
FASTGEO_INSTANTIATE(double)
#undef FASTGEO_INSTANTIATE

}  // namespace fastgeo_cuda
