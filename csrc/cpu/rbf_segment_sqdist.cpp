// rbf_segment_sqdist on the CPU, fused: out[b, n] = ||sigma(z_{b,n+1}) - sigma(z_{b,n})||^2 with
// sigma = (W phi(z) + zeta)^-1/2, never holding a (B, N, D) tensor.
//
// The B*N points are walked as one flat sequence in tiles of R points. A tile computes phi for
// its points (R, K), sigma through one BLAS product with W into a per-thread (R, D) buffer, and
// the segments that start in it; per-thread buffers depend on R, K, D only, not on B or N.
//   Forward:  the tile also evaluates one point past its end (the segment crossing into the
//             next tile), so each segment is written by exactly one tile.
//   Backward: the tile evaluates one point on each side, so it has every segment touching its
//             points and writes each grad_points row exactly once. With g = dL/dout:
//               dL/dsigma_n = 2 g_{n-1} (sigma_n - sigma_{n-1}) - 2 g_n (sigma_{n+1} - sigma_n)
//               dL/dbeta_n  = dL/dsigma_n * (-1/2) beta_n^-3/2 = -(1/2) dL/dsigma_n sigma_n^3
//               dL/dphi_n   = dL/dbeta_n W,  then through phi as in rbf_precision;
//             grad_weights += dL/dbeta^T phi and grad_zeta += colsum(dL/dbeta) go to per-chunk
//             accumulators (one chunk per thread, reduced at the end: scheduling-independent).
#include <array>

#include <torch/library.h>

#include "common.h"

namespace fastgeo {
namespace cpu {
namespace {

// Tile budget per (rows, D) buffer: the backward holds two (sigma, dL/dbeta), about 2x this.
constexpr int64_t kTileBytes = int64_t(1) << 17;

// sig[i, :] = (sig[i, :] + zeta)^-1/2, in place (sig holds phi W^T on entry).
template <typename T>
inline void to_sigma(T* sig, const T* zeta, int64_t D) {
  add_rsqrt(sig, zeta, D);
}

template <typename T>
void rbf_segment_sqdist_kernel(const at::Tensor& pts, const at::Tensor& cT, const at::Tensor& gammas,
                               const at::Tensor& weights, const at::Tensor& zeta, int64_t N,
                               at::Tensor& out) {
  const int64_t BN = pts.size(0), d = pts.size(1), K = gammas.size(0), D = weights.size(0);
  const int64_t R = tile_rows(std::max(D, K), sizeof(T), 32, 1024, kTileBytes);
  const int64_t tiles = (BN + R - 1) / R;
  const int64_t held = std::min(R, BN);  // a tile's rows: no more than there are
  const T* zp = pts.data_ptr<T>();
  const T* cp = cT.data_ptr<T>();
  const T* gp = gammas.data_ptr<T>();
  const T* zetap = zeta.data_ptr<T>();
  T* op = out.data_ptr<T>();
  const at::Tensor Wt = weights.t();
  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    at::Tensor phi = at::empty({held + 1, K}, pts.options());
    at::Tensor sig = at::empty({held + 1, D}, pts.options());
    T* phip = phi.data_ptr<T>();
    T* sigp = sig.data_ptr<T>();
    for (int64_t t = begin; t < end; ++t) {
      const int64_t r0 = t * R, rows = std::min(R + 1, BN - r0);
      rbf_features<T>(zp + r0 * d, rows, d, cp, gp, K, phip);
      at::Tensor sigt = sig.narrow(0, 0, rows);
      at::mm_out(sigt, phi.narrow(0, 0, rows), Wt);
      to_sigma(sigp, zetap, D);
      for (int64_t i = 1; i < rows; ++i) {
        T* s = sigp + i * D;
        to_sigma(s, zetap, D);  // row i is finished while row i-1 is still in L1
        const int64_t r = r0 + i - 1, n = r % N;  // the segment (r, r+1)
        if (n == N - 1) continue;                // r ends a curve: no segment
        const T* sprev = s - D;
        T acc = T(0);
#pragma omp simd reduction(+ : acc)
        for (int64_t j = 0; j < D; ++j) {
          const T diff = s[j] - sprev[j];
          acc += diff * diff;
        }
        op[(r / N) * (N - 1) + n] = acc;
      }
    }
  });
}

template <typename T>
void rbf_segment_sqdist_backward_kernel(const at::Tensor& g_, const at::Tensor& pts, const at::Tensor& cT,
                                        const at::Tensor& gammas, const at::Tensor& weights,
                                        const at::Tensor& zeta, int64_t N, const std::array<bool, 5>& mask,
                                        at::Tensor& gz, at::Tensor& gcT_acc, at::Tensor& gg_acc,
                                        at::Tensor& gW_acc, at::Tensor& gzeta_acc, int64_t R,
                                        int64_t chunks) {
  const int64_t BN = pts.size(0), d = pts.size(1), K = gammas.size(0), D = weights.size(0);
  const int64_t tiles = (BN + R - 1) / R, held = std::min(R, BN);
  const bool need_h = mask[0] || mask[1] || mask[2];
  const T* zp = pts.data_ptr<T>();
  const T* cp = cT.data_ptr<T>();
  const T* gp = gammas.data_ptr<T>();
  const T* zetap = zeta.data_ptr<T>();
  const T* g = g_.data_ptr<T>();
  const at::Tensor Wt = weights.t();
  at::parallel_for(0, chunks, 1, [&](int64_t cbegin, int64_t cend) {
    at::Tensor phi = at::empty({held + 2, K}, pts.options());
    at::Tensor sig = at::empty({held + 2, D}, pts.options());
    at::Tensor gbeta = at::empty({held, D}, pts.options());
    at::Tensor gphi = at::empty({held, K}, pts.options());
    at::Tensor hg = at::empty({K}, pts.options());
    T* phip = phi.data_ptr<T>();
    T* sigp = sig.data_ptr<T>();
    T* gbp = gbeta.data_ptr<T>();
    T* hp = gphi.data_ptr<T>();
    for (int64_t c = cbegin; c < cend; ++c) {
      T* gc = mask[1] ? gcT_acc[c].data_ptr<T>() : nullptr;
      T* gg = mask[2] ? gg_acc[c].data_ptr<T>() : nullptr;
      at::Tensor gW = mask[3] ? gW_acc[c] : at::Tensor();
      T* gzeta = mask[4] ? gzeta_acc[c].data_ptr<T>() : nullptr;
      for (int64_t t = chunk_begin(tiles, chunks, c); t < chunk_begin(tiles, chunks, c + 1); ++t) {
        const int64_t r0 = t * R, r1 = std::min(r0 + R, BN), rr = r1 - r0;
        const int64_t lo = std::max<int64_t>(r0 - 1, 0), hi = std::min(r1 + 1, BN), rows = hi - lo;
        const int64_t off = r0 - lo;  // row of point r0 in phi / sig
        rbf_features<T>(zp + lo * d, rows, d, cp, gp, K, phip);
        at::Tensor sigt = sig.narrow(0, 0, rows);
        at::mm_out(sigt, phi.narrow(0, 0, rows), Wt);
        for (int64_t i = 0; i < rows; ++i) to_sigma(sigp + i * D, zetap, D);
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t n = r % N, b = r / N;
          const T* s = sigp + (r - lo) * D;
          // Missing neighbours (curve ends) point at row r itself, with weight 0.
          const T* sp = n > 0 ? s - D : s;
          const T* sq = n < N - 1 ? s + D : s;
          const T gprev = n > 0 ? g[b * (N - 1) + n - 1] : T(0);
          const T gnext = n < N - 1 ? g[b * (N - 1) + n] : T(0);
          T* gb = gbp + (r - r0) * D;
#pragma omp simd
          for (int64_t j = 0; j < D; ++j) {
            const T a = gprev * (s[j] - sp[j]) - gnext * (sq[j] - s[j]);  // (1/2) dL/dsigma
            gb[j] = -a * s[j] * s[j] * s[j];
          }
        }
        const at::Tensor gbt = gbeta.narrow(0, 0, rr);
        const at::Tensor phit = phi.narrow(0, off, rr);
        if (need_h) {
          at::Tensor gphit = gphi.narrow(0, 0, rr);
          at::mm_out(gphit, gbt, weights);  // (rr, D) @ (D, K)
          const T* ph = phip + off * K;
          for (int64_t i = 0; i < rr * K; ++i) hp[i] *= ph[i];
          rbf_features_backward<T>(zp + r0 * d, rr, d, cp, gp, K, hp, hg.data_ptr<T>(),
                                   mask[0] ? gz.data_ptr<T>() + r0 * d : nullptr, gc, gg);
        }
        if (mask[3]) gW.addmm_(gbt.t(), phit);  // (D, rr) @ (rr, K)
        if (mask[4]) {
          for (int64_t i = 0; i < rr; ++i) {
            const T* gr = gbp + i * D;
#pragma omp simd
            for (int64_t j = 0; j < D; ++j) gzeta[j] += gr[j];
          }
        }
      }
    }
  });
}

void check_points(const at::Tensor& points, const at::Tensor& centers, const at::Tensor& gammas,
                  const at::Tensor& weights, const at::Tensor& zeta) {
  TORCH_CHECK_VALUE(points.dim() == 3, "points must be (B, N, d), got ", points.sizes());
  TORCH_CHECK_VALUE(points.size(1) >= 2, "points must have N >= 2 points per curve, got ", points.sizes());
  check_rbf_params(points, "points", centers, gammas, weights);
  check_zeta(zeta, weights);
}

at::Tensor rbf_segment_sqdist_cpu(const at::Tensor& points_in, const at::Tensor& centers_in,
                                  const at::Tensor& gammas_in, const at::Tensor& weights_in,
                                  const at::Tensor& zeta_in) {
  check_points(points_in, centers_in, gammas_in, weights_in, zeta_in);
  const int64_t B = points_in.size(0), N = points_in.size(1), d = points_in.size(2);
  const at::Tensor pts = plain(points_in).view({B * N, d});
  const at::Tensor gammas = plain(gammas_in), weights = plain(weights_in);
  const at::Tensor zeta = plain(zeta_in), cT = centers_t(centers_in);
  at::Tensor out = new_output({B, N - 1}, pts.options());
  AT_DISPATCH_FLOATING_TYPES(pts.scalar_type(), "fastgeo::rbf_segment_sqdist", [&] {
    rbf_segment_sqdist_kernel<scalar_t>(pts, cT, gammas, weights, zeta, N, out);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> rbf_segment_sqdist_backward_cpu(
    const at::Tensor& grad_in, const at::Tensor& points_in, const at::Tensor& centers_in,
    const at::Tensor& gammas_in, const at::Tensor& weights_in, const at::Tensor& zeta_in,
    std::array<bool, 5> mask) {
  check_points(points_in, centers_in, gammas_in, weights_in, zeta_in);
  const int64_t B = points_in.size(0), N = points_in.size(1), d = points_in.size(2);
  TORCH_CHECK_VALUE(grad_in.dim() == 2 && grad_in.size(0) == B && grad_in.size(1) == N - 1,
                    "grad must be (B, N-1) = (", B, ", ", N - 1, "), got ", grad_in.sizes());
  TORCH_CHECK_TYPE(grad_in.scalar_type() == points_in.scalar_type(), "grad dtype ", grad_in.scalar_type(),
                   " differs from points dtype ", points_in.scalar_type());
  const at::Tensor g = plain(grad_in);
  const at::Tensor pts = plain(points_in).view({B * N, d});
  const at::Tensor gammas = plain(gammas_in), weights = plain(weights_in);
  const at::Tensor zeta = plain(zeta_in), cT = centers_t(centers_in);
  const int64_t K = gammas.size(0), D = weights.size(0);
  const int64_t R = tile_rows(std::max(D, K), pts.element_size(), 32, 1024, kTileBytes);
  const int64_t chunks = num_chunks((B * N + R - 1) / R);
  const auto opts = pts.options();
  auto none = [&] { return at::empty({0}, opts); };  // a fresh one per output: outputs must not alias
  at::Tensor gz = mask[0] ? new_output({B * N, d}, opts) : none();
  at::Tensor gcT = mask[1] ? at::zeros({chunks, d, K}, opts) : none();
  at::Tensor gg = mask[2] ? at::zeros({chunks, K}, opts) : none();
  at::Tensor gW = mask[3] ? at::zeros({chunks, D, K}, opts) : none();
  at::Tensor gzeta = mask[4] ? at::zeros({chunks, D}, opts) : none();
  AT_DISPATCH_FLOATING_TYPES(pts.scalar_type(), "fastgeo::rbf_segment_sqdist_backward", [&] {
    rbf_segment_sqdist_backward_kernel<scalar_t>(g, pts, cT, gammas, weights, zeta, N, mask, gz, gcT, gg,
                                                 gW, gzeta, R, chunks);
  });
  return {mask[0] ? gz.view({B, N, d}) : gz, mask[1] ? gcT.sum(0).t().contiguous() : none(),
          mask[2] ? gg.sum(0) : none(), mask[3] ? gW.sum(0) : none(), mask[4] ? gzeta.sum(0) : none()};
}

}  // namespace

}  // namespace cpu
}  // namespace fastgeo

TORCH_LIBRARY_IMPL(fastgeo, CPU, m) {
  m.impl("rbf_segment_sqdist", &fastgeo::cpu::rbf_segment_sqdist_cpu);
  m.impl("rbf_segment_sqdist_backward", &fastgeo::cpu::rbf_segment_sqdist_backward_cpu);
}
