// Device helpers shared by the RBF kernels (torch-free).
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

namespace fastgeo_cuda {

constexpr int kThreads = 128;
constexpr size_t kDefaultSmem = 48 * 1024;

// phi of `rows` latent points starting at flattened row `row0` (rows outside [0, P) give 0) into
// shared memory phi[r * K + k]; distances are sums of squared differences (no cancellation).
// The smallest normal number of T: features below it are 0, as in the reference.
template <typename T>
__device__ __forceinline__ T normal_min();
template <>
__device__ __forceinline__ float normal_min<float>() { return 1.17549435e-38f; }
template <>
__device__ __forceinline__ double normal_min<double>() { return 2.2250738585072014e-308; }

template <typename T>
__device__ void phi_rows(const T* __restrict__ z, const T* __restrict__ centers, const T* __restrict__ gammas,
                         int64_t row0, int rows, int64_t P, int64_t d, int64_t K, T* phi) {
  for (int64_t idx = threadIdx.x; idx < rows * K; idx += blockDim.x) {
    const int64_t r = idx / K, k = idx % K, p = row0 + r;
    T value = T(0);
    if (p >= 0 && p < P) {
      T sq = T(0);
      for (int64_t j = 0; j < d; ++j) {
        const T diff = z[p * d + j] - centers[k * d + j];
        sq += diff * diff;
      }
      value = exp(-gammas[k] * sq);
      value = value < normal_min<T>() ? T(0) : value;
    }
    phi[idx] = value;
  }
}

// Sum of `v` over the block; the result is valid in every thread. `scratch` holds 32 values.
template <typename T>
__device__ T block_sum(T v, T* scratch) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();  // scratch may still be read from a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T total = T(0);
  for (int w = 0; w < (int)(blockDim.x + 31) / 32; ++w) total += scratch[w];
  return total;
}

// Allow `smem` bytes of dynamic shared memory for `kernel` (opt-in above 48 KiB).
template <typename Kernel>
cudaError_t allow_smem(Kernel kernel, size_t smem) {
  if (smem <= kDefaultSmem) return cudaSuccess;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace fastgeo_cuda
