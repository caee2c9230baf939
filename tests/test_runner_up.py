"""The runner-up of a close race is refined only where a wall separates it from the winner: two
racers that stopped apart in one valley reach the same curve, and refining both doubled the fine
work at d = 32."""

import torch
from analytic import constant_precision

import fastgeo
from fastgeo.curves import BSplineBasis
from fastgeo.solver.problem import Grid
from fastgeo.solver.race import STAGE, _separated
from fastgeo.solver.result import CONVERGED, Work


def _hill_metric(height: float) -> fastgeo.ExpectedMetric:
    """The plane with a Gaussian hill of ``height`` at the origin (graph of a surface in R^3)."""

    def mean(z: torch.Tensor) -> torch.Tensor:
        return torch.cat([z, height * torch.exp(-(z * z).sum(-1, keepdim=True) / 0.1)], -1)

    return fastgeo.ExpectedMetric(mean, constant_precision(2, 3))


def _around(side: torch.Tensor, grid_m: int) -> torch.Tensor:
    """Deviations (R, m, 2) from the straight line (-1, 0) -> (1, 0): a bulge of ``side`` (R,) in y."""
    t = torch.linspace(0, 1, grid_m, dtype=torch.float64)
    bulge = torch.sin(torch.pi * t)
    c = torch.zeros(side.numel(), grid_m, 2, dtype=torch.float64)
    c[..., 1] = side[:, None] * bulge
    return c


def test_curves_on_either_side_of_a_hill_are_separated_and_one_valley_is_not():
    basis = BSplineBasis(8)
    z0 = torch.tensor([[-1.0, 0.0]] * 3, dtype=torch.float64)
    z1 = -z0
    grid = Grid.of(basis, 48, z0)
    above, below = _around(torch.tensor([0.6, 0.6, 0.6]), 8), _around(torch.tensor([-0.6, -0.6, 0.45]), 8)
    hill = _separated(_hill_metric(3.0), z0, z1, above, below, grid, Work())
    # Rows 0-1: around the hill on either side (the curve between them climbs it); row 2: both above.
    assert hill.tolist() == [True, True, False]
    # Without the hill the energy is convex in the coefficients: nothing lies between.
    flat = _separated(_hill_metric(0.0), z0, z1, above, below, grid, Work())
    assert not flat.any()


def test_a_non_finite_energy_counts_as_separated():
    basis = BSplineBasis(8)
    z0 = torch.tensor([[-1.0, 0.0]], dtype=torch.float64)
    grid = Grid.of(basis, 24, z0)
    c = _around(torch.tensor([0.3]), 8)
    bad = c.clone()
    bad[0, 3, 0] = torch.nan
    assert _separated(_hill_metric(1.0), z0, -z0, c, bad, grid, Work()).tolist() == [True]


def _race_two(metric: fastgeo.ExpectedMetric, starts: torch.Tensor, prune_from: int, monkeypatch) -> tuple:
    """Both racers of one curve (-1, 0) -> (1, 0) through the race's first phase."""
    from fastgeo.solver import race
    from fastgeo.solver.options import solver_options
    from fastgeo.solver.problem import full_parts

    monkeypatch.setattr(race, "PRUNE_FROM", prune_from)
    z0 = torch.tensor([[-1.0, 0.0]], dtype=torch.float64)
    opts = solver_options(torch.float64, 2, 3, m=8, n_points=48)
    grid = Grid.of(opts.basis, 48, z0)
    work = Work()
    curve_idx = torch.zeros(2, dtype=torch.long)
    return race._race(metric, full_parts(metric, work), z0, -z0, starts, curve_idx, grid, opts, 1e-10, work)


def test_two_racers_both_run_to_convergence_however_far_behind_after_the_first_stage(monkeypatch):
    # The straight line through a hill against a start already around it: after STAGE iterations
    # the straight line's racer is far behind, but it slides off the hill to the same optimum on
    # the other side (by symmetry); a pruned racer would keep its first-stage energy.
    metric = _hill_metric(3.0)
    z0 = torch.tensor([[-1.0, 0.0]], dtype=torch.float64)
    around = _around(torch.tensor([0.6]), 8)
    opts = {"m": 8, "graph": False, "warm_start": False, "subdivide": False}
    solved = fastgeo.geodesics(metric, z0, -z0, init=around, **opts)
    straight = _around(torch.tensor([-0.02]), 8)
    starts = torch.cat([straight, solved.curves.coeffs.double()])
    coeffs, energy, status, it = _race_two(metric, starts, 3, monkeypatch)
    assert it[0] > STAGE and status.tolist() == [CONVERGED, CONVERGED]
    assert torch.allclose(energy[0], energy[1], rtol=1e-6)
    # Pruned after the first stage (two racers were before), it stops far behind.
    _, pruned, pruned_status, _ = _race_two(metric, starts, 2, monkeypatch)
    assert pruned[0] > 1.05 * pruned[1] and int(pruned_status[0]) != CONVERGED
