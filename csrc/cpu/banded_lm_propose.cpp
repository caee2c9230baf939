// banded_lm_propose on the CPU, one curve per task: the damped Levenberg-Marquardt step of
// lm_propose (no secant model) for block-banded Gauss-Newton matrices, as banded_lm_propose in
// fastgeo/reference/levenberg_marquardt.py, by a band Cholesky factorization in the thread's cache.
//
// Storage: the upper factor U (A = U^T U) by rows, each row holding the W = (band + 1) d entries
// from the start of its own block: row r, column c is global column (r / d) d + c. The
// factorization, the panel solve and the Schur updates are then loops over contiguous runs of a
// row (no reduction over a run: gcc vectorizes them without reassociating sums, and a curve's
// result does not depend on its place in the batch or in memory). Blocks of kGemmMinBlock and more
// do the bulk of the work (the Schur updates, and the updates inside a block row between panels of
// kPanel rows) by the GEMM that ATen calls (at d = 64-128 the register tiles run at a fraction of
// its speed); its calls have fixed shapes per curve, so a curve's step is still the same alone and
// in a batch.
#include <torch/library.h>

#include <vector>

#include "common.h"
#include "lm_state.h"

namespace fastgeo {
namespace cpu {
namespace {

// Factors rows i0 .. i1 - 1 of a block row in place (row i at row + i W, entries up to width),
// updating only each other: their part of the diagonal block's upper Cholesky factor and of the
// panel U^-T A right of it, given that earlier rows' updates are in. False where a pivot is not
// positive (or NaN).
template <typename T>
bool factor_rows(T* row, int64_t W, int64_t i0, int64_t i1, int64_t width) {
  for (int64_t i = i0; i < i1; ++i) {
    T* ri = row + i * W;
    const T pivot = ri[i];
    if (!(pivot > T(0))) return false;
    const T uii = std::sqrt(pivot);
    ri[i] = uii;
    for (int64_t c = i + 1; c < width; ++c) ri[c] /= uii;
    for (int64_t k = i + 1; k < i1; ++k) {
      T* rk = row + k * W;
      const T s = ri[k];
      for (int64_t c = k; c < width; ++c) rk[c] -= s * ri[c];
    }
  }
  return true;
}

// Factors block row j of u in place (rows j d .. j d + d - 1, entries up to width): the diagonal
// block's upper Cholesky factor and the panel U_jj^-T A_(j, j+1..) right of it.
template <typename T>
bool factor_block_row(T* u, int64_t W, int64_t j, int64_t d, int64_t width) {
  return factor_rows(u + j * d * W, W, 0, d, width);
}

// Register tile of the Schur update: kRows target rows by kCols columns.
constexpr int64_t kRows = 4;
constexpr int64_t kCols = 8;

// c[i][x] -= sum_t a[t][i] b[t][x] for i < rows, x < cols, t < depth, summed over t in order; a, b
// rows ld apart, c rows ldc apart. kFull: a whole kRows x kCols tile (constant trip counts, kept in
// registers); otherwise rows <= kRows and cols <= kCols.
template <typename T, bool kFull>
inline void gram_tile(const T* a, const T* b, int64_t ld, int64_t depth, T* c, int64_t ldc, int64_t rows,
                      int64_t cols) {
  const int64_t nr = kFull ? kRows : rows, nc = kFull ? kCols : cols;
  T acc[kRows][kCols];
  for (int64_t i = 0; i < nr; ++i)
    for (int64_t x = 0; x < nc; ++x) acc[i][x] = c[i * ldc + x];
  for (int64_t t = 0; t < depth; ++t) {
    const T* at = a + t * ld;
    const T* bt = b + t * ld;
    for (int64_t i = 0; i < nr; ++i)
      for (int64_t x = 0; x < nc; ++x) acc[i][x] -= at[i] * bt[x];
  }
  for (int64_t i = 0; i < nr; ++i)
    for (int64_t x = 0; x < nc; ++x) c[i * ldc + x] = acc[i][x];
}

// Subtracts the panel's Gram matrix from the block rows below block row j: for a = 1, 2, ..., the
// rows of block row j + a lose P_a^T [P_a P_(a+1) ...] (P_a: the panel's columns a d .. a d + d - 1,
// the panel's rows summed in order). Tiles wholly left of the diagonal are skipped; the rest of
// the diagonal block's lower triangle is written but never read.
template <typename T>
void schur_update(T* u, int64_t W, int64_t j, int64_t d, int64_t width) {
  const T* panel = u + j * d * W;
  for (int64_t a = 1; a * d < width; ++a) {
    T* target = u + (j + a) * d * W;
    const int64_t cols = width - a * d;
    for (int64_t i0 = 0; i0 < d; i0 += kRows) {
      const int64_t rows = std::min(kRows, d - i0);
      for (int64_t x0 = (i0 / kCols) * kCols; x0 < cols; x0 += kCols) {
        const int64_t n = std::min(kCols, cols - x0);
        if (rows == kRows && n == kCols) {
          gram_tile<T, true>(panel + a * d + i0, panel + a * d + x0, W, d, target + i0 * W + x0, W, rows, n);
        } else {
          gram_tile<T, false>(panel + a * d + i0, panel + a * d + x0, W, d, target + i0 * W + x0, W, rows, n);
        }
      }
    }
  }
}

// sum_c x[c] y[c] in eight partial sums (vectorized without reassociation, in a fixed order: the
// same whatever the batch).
template <typename T>
inline T dot(const T* x, const T* y, int64_t n) {
  T lanes[8] = {};
  int64_t c = 0;
  for (; c + 8 <= n; c += 8)
    for (int64_t k = 0; k < 8; ++k) lanes[k] += x[c + k] * y[c + k];
  T acc = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
  for (; c < n; ++c) acc += x[c] * y[c];
  return acc;
}

// Blocks of at least this size are factored with GEMMs (factor_block_row_gemm): m = 23, 1 thread,
// this machine's MKL: d = 32 (4 curves) 5.6 -> 3.4 ms, d = 64 9 -> 3 ms, d = 128 61 -> 20-26 ms;
// at d = 16-24 the tiles are as fast or faster (the calls' overhead).
constexpr int64_t kGemmMinBlock = 32;
constexpr int64_t kPanel = 8;  // rows factored by rank-one updates between two GEMM updates (8-32 alike)

// C (rows x cols) -= A^T B for row-major a (depth x rows), b (depth x cols), c, all with leading
// dimension ld, by at::addmm_ on views of them (no copies).
template <typename T>
void gram_subtract(T* a, T* b, T* c, int64_t ld, int64_t depth, int64_t rows, int64_t cols) {
  const auto type = c10::CppTypeToScalarType<T>::value;
  at::Tensor av = at::from_blob(a, {depth, rows}, {ld, 1}, type);
  at::Tensor bv = at::from_blob(b, {depth, cols}, {ld, 1}, type);
  at::from_blob(c, {rows, cols}, {ld, 1}, type).addmm_(av.t(), bv, 1, -1);
}

// factor_block_row then schur_update, in panels of kPanel rows: each panel factored by rank-one
// updates among its own rows, the rows below it in the block row updated by one GEMM, and the block
// rows below by one GEMM each (the whole rectangle: the diagonal blocks stay symmetric).
template <typename T>
bool factor_block_row_gemm(T* u, int64_t W, int64_t j, int64_t d, int64_t width) {
  T* row = u + j * d * W;
  for (int64_t i0 = 0; i0 < d; i0 += kPanel) {
    const int64_t i1 = std::min(d, i0 + kPanel);
    if (!factor_rows(row, W, i0, i1, width)) return false;
    if (i1 < d) {
      T* panel = row + i0 * W + i1;
      gram_subtract(panel, panel, row + i1 * W + i1, W, i1 - i0, d - i1, width - i1);
    }
  }
  for (int64_t a = 1; a * d < width; ++a) {  // block row j + a loses P_a^T [P_a P_(a+1) ...]
    gram_subtract(row + a * d, row + a * d, u + (j + a) * d * W, W, d, d, width - a * d);
  }
  return true;
}

template <typename T>
void propose_curve(const T* g, const T* hess, T lam, int64_t p, int64_t d, int64_t band, double segments, T* step,
                   T* predicted, bool* solved, std::vector<T>& scratch) {
  const int64_t m = p / d;
  const int64_t w = std::min(band, m - 1) + 1;  // blocks per stored row
  const int64_t W = w * d;
  scratch.assign(p * W + p, T(0));
  T* u = scratch.data();
  T* hs = u + p * W;
  T dmax = -std::numeric_limits<T>::infinity();
  for (int64_t i = 0; i < p; ++i) dmax = std::max(dmax, hess[i * p + i]);
  // clamp(min=1e-30) as in the reference (NaN stays NaN, then the factorization fails).
  const T floor = T(1e-12) * (dmax < T(1e-30) ? T(1e-30) : dmax);
  for (int64_t r = 0; r < p; ++r) {
    const int64_t start = (r / d) * d;
    const int64_t n = std::min(W, p - start);
    std::copy(hess + r * p + start, hess + r * p + start + n, u + r * W);
    u[r * W + r % d] += lam * (hess[r * p + r] + floor);
  }
  bool ok = true;
  for (int64_t j = 0; j < m && ok; ++j) {
    const int64_t width = (std::min(band, m - 1 - j) + 1) * d;
    if (d >= kGemmMinBlock) {
      ok = factor_block_row_gemm(u, W, j, d, width);
    } else {
      ok = factor_block_row(u, W, j, d, width);
      if (ok) schur_update(u, W, j, d, width);
    }
  }
  if (ok) {
    // U^T y = -g, then U step = y; row r's entries right of its diagonal end at its band's edge.
    for (int64_t r = 0; r < p; ++r) step[r] = -g[r];
    for (int64_t r = 0; r < p; ++r) {
      const T* ur = u + r * W - (r / d) * d;  // ur[c]: global column c
      const int64_t end = std::min(p, (r / d + w) * d);
      const T y = step[r] / ur[r];
      step[r] = y;
      for (int64_t c = r + 1; c < end; ++c) step[c] -= ur[c] * y;
    }
    for (int64_t r = p - 1; r >= 0; --r) {
      const T* ur = u + r * W - (r / d) * d;
      const int64_t end = std::min(p, (r / d + w) * d);
      step[r] = (step[r] - dot(ur + r + 1, step + r + 1, end - r - 1)) / ur[r];
    }
    for (int64_t r = 0; r < p && ok; ++r) ok = std::isfinite(step[r]);
  }
  if (!ok) std::fill(step, step + p, T(0));
  // hess step over the band (entries outside it are not read), then the model's decrease.
  for (int64_t r = 0; r < p; ++r) {
    const int64_t jb = r / d;
    const int64_t lo = std::max<int64_t>(0, jb - band) * d, hi = std::min(m, jb + band + 1) * d;
    hs[r] = dot(hess + r * p + lo, step + lo, hi - lo);
  }
  T acc = T(0);
  for (int64_t i = 0; i < p; ++i) acc += (g[i] + T(0.5) * hs[i]) * step[i];
  *predicted = T(-segments) * acc;
  *solved = ok;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> banded_lm_propose_cpu(const at::Tensor& grad_in,
                                                                    const at::Tensor& hess_in,
                                                                    const at::Tensor& lam_in, int64_t segments,
                                                                    int64_t block, int64_t band) {
  check_lm_args(grad_in, {{hess_in, "hess", LMLayout::kMatrix}, {lam_in, "lam", LMLayout::kScalar}});
  const int64_t p = grad_in.size(1);
  TORCH_CHECK_VALUE(block >= 1 && p % block == 0, "block must divide the ", p, " unknowns, got ", block);
  TORCH_CHECK_VALUE(band >= 0, "band must be >= 0, got ", band);
  band = std::min(band, p / block);  // a wider band is the full matrix (and jb + band + 1 must not overflow)
  const at::Tensor grad = plain(grad_in), hess = plain(hess_in), lam = plain(lam_in);
  std::tuple<at::Tensor, at::Tensor, at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "fastgeo::banded_lm_propose", [&] {
    const scalar_t* g = grad.data_ptr<scalar_t>();
    const scalar_t* h = hess.data_ptr<scalar_t>();
    const scalar_t* l = lam.data_ptr<scalar_t>();
    // One curve per task: a curve's factorization is large enough to share out alone.
    out = propose_each_curve<scalar_t>(
        grad, 1, [&](int64_t b, scalar_t* st, scalar_t* pr, bool* so, std::vector<scalar_t>& scratch) {
          propose_curve<scalar_t>(g + b * p, h + b * p * p, l[b], p, block, band, double(segments), st, pr, so,
                                  scratch);
        },
        block >= kGemmMinBlock);
  });
  return out;
}

}  // namespace
}  // namespace cpu
}  // namespace fastgeo

TORCH_LIBRARY_IMPL(fastgeo, CPU, m) {
  m.impl("banded_lm_propose", &fastgeo::cpu::banded_lm_propose_cpu);
}
