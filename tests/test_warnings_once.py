"""The library's warnings in the user's program: a warning the user's code gives once stays
given once however often fastgeo runs (the library silences its own steps without making Python
forget what it has shown), and one call gives each of its warnings once."""

import warnings

import torch

import fastgeo


def _metric(d=4, D=16, module=False):
    g = torch.Generator().manual_seed(0)
    w0, w1 = torch.randn(d, 24, generator=g), torch.randn(24, D, generator=g)
    mean = lambda z: torch.tanh(z @ w0) @ w1  # noqa: E731 - a plain callable: the torch.func path
    if module:  # (copied to float64 for codes a hair apart)
        torch.manual_seed(0)
        mean = torch.nn.Sequential(torch.nn.Linear(d, 24), torch.nn.Tanh(), torch.nn.Linear(24, D))
    precision = fastgeo.RBFPrecision(
        torch.randn(6, d, generator=g), torch.ones(6), torch.rand(D, 6, generator=g), 0.1
    )
    return fastgeo.ExpectedMetric(mean, precision)


def users_step():
    warnings.warn("a note of the user's own", UserWarning, stacklevel=1)


def test_a_users_warning_given_once_is_not_given_again_after_geodesics():
    """Each block that silenced the torch.func path's notes added and removed a filter through
    ``warnings.filterwarnings``, whose version bump empties every module's record of warnings
    shown: the user's (and torch's) "default" warnings came again after every call."""
    metric = _metric()
    z = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(3):
            users_step()
            fastgeo.geodesics(metric, z[:1], z[1:2], method="fast", progress=False)
        users_step()
    mine = [w for w in caught if "a note of the user's own" in str(w.message)]
    assert len(mine) == 1


def test_one_call_warns_once_of_latents_it_leaves_unused():
    """A pair a hair apart is solved in float64 and the others by a call of the library's own,
    which gave the warning of unused ``latents`` again, from inside the library."""
    metric = _metric(module=True)
    z = torch.randn(3, 4, generator=torch.Generator().manual_seed(2))
    for z0, z1 in ((z[:1], z[:1] + 1e-5), (z[:2], torch.cat([z[:1] + 1e-5, z[2:]]))):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fastgeo.geodesics(metric, z0, z1, latents=z, graph=False, method="fast", progress=False)
        unused = [w for w in caught if "graph=False ignores them" in str(w.message)]
        assert len(unused) == 1
        assert unused[0].filename == __file__
