"""The race: every racer runs to convergence on the coarse grid, and a racer close to its curve's
winner is refined too only where a wall separates the two (two racers that stopped apart in one
valley reach the same curve, and refining both doubled the fine work at d = 32)."""

import torch
from analytic import constant_precision

import fastgeo
from fastgeo.curves import BSplineBasis
from fastgeo.solver import race
from fastgeo.solver.levenberg_marquardt import levenberg_marquardt
from fastgeo.solver.options import solver_options
from fastgeo.solver.problem import Grid, full_parts
from fastgeo.solver.result import CONVERGED, Work

STEPS = 4  # iterations after which racers far behind used to stop


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
    hill = race._separated(_hill_metric(3.0), z0, z1, above, below, grid, Work())
    # Rows 0-1: around the hill on either side (the curve between them climbs it); row 2: both above.
    assert hill.tolist() == [True, True, False]
    # Without the hill the energy is convex in the coefficients: nothing lies between.
    flat = race._separated(_hill_metric(0.0), z0, z1, above, below, grid, Work())
    assert not flat.any()


def test_a_non_finite_energy_counts_as_separated():
    basis = BSplineBasis(8)
    z0 = torch.tensor([[-1.0, 0.0]], dtype=torch.float64)
    grid = Grid.of(basis, 24, z0)
    c = _around(torch.tensor([0.3]), 8)
    bad = c.clone()
    bad[0, 3, 0] = torch.nan
    assert race._separated(_hill_metric(1.0), z0, -z0, c, bad, grid, Work()).tolist() == [True]


def _race(metric: fastgeo.ExpectedMetric, starts: torch.Tensor) -> tuple:
    """All racers (R, m, 2) of one curve (-1, 0) -> (1, 0) through the race on the coarse grid."""
    z0 = torch.tensor([[-1.0, 0.0]], dtype=torch.float64)
    opts = solver_options(torch.float64, 2, 3, m=8, n_points=48)
    grid = Grid.of(opts.basis, 48, z0)
    work = Work()
    curve_idx = torch.zeros(starts.shape[0], dtype=torch.long)
    return race._race(metric, full_parts(metric, work), z0, -z0, starts, curve_idx, grid, opts, 1e-10, work)


def test_every_racer_runs_to_convergence_however_far_behind_after_a_few_iterations():
    # The straight line through a hill against starts already around it: after STEPS iterations
    # the straight line's racer is far behind, but it slides off the hill to the same optimum on
    # the other side (by symmetry). Racers stopped after a few iterations where far behind (as the
    # race did before) keep a much higher energy: the curve of two-moons and digits VAE pairs whose
    # winning basin was such a racer's came out 0.5-4.7 % long.
    metric = _hill_metric(3.0)
    z0 = torch.tensor([[-1.0, 0.0]], dtype=torch.float64)
    around = _around(torch.tensor([0.6]), 8)
    opts = {"m": 8, "graph": False, "warm_start": False, "subdivide": False}
    solved = fastgeo.geodesics(metric, z0, -z0, init=around, **opts)
    straight = _around(torch.tensor([-0.02]), 8)
    found = solved.curves.coeffs.double()
    starts = torch.cat([straight, found, found])  # three racers: the 2-D race's case
    coeffs, energy, status, it = _race(metric, starts)
    assert status.tolist() == [CONVERGED] * 3
    assert it[0] > STEPS and torch.allclose(energy[0], energy[1], rtol=1e-6)
    # The straight line's racer stopped after STEPS iterations is far behind the others.
    grid = Grid.of(BSplineBasis(8), 48, z0)
    parts = full_parts(metric, Work())
    _, e_early, status_early, _ = levenberg_marquardt(parts, z0, -z0, straight, grid, STEPS, 1e-10)
    assert e_early[0] > 1.05 * energy[1] and int(status_early[0]) != CONVERGED


def test_each_curve_keeps_its_lowest_row_and_the_first_of_a_tie():
    energy = torch.tensor([3.0, 1.0, 2.0, 5.0, 5.0, torch.inf, 4.0])
    curve = torch.tensor([0, 0, 0, 2, 2, 3, 2])
    # Curve 1 has no row; curve 2's rows 3 and 4 tie above row 6; curve 3's only row is infinite.
    assert race._per_curve_best(energy, curve, 4).tolist() == [1, -1, 6, 5]
    tie = torch.tensor([2.0, 2.0, 2.0])
    assert race._per_curve_best(tie, torch.tensor([0, 0, 0]), 1).tolist() == [0]
