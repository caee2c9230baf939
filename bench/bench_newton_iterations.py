"""Iterations of Levenberg-Marquardt with the Gauss-Newton matrix against the same with the
energy's exact Hessian (issue 14: "why 43 LM iterations at d = 16?").

Gauss-Newton keeps ``J^T J`` of the residuals ``r_n = sqrt((N-1)/2) (F(c_(n+1)) - F(c_n))`` (F the
features ``[mu, sigma]``) and drops the second-order term, a block per point,
``sum_k w_(n,k) d^2 F_k / dz^2 (c_n)`` with ``w_n`` the decoded curve's discrete acceleration: the
curvature of the decoder's image contracted with the curve's normal acceleration, which does not
vanish at a geodesic. Both solvers here start from the straight line, in the default's basis (12
B-spline control points, 48 points; float64), with one damping rule, to a relative energy step
of 1e-10; the exact Hessian is taken by central differences of exact gradients (a measurement,
not a method: its cost is not the point). The per-point structure of the dropped term keeps the
system block-banded, so the solver could take it; this script measures whether it would pay in
iterations.

    OMP_NUM_THREADS=1 python bench/bench_newton_iterations.py --generator mlp16_shapes --pairs 8
"""

from __future__ import annotations

import argparse
import time

import torch
from workloads import environment_line, generator, pair_indices

from fastgeo.curves import BSplineBasis, time_grid


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--generator", default="mlp16_shapes", help="a generator of bench/workloads.py or a file")
    p.add_argument("--pairs", type=int, default=8, help="pairs of training codes (a third across classes)")
    p.add_argument("--seed", type=int, default=0, help="sample of pairs")
    p.add_argument("--m", type=int, default=12, help="interior B-spline control points")
    p.add_argument("--points", type=int, default=48, help="points per curve")
    args = p.parse_args()
    torch.set_num_threads(1)
    metric32, Z, labels = generator(args.generator)
    metric, Z = metric32.to(torch.float64), Z.double()
    I, J = pair_indices(labels, args.pairs, args.seed)
    problem = Problem(metric, args.m, args.points)
    shape = f"{args.generator}, d = {Z.shape[1]}, float64, m = {args.m}, N = {args.points}"
    print(environment_line(), "|", shape)
    rows = []
    for k in range(args.pairs):
        z0, z1 = Z[I[k]], Z[J[k]]
        out = [problem.solve(z0, z1, exact) for exact in (False, True)]
        rows.append(out)
        (i0, e0, s0, t0), (i1, e1, s1, t1) = out
        print(
            f"pair {k}: Gauss-Newton {i0} iterations ({s0}, {t0:.1f} s), exact Hessian {i1} ({s1}, "
            f"{t1:.1f} s); energy exact / GN - 1 = {e1 / e0 - 1:+.1e}",
            flush=True,
        )
    gn = torch.tensor([float(r[0][0]) for r in rows])
    newton = torch.tensor([float(r[1][0]) for r in rows])
    print(
        f"iterations: Gauss-Newton mean {gn.mean():.1f} (max {gn.max():.0f}), exact Hessian mean "
        f"{newton.mean():.1f} (max {newton.max():.0f}); ratio of means {gn.mean() / newton.mean():.2f}"
    )


class Problem:
    """The energy of curves in a B-spline basis under ``metric``, its residuals and derivatives."""

    def __init__(self, metric, m: int, n: int) -> None:
        self.metric, self.m, self.n = metric, m, n
        self.t = time_grid(n, metric.precision.centers)
        self.psi = BSplineBasis(m)(self.t)  # (N, m)

    def points(self, a, z0, z1):
        return z0 + self.t[:, None] * (z1 - z0) + self.psi @ a.reshape(self.m, -1)

    def energy(self, a, z0, z1):
        return self.metric.energy(self.points(a, z0, z1)[None])[0]

    def value(self, a, z0, z1) -> float:
        with torch.no_grad():
            return float(self.energy(a, z0, z1))

    def residual_jacobian(self, a, z0, z1):
        """r and dr/da: (R,), (R, m d)."""
        with torch.no_grad():
            F, JF = self.metric.features_and_jacobian(self.points(a, z0, z1))  # (N, 2D), (N, 2D, d)
        c = ((self.n - 1) / 2) ** 0.5
        dF = JF[:, :, None, :] * self.psi[:, None, :, None]  # (N, 2D, m, d)
        return c * (F[1:] - F[:-1]).reshape(-1), (c * (dF[1:] - dF[:-1])).reshape(-1, a.numel())

    def gradient(self, a, z0, z1):
        a = a.detach().requires_grad_()
        return torch.autograd.grad(self.energy(a, z0, z1), a)[0]

    def hessian(self, a, z0, z1, h: float = 1e-5):
        cols = []
        for i in range(a.numel()):
            e = torch.zeros_like(a)
            e[i] = h
            cols.append((self.gradient(a + e, z0, z1) - self.gradient(a - e, z0, z1)) / (2 * h))
        H = torch.stack(cols, 1)
        return 0.5 * (H + H.T)

    def solve(self, z0, z1, exact: bool, tol: float = 1e-10, max_iter: int = 300):
        """(iterations, final energy, status, seconds) of LM from the straight line."""
        start = time.perf_counter()
        a = torch.zeros(self.m * z0.shape[0], dtype=torch.float64)
        damping, E = 1e-3, self.value(a, z0, z1)
        for it in range(1, max_iter + 1):
            r, Jr = self.residual_jacobian(a, z0, z1)
            g, gn = 2 * Jr.T @ r, 2 * Jr.T @ Jr
            H = self.hessian(a, z0, z1) if exact else gn
            scale = torch.diag(gn).clamp(min=1e-12)
            while True:
                chol, info = torch.linalg.cholesky_ex(H + damping * torch.diag(scale))
                if info == 0:  # positive definite: a step; else more damping
                    step = -torch.cholesky_solve(g[:, None], chol)[:, 0]
                    predicted = float(-(g @ step + 0.5 * step @ H @ step))
                    E_new = self.value(a + step, z0, z1)
                    if E_new < E:
                        ratio = (E - E_new) / predicted if predicted > 0 else 0.0
                        damping *= 1 / 3 if ratio > 0.75 else (2 if ratio < 0.25 else 1)
                        damping = max(1e-12, damping)
                        converged = (E - E_new) / E < tol
                        a, E = a + step, E_new
                        break
                damping *= 4
                if damping > 1e12:
                    return it, E, "stuck", time.perf_counter() - start
            if converged:
                return it, E, "converged", time.perf_counter() - start
        return max_iter, E, "max_iter", time.perf_counter() - start


if __name__ == "__main__":
    main()
