"""Geodesic distances are differentiable in their end points (the envelope theorem: the solved
curve's own length as its ends move, its coefficients held fixed), for Frechet means, k-means or
encoders trained with geodesic distances."""

import warnings
from pathlib import Path

import pytest
import torch
from analytic import bumpy_metric, disc_points, great_circle, sphere_metric

import fastgeo
from fastgeo.benchmarks.pairs import pair_indices

DATA = Path(__file__).parent / "data"
pytestmark = pytest.mark.usefixtures("one_thread")


def _relative(grad, want):
    return float(((grad.double() - want).norm(dim=1) / want.norm(dim=1)).max())


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-3), (torch.float32, 2e-3)])
def test_gradients_are_the_great_circle_distances_gradients_on_the_sphere(dtype, rtol):
    metric = sphere_metric(dtype)
    a, b = disc_points(6, 0.8, seed=1), disc_points(6, 0.8, seed=2)
    # clones: in float64 .to would return a and b themselves, and the test compare a gradient with itself
    z0, z1 = a.to(dtype).clone().requires_grad_(), b.to(dtype).clone().requires_grad_()
    weights = torch.arange(1.0, 7.0, dtype=torch.float64)
    res = fastgeo.geodesics(metric, z0, z1, progress=False)
    (res.lengths.double() * weights).sum().backward()
    a.requires_grad_(), b.requires_grad_()
    (great_circle(a, b) * weights).sum().backward()
    assert _relative(z0.grad, a.grad) < rtol
    assert _relative(z1.grad, b.grad) < rtol


def test_gradcheck_on_the_sphere():
    """torch.autograd.gradcheck of ``(z0, z1) -> lengths`` in float64: its numerical Jacobian
    solves every perturbed pair again (steps of 1e-5; the solver's tolerance sets the atol)."""
    metric = sphere_metric()
    z0 = disc_points(2, 0.8, seed=1).requires_grad_()
    z1 = disc_points(2, 0.8, seed=2).requires_grad_()
    lengths = lambda a, b: fastgeo.geodesics(metric, a, b, progress=False).lengths  # noqa: E731
    assert torch.autograd.gradcheck(lengths, (z0, z1), eps=1e-5, atol=1e-4, rtol=1e-3)


def test_gradients_match_finite_differences_of_solved_distances_on_a_trained_vae():
    """mlp12_small in float64 (d = 12: corridors, explored start, subdivided curves): the
    derivative along a random direction against central differences of two more solves."""
    path = DATA / "mlp12_small.safetensors"
    extra = fastgeo.load_extra(path)
    I, J = pair_indices(extra["labels"], 48, 0)
    metric = fastgeo.load_generator(path).to(torch.float64)
    z0 = extra["latents"][I[:2]].double()
    z1 = extra["latents"][J[:2]].double().requires_grad_()
    fastgeo.geodesics(metric, z0, z1, progress=False).lengths.sum().backward()
    g = torch.Generator().manual_seed(0)
    h = 1e-3
    for q in range(2):
        step = torch.randn(12, generator=g, dtype=torch.float64)
        step *= h / step.norm()
        ends = z1.detach()[q : q + 1]
        with torch.no_grad():
            up = fastgeo.geodesics(metric, z0[q : q + 1], ends + step, progress=False).lengths
            down = fastgeo.geodesics(metric, z0[q : q + 1], ends - step, progress=False).lengths
        fd = float(up - down) / 2
        assert abs(float(z1.grad[q] @ step) - fd) < 1e-2 * h * float(z1.grad[q].norm()), q


def test_lengths_carry_no_gradient_unless_an_end_requires_one():
    metric = bumpy_metric()
    g = torch.Generator().manual_seed(3)
    z0 = torch.randn(3, 2, generator=g, dtype=torch.float64)
    z1 = torch.randn(3, 2, generator=g, dtype=torch.float64)
    plain = fastgeo.geodesics(metric, z0, z1, progress=False)
    assert not plain.lengths.requires_grad  # a decoder's weights requiring grad do not make them
    with torch.no_grad():
        off = fastgeo.geodesics(metric, z0.requires_grad_(), z1, progress=False)
    assert not off.lengths.requires_grad
    one = fastgeo.geodesics(metric, z0, z1, progress=False)  # z0 alone requires a gradient
    assert torch.equal(one.lengths.detach(), plain.lengths)
    one.lengths.sum().backward()
    assert z0.grad is not None and bool(torch.isfinite(z0.grad).all()) and z1.grad is None


def test_equal_ends_have_a_zero_gradient():
    metric = bumpy_metric()
    z = torch.tensor([[0.3, -0.2], [0.1, 0.5]], dtype=torch.float64)
    z0, z1 = z.clone().requires_grad_(), torch.cat([z[:1], z[:1] + 1]).requires_grad_()
    res = fastgeo.geodesics(metric, z0, z1, progress=False)
    assert float(res.lengths[0].detach()) == 0
    res.lengths.sum().backward()
    assert torch.equal(z0.grad[0], torch.zeros(2, dtype=torch.float64))
    assert torch.equal(z1.grad[0], torch.zeros(2, dtype=torch.float64))
    assert bool((z0.grad[1] != 0).any())


def test_codes_a_hair_apart_are_differentiated_in_float64():
    """The digits VAE in float32, codes 1e-3 and 1e-4 apart: their segments are mostly the
    decoder's rounding in float32 (derivatives 6 % and 60 % off); the float64 copy's agree."""
    path = DATA / "digits.safetensors"
    metric = fastgeo.load_generator(path)
    z0 = fastgeo.load_extra(path)["latents"][:4]
    g = torch.Generator().manual_seed(0)
    z1 = z0 + torch.tensor([1e-3, 1e-3, 1e-4, 1e-4])[:, None] * torch.randn(4, 2, generator=g)
    a = z1.clone().requires_grad_()
    fastgeo.geodesics(metric, z0, a, progress=False).lengths.sum().backward()
    b = z1.double().requires_grad_()
    fastgeo.geodesics(metric.to(torch.float64), z0.double(), b, progress=False).lengths.sum().backward()
    assert _relative(a.grad, b.grad) < 1e-4


def test_codes_a_hair_apart_without_a_float64_copy_are_warned():
    """The same codes with the mean a plain function (no float64 copy can be made): their float32
    lengths were 1.2-8.7x long and their gradients 60-80 % off, silently."""
    path = DATA / "digits.safetensors"
    module = fastgeo.load_generator(path)
    metric = fastgeo.ExpectedMetric(lambda z: module.mean(z), module.precision)
    z0 = fastgeo.load_extra(path)["latents"][:2]
    z1 = z0 + torch.tensor([[1e-4, 0.0], [0.0, 1e-4]])
    with pytest.warns(RuntimeWarning, match="2 of 2 pairs are so close that float32 rounding") as record:
        fastgeo.geodesics(metric, z0, z1, progress=False)
    assert record[0].filename == __file__  # the caller's line


def test_second_derivatives_raise():
    """create_graph=True gave a constant first derivative (a gradient penalty silently dropped);
    torch.func failed deep inside the solver."""
    metric = bumpy_metric()
    z0 = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    z1 = torch.tensor([[-0.4, 0.6]], dtype=torch.float64, requires_grad=True)
    lengths = fastgeo.geodesics(metric, z0, z1, progress=False).lengths
    with pytest.raises(RuntimeError, match="differentiable once"):
        torch.autograd.grad(lengths.sum(), z1, create_graph=True)
    with pytest.raises(TypeError, match="z1 is a tensor of a torch.func transform"):
        torch.func.grad(lambda b: fastgeo.geodesics(metric, z0, b, progress=False).lengths.sum())(z1.detach())


def test_an_empty_batch_has_a_graph():
    """A training loop's empty last batch: backward through its lengths, zero gradients."""
    metric = bumpy_metric()
    z0 = torch.zeros(0, 2, dtype=torch.float64, requires_grad=True)
    lengths = fastgeo.geodesics(metric, z0, torch.zeros(0, 2, dtype=torch.float64), progress=False).lengths
    assert lengths.requires_grad
    lengths.sum().backward()
    assert z0.grad is not None and z0.grad.shape == (0, 2)


def test_curves_stopped_short_are_warned_when_their_gradient_is_asked():
    """max_iter=1: the envelope theorem's formula at a curve that is not stationary (19-63 % off
    the converged gradient on the digits VAE); the warning names it, and only where a gradient
    is asked."""
    metric = bumpy_metric()
    g = torch.Generator().manual_seed(2)
    z0 = torch.randn(3, 2, generator=g, dtype=torch.float64)
    z1 = torch.randn(3, 2, generator=g, dtype=torch.float64)
    options = dict(max_iter=1, warm_start=False, graph=False, subdivide=False, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", DeprecationWarning)  # torch's own, on its first forward-mode call
        res = fastgeo.geodesics(metric, z0, z1, **options)
    stopped = int((res.status == "max_iter").sum())
    assert stopped > 0
    with pytest.warns(RuntimeWarning, match=f"{stopped} of 3 curves are not converged geodesics") as record:
        fastgeo.geodesics(metric, z0, z1.requires_grad_(), **options)
    assert record[0].filename == __file__


def test_straight_fallbacks_gradients_are_warned():
    """A curve returned as the straight line (its message: not a geodesic) had envelope gradients
    given silently; so had under_resolved and nonfinite ones."""
    metric = bumpy_metric()
    z0 = torch.zeros(1, 2, dtype=torch.float64)
    z1 = torch.full((1, 2), 1e3, dtype=torch.float64, requires_grad=True)
    with pytest.warns(RuntimeWarning, match="not converged geodesics") as record:
        res = fastgeo.geodesics(metric, z0, z1, progress=False, max_iter=5)
    assert res.status[0] != "converged", res.status
    assert any(res.status[0] in str(w.message) for w in record)


def test_a_distance_matrix_of_codes_that_require_a_gradient_says_it_has_none():
    metric = bumpy_metric()
    Z = torch.randn(3, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    with pytest.warns(UserWarning, match="carry no gradient to the codes") as record:
        D = fastgeo.pairwise_distances(metric, Z.requires_grad_(), progress=False)
    assert not D.requires_grad and record[0].filename == __file__


def test_the_paper_methods_gradients_are_warned():
    """method="paper": one quadratic per curve, not stationary in length: its envelope gradients
    were 7-15 % off on the digits VAE, silently (every curve `converged`)."""
    path = DATA / "digits.safetensors"
    metric = fastgeo.load_generator(path)
    Z = fastgeo.load_extra(path)["latents"]
    z1 = Z[[40, 81]].clone().requires_grad_()
    with pytest.warns(RuntimeWarning, match="method='paper'"):
        res = fastgeo.geodesics(metric, Z[[0, 5]], z1, method="paper", progress=False)
    res.lengths.sum().backward()
    assert bool(torch.isfinite(z1.grad).all())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastgeo.geodesics(metric, Z[[0, 5]], Z[[40, 81]].clone().requires_grad_(), progress=False)
