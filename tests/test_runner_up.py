"""The runner-up of a close race is refined only where a wall separates it from the winner: two
racers that stopped apart in one valley reach the same curve, and refining both doubled the fine
work at d = 32."""

import torch
from analytic import constant_precision

import fastgeo
from fastgeo.curves import BSplineBasis
from fastgeo.solver.problem import Grid
from fastgeo.solver.race import _separated
from fastgeo.solver.result import Work


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
