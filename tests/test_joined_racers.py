"""Racers that join a better racer's basin stop there (fastgeo.solver.race._joined_racers): a racer
close to a lower one of its curve, with no wall between them, stops; the lowest racer of a curve,
a racer far from every lower one and a racer walled off from it go on; and on a trained VAE the
race then costs fewer iterations for the same lengths."""

from pathlib import Path

import pytest
import torch
from analytic import constant_precision

import fastgeo
from fastgeo.curves import BSplineBasis
from fastgeo.metric import energy_from_segments
from fastgeo.solver import race
from fastgeo.solver.problem import Grid, full_segments
from fastgeo.solver.result import Work

DATA = Path(__file__).parent / "data"


def _hill(z: torch.Tensor, height: float, width: float) -> torch.Tensor:
    """The plane with a narrow hill at the origin: (P, 2) -> (P, 3)."""
    return torch.cat([z, height * torch.exp(-(z * z).sum(-1, keepdim=True) / width**2)], -1)


def _racers(height: float, bulges: list[float], curve_idx: list[int]):
    """Racers from (-1, 0) to (1, 0) (a chord of 2) whose middle control point of five puts them
    ``bulges`` chords off the line at most, the drop callback of their race and their energies."""
    width = 0.3 * race.JOIN_RADIUS  # in latent units: 0.15 of a join radius (2 JOIN_RADIUS)
    metric = fastgeo.ExpectedMetric(lambda z: _hill(z, height, width), constant_precision(2, 3))
    grid = Grid.of(BSplineBasis(5), 48, torch.zeros(1, dtype=torch.float64))
    idx = torch.tensor(curve_idx)
    a = torch.tensor([[-1.0, 0.0]], dtype=torch.float64).expand(len(bulges), 2)
    b = -a
    coeffs = torch.zeros(len(bulges), 5, 2, dtype=torch.float64)
    coeffs[:, 2, 1] = 2 * torch.tensor(bulges, dtype=torch.float64) / grid.psi[:, 2].max()
    segments = full_segments(metric, a, b, grid, Work())
    energies = energy_from_segments(segments(coeffs, torch.arange(len(bulges))))
    return race._joined_racers(metric, a, b, idx, grid, Work()), coeffs, energies


def test_a_racer_near_a_lower_one_stops_and_the_others_go_on():
    # Curve 0: the straight line (lowest), a racer 0.9 join radii off it (near), one 10 radii off
    # (far); curve 1: one racer 0.9 radii off, alone. A flat plane: no walls.
    r = race.JOIN_RADIUS
    drop, coeffs, energies = _racers(0.0, [0.0, 0.9 * r, 10 * r, 0.9 * r], [0, 0, 0, 1])
    assert energies[0] < energies[1] < energies[2]
    everyone = torch.arange(4)
    keepers = torch.ones(4, dtype=torch.bool)
    assert drop(everyone, coeffs, energies, keepers).tolist() == [False, True, False, False]
    # Only the racers still iterating are asked about; a lower racer that is not a keeper (it
    # stalled, or is not finite) holds no one back.
    assert drop(torch.tensor([1, 3]), coeffs, energies, keepers).tolist() == [True, False]
    keepers[0] = False
    assert drop(everyone, coeffs, energies, keepers).tolist() == [False, False, False, False]


def test_a_racer_walled_off_from_a_lower_one_goes_on():
    # A narrow hill on the straight line: racers passing it on either side, 0.95 join radii apart
    # at most, are separated by it (the curve halfway between them climbs it).
    r = race.JOIN_RADIUS
    drop, coeffs, energies = _racers(1.0, [0.45 * r, -0.5 * r], [0, 0])
    assert energies[0] < energies[1]
    keepers = torch.ones(2, dtype=torch.bool)
    assert drop(torch.arange(2), coeffs, energies, keepers).tolist() == [False, False]
    # Without the hill, the same two racers are one basin.
    drop, coeffs, energies = _racers(0.0, [0.45 * r, -0.5 * r], [0, 0])
    assert drop(torch.arange(2), coeffs, energies, keepers).tolist() == [False, True]


def test_joining_keeps_the_lengths_for_fewer_iterations(monkeypatch, one_thread):
    """A trained d = 12 VAE: the race with racers joining gives the lengths of the race without
    (JOIN_RADIUS = 0: no racer stops early) in fewer iterations."""
    path = DATA / "mlp12_small.safetensors"
    metric, Z = fastgeo.load_generator(path), fastgeo.load_extra(path)["latents"]
    g = torch.Generator().manual_seed(3)
    i, j = torch.randint(Z.shape[0], (2, 8), generator=g)
    joined = fastgeo.geodesics(metric, Z[i], Z[j])
    monkeypatch.setattr(race, "JOIN_RADIUS", 0.0)
    raced = fastgeo.geodesics(metric, Z[i], Z[j])
    assert (joined.status == "converged").all() and (raced.status == "converged").all()
    torch.testing.assert_close(joined.lengths, raced.lengths, rtol=1e-4, atol=0)
    assert int(joined.iterations.sum()) < int(raced.iterations.sum())


@pytest.mark.parametrize("joining", [False, True])
def test_the_lowest_racer_of_every_curve_goes_on(joining, monkeypatch):
    """Joining or not (JOIN_RADIUS = 0), every curve keeps a racer: its lowest keeper."""
    r = race.JOIN_RADIUS
    drop, coeffs, energies = _racers(0.0, [0.0, 0.2 * r, 0.4 * r, 0.6 * r, 0.9 * r], [0, 0, 0, 1, 1])
    if not joining:
        monkeypatch.setattr(race, "JOIN_RADIUS", 0.0)
    out = drop(torch.arange(5), coeffs, energies, torch.ones(5, dtype=torch.bool))
    assert not out[0] and not out[3]
    assert out[[1, 2, 4]].tolist() == [joining] * 3


def test_racers_in_any_order_of_their_curves():
    r = race.JOIN_RADIUS
    drop, coeffs, energies = _racers(0.0, [0.9 * r, 0.0, 10 * r, 0.0, 0.9 * r], [0, 1, 1, 0, 1])
    out = drop(torch.arange(5), coeffs, energies, torch.ones(5, dtype=torch.bool))
    assert out.tolist() == [True, False, False, False, True]
