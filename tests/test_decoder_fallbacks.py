"""Decoders the stacked forward mode does not take, and changes after a first call
(``fastgeo.decoders``):

- what is not recognized (training-mode BatchNorm and Dropout, hooks, unknown layers and
  functions, residual connections, untraceable forwards) falls back and is still correct;
- structure changes after a first call are seen; a custom module is traced once per structure;
- a decoder that raises raises to the user (its own error, from a plain call), and one whose
  output is not (P, F) gets a ValueError.
"""

from __future__ import annotations

import pytest
import torch
from conv_decoders import MnistDecoder, Rgb64Decoder, mnist_sequential
from helpers import assert_close_rel, randn
from tangent_checks import F32_TOL, C, H, around, check, exported, init_, reference
from torch import nn
from torch.nn.utils import parametrizations

import fastgeo
from fastgeo.decoders import (
    generic_value_and_tangents,
    jacobian_rows,
    recognize,
    stacked_chain,
    value_and_tangents,
)

F64 = torch.float64

# ----------------------------------------------------------------------------- not recognized


class Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, C * H * H)
        self.conv = nn.Conv2d(C, 2, 3)

    def forward(self, z):
        h = self.fc(z).view(-1, C, H, H)
        if h.sum() > 0:  # control flow on values: tracing fails
            h = torch.tanh(h)
        return self.conv(h).flatten(1)


class MyConv(nn.Conv2d):
    """A subclass: not recognized as a layer, even with the same forward (its ops are read from
    torch.export's graph where the latent dimension is known)."""


def _training_batchnorm():
    return mnist_sequential(3).train()


def _hooked(where):
    model = mnist_sequential(3)
    if where == "child":
        model[3].register_forward_hook(lambda mod, inp, out: 2 * out)
    else:
        model.register_forward_pre_hook(lambda mod, inp: (0.5 * inp[0],))
    return model


def _hooked_custom_child():
    model = init_(MnistDecoder(3))
    model.deconv[1].register_forward_hook(lambda mod, inp, out: out + 0.1)
    return model


NOT_CHAINS = {
    "batchnorm_training": _training_batchnorm,
    "batchnorm_without_running_stats": lambda: around(nn.BatchNorm2d(C, track_running_stats=False)),
    "child_forward_hook": lambda: _hooked("child"),
    "forward_pre_hook": lambda: _hooked("pre"),
    "custom_child_hook": _hooked_custom_child,
    "max_pool": lambda: around(nn.MaxPool2d(2)),
    "untraceable": lambda: init_(Untraceable()),
}


@pytest.mark.parametrize("name", list(NOT_CHAINS))
def test_non_chains_fall_back_and_stay_correct(name):
    """Not recognized; the values and derivatives are those of fn itself (hooks included)."""
    model = NOT_CHAINS[name]()
    z = randn(4, 3, scale=1.5)
    assert recognize.recognize(model) is None or stacked_chain(model, z) is None
    check(model, z, randn(2, 4, 3, seed=3), recognized=False)


# read from the ops torch.export records, where the module's types alone say too little
EXPORTED = {
    "softmax_implicit_dim": lambda: around(nn.Softmax()),  # the dim of 4-D inputs: 1
    "subclass": lambda: around(MyConv(C, 2, 3)),
}


@pytest.mark.parametrize("name", list(EXPORTED))
def test_read_through_torch_export_where_the_latent_dimension_is_known(name):
    model = EXPORTED[name]()
    z = randn(4, 3, scale=1.5)
    assert recognize.recognize(model) is None and recognize.recognize(model, 3) is not None
    check(model, z, randn(2, 4, 3, seed=3))


@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_spectral_norm(dtype):
    """A spectral-normalized transposed convolution in eval mode is a chain (float64 to 1e-10,
    float32 to 1e-5); in training mode its power iteration updates the weight at every call: not
    a chain."""
    model = around(parametrizations.spectral_norm(nn.ConvTranspose2d(C, C, 3))).train().to(dtype)
    with torch.no_grad():  # the power iteration converges to the weight init_ gave it
        for _ in range(30):
            model(randn(2, 3, dtype=dtype))
    assert stacked_chain(model, randn(4, 3, dtype=dtype)) is None
    model.eval()
    check(model, randn(5, 3, scale=1.5, dtype=dtype), rtol=1e-10 if dtype == F64 else F32_TOL)


def test_training_dropout_not_recognized_groupnorm_is():
    """Dropout in training mode is random: refused. GroupNorm computes the same in either mode."""
    assert stacked_chain(around(nn.Dropout(0.5)).train(), randn(4, 3)) is None
    check(around(nn.GroupNorm(2, C)).train(), randn(4, 3))


# ----------------------------------------------------------------------------- changes after a first call


def test_sequential_changes_are_seen():
    """In-place weights, a replaced layer, a changed Upsample mode, train / eval and a hook
    after the first call (which cached the chain) are all seen."""
    model = around(nn.Sequential(nn.ConvTranspose2d(C, 2, 4, 2, 1), nn.Upsample(scale_factor=2)))
    z = randn(4, 3)
    _, jac0 = check(model, z)
    with torch.no_grad():
        model[3][0].weight.mul_(-2)
    _, jac1 = check(model, z)
    assert not torch.allclose(jac0, jac1)
    model[3][0] = init_(nn.ConvTranspose2d(C, 2, 3, 2, 1, output_padding=1), seed=4)
    check(model, z)
    model[3][1].mode = "bilinear"
    check(model, z)
    model[3].append(init_(nn.BatchNorm2d(2)))
    check(model, z)
    model.train()
    assert stacked_chain(model, z) is None
    model.eval()
    model[3][0].register_forward_hook(lambda mod, inp, out: out * 3)
    check(model, z, recognized=False)


def test_custom_module_traced_once_per_structure(monkeypatch):
    """A custom module is traced once; a replaced layer, a changed setting read by forward, a
    changed activation setting and a hook after the first call are seen."""
    traces = []
    trace = recognize._trace
    monkeypatch.setattr(recognize, "_trace", lambda m: traces.append(m) or trace(m))
    model = init_(Rgb64Decoder(4))
    z = randn(3, 4)
    for _ in range(3):
        check(model, z)
    assert len(traces) == 1
    model.fc = init_(nn.Linear(4, 4 * 2 * 16), seed=8)
    check(model, z)
    model.alpha = 0.2  # a plain setting its forward reads
    check(model, z)
    model.norm.eps = 0.5
    check(model, z)
    assert len(traces) == 4
    model.conv.register_forward_hook(lambda mod, inp, out: out + 1)
    check(model, z, recognized=False)


class ReadsConfig(nn.Module):
    """A decoder whose forward reads a config dict and an activation attribute: neither is in
    its structure key."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(3, 8), nn.Linear(8, 6)
        self.cfg = {"scale": 1.0}
        self.act = torch.tanh

    def forward(self, z):
        return self.fc2(self.act(self.fc1(z))) * self.cfg["scale"]


def _jacobian_matches(metric, fn, z):
    """The metric's Jacobian of the mean against torch.func's of ``fn`` (what the decoder is)."""
    got = metric.features_and_jacobian(z)[1][:, : metric.data_dim]
    want = torch.func.vmap(torch.func.jacfwd(lambda x: fn(x[None])[0]))(z)
    assert_close_rel(got, want, 1e-10)


def test_changes_no_structure_key_sees_are_seen_at_the_next_use():
    """What a decoder reads that its structure key does not see (a NumPy scalar a function reads
    by name, a config dict, an activation attribute, a forward replaced on a layer), changed
    between two uses of the library: the next use checks the chain again and reads it afresh (or
    falls back to torch.func), never replays the old one; a new metric of the changed decoder too."""
    np = pytest.importorskip("numpy")
    torch.manual_seed(0)
    prec = fastgeo.RBFPrecision(torch.randn(4, 3, dtype=F64), torch.full((4,), 0.5, dtype=F64),
                                torch.rand(6, 4, dtype=F64), zeta=0.1)  # fmt: skip
    z = torch.randn(5, 3, dtype=F64)
    model = init_(ReadsConfig()).double()
    scale = np.float64(1.0)
    fn = lambda x: model(x) * scale  # noqa: E731
    metric = fastgeo.ExpectedMetric(fn, prec)
    _jacobian_matches(metric, fn, z)
    scale = np.float64(3.0)
    _jacobian_matches(metric, fn, z)
    model.cfg["scale"] = 0.5
    _jacobian_matches(metric, fn, z)
    model.act = torch.sigmoid
    _jacobian_matches(metric, fn, z)
    _jacobian_matches(fastgeo.ExpectedMetric(fn, prec), fn, z)
    seq = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 6)).double()
    metric = fastgeo.ExpectedMetric(seq, prec)
    _jacobian_matches(metric, seq, z)
    seq[1].forward = lambda x: torch.tanh(2 * x)
    _jacobian_matches(metric, seq, z)
    assert "torch.func" in metric.describe()


class ReadsAct(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.f1, self.f2 = nn.Linear(4, 16), nn.Linear(16, 10)
        self.act = torch.relu

    def forward(self, z):
        return self.f2(self.act(self.f1(z)))


def test_kinks_smoothing_and_public_jacobians_follow_such_changes():
    """``piecewise_linear_mean`` and ``smoothed()`` after a ReLU attribute became tanh, and the
    public ``jacobian_rows`` after a config change, are uses of their own: they see the change."""
    torch.manual_seed(0)
    prec = fastgeo.RBFPrecision(torch.randn(5, 4, dtype=F64), torch.full((5,), 0.5, dtype=F64),
                                torch.rand(10, 5, dtype=F64), zeta=0.1)  # fmt: skip
    model = ReadsAct().double()
    metric = fastgeo.ExpectedMetric(model, prec)
    assert metric.piecewise_linear_mean and metric.smoothed() is not None
    model.act = torch.tanh
    assert not metric.piecewise_linear_mean and metric.smoothed() is None
    read = ReadsAct().double()  # steps read (by tracing) without a check, then changed
    assert recognize.piecewise_linear(read, 4)
    read.act = torch.nn.functional.leaky_relu
    metric = fastgeo.ExpectedMetric(read, prec)
    _jacobian_matches(metric, read, torch.randn(5, 4, dtype=F64))
    assert "stacked forward mode" in metric.describe() and metric.piecewise_linear_mean
    z = torch.randn(5, 3, dtype=F64)
    config = init_(ReadsConfig()).double()
    jacobian_rows(config, z)
    config.cfg["scale"] = 3.0
    _, jac = jacobian_rows(config, z)
    want = torch.func.vmap(torch.func.jacfwd(lambda x: config(x[None])[0]))(z)
    assert_close_rel(jac.permute(1, 2, 0), want, 1e-10)


def test_another_threads_call_does_not_make_this_threads_calls_one_use():
    """While another thread is inside a call of the library (blocked in its decoder), this
    thread's calls are still uses of their own: a change between them is seen."""
    import threading

    entered, release = threading.Event(), threading.Event()

    def blocking(x):
        if threading.current_thread() is not threading.main_thread():
            entered.set()
            release.wait(60)
        return torch.tanh(x @ torch.ones(3, 6, dtype=F64))

    torch.manual_seed(0)
    prec = fastgeo.RBFPrecision(torch.randn(4, 3, dtype=F64), torch.full((4,), 0.5, dtype=F64),
                                torch.rand(6, 4, dtype=F64), zeta=0.1)  # fmt: skip
    model = init_(ReadsConfig()).double()
    metric = fastgeo.ExpectedMetric(model, prec)
    other = fastgeo.ExpectedMetric(blocking, prec)
    z = torch.randn(5, 3, dtype=F64)
    entered.clear()  # (the metric's own checks ran in this thread)
    thread = threading.Thread(
        target=lambda: fastgeo.geodesics(other, z[:1], z[1:2], progress=False), daemon=True
    )
    thread.start()
    try:
        assert entered.wait(60)
        _jacobian_matches(metric, model, z)
        model.cfg["scale"] = 3.0
        _jacobian_matches(metric, model, z)
    finally:
        release.set()
        thread.join(60)


def test_another_threads_use_leaves_this_threads_use_going_on():
    """A use begun in another thread (a user's call there) began a new use for every thread:
    this thread's solve checked its chains again in its middle (with other rounding after)."""
    import threading

    from fastgeo.decoders.uses import current_use, new_use, one_use

    with one_use():
        mine = current_use()
        thread = threading.Thread(target=new_use)
        thread.start()
        thread.join(60)
        assert current_use() == mine
    with one_use():
        assert current_use() > mine


def test_a_filter_added_while_another_thread_differentiates_by_torch_func_is_kept():
    """The torch.func path silenced vmap's notes by ``warnings.catch_warnings``, which puts back
    on exit the filter list it saved on entry: a filter the user added in another thread
    meanwhile was lost, and two threads there at once left the library's filter behind."""
    import threading
    import warnings

    from fastgeo.decoders.generic import generic_value_and_tangents

    entered, release = threading.Event(), threading.Event()
    weight = torch.randn(3, 4, generator=torch.Generator().manual_seed(0), dtype=F64)

    def blocking(z):
        if threading.current_thread() is not threading.main_thread() and not entered.is_set():
            entered.set()
            release.wait(60)
        return torch.tanh(z @ weight)

    z = torch.randn(5, 3, dtype=F64)
    with warnings.catch_warnings():
        before = list(warnings.filters)
        thread = threading.Thread(target=generic_value_and_tangents, args=(blocking, z, z[None]), daemon=True)
        thread.start()
        try:
            assert entered.wait(60)
            warnings.filterwarnings("error", message="a rule of the user's")
        finally:
            release.set()
            thread.join(60)
        assert warnings.filters[0][1].pattern == "a rule of the user's"
        assert warnings.filters[1:] == before


class InPlaceResidual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.f = nn.Sequential(nn.ReLU(inplace=True), nn.Linear(12, 12))

    def forward(self, x):
        return x + self.f(x)  # the in-place ReLU rewrites x before the add


def test_a_chain_read_wrong_is_not_described_or_smoothed_as_the_decoder():
    """A chain read from the structure that does not compute what the decoder does (an in-place
    ReLU opening a residual branch) takes torch.func, and ``describe``, ``piecewise_linear_mean``
    and ``smoothed`` say so rather than use the chain read."""
    torch.manual_seed(1)
    dec = nn.Sequential(nn.Linear(4, 12), InPlaceResidual(), nn.Linear(12, 6)).eval()
    prec = fastgeo.RBFPrecision(torch.randn(5, 4), torch.full((5,), 0.5), torch.rand(6, 5), 0.05)
    metric = fastgeo.ExpectedMetric(dec, prec)
    assert recognize.recognize(metric.mean, 4) is not None  # read as a chain ...
    assert stacked_chain(metric.mean, torch.randn(4, 4)) is None  # ... that fails its check
    assert "does not compute what the decoder does" in metric.describe()
    assert not metric.piecewise_linear_mean
    assert metric.smoothed() is None


def test_a_chain_read_wrong_is_caught_on_a_decoder_of_small_outputs():
    """The values check is relative: outputs ~1e-4 in their units (proportions over many genes)
    passed an absolute 1e-4 whatever the chain, and its Jacobian was 41 % off, unsaid."""
    torch.manual_seed(1)
    small = nn.Sequential(nn.Linear(4, 12), InPlaceResidual(), nn.Linear(12, 6))
    dec = nn.Sequential(*small, Scaled(1e-4)).eval()
    prec = fastgeo.RBFPrecision(torch.randn(5, 4), torch.full((5,), 0.5), torch.rand(6, 5), 0.05)
    metric = fastgeo.ExpectedMetric(dec, prec)
    z = torch.randn(4, 4)
    assert stacked_chain(metric.mean, z) is None
    _, jac = metric.features_and_jacobian(z)
    expected = torch.func.vmap(torch.func.jacrev(dec))(z)
    torch.testing.assert_close(jac[:, :6], expected, rtol=1e-4, atol=1e-10)


class Scaled(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


def test_exported_graph_sees_inplace_weight_changes():
    model = exported(mnist_sequential(4), 4)
    z = randn(4, 4)
    _, jac0 = check(model, z)
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if n.endswith("weight")).mul_(1.5)
    _, jac1 = check(model, z)
    assert not torch.allclose(jac0, jac1)


# ----------------------------------------------------------------------------- errors


class Refuses(Exception):
    pass


def test_recognized_decoder_that_raises_raises_once(monkeypatch):
    """An error of the decoder itself on the recognition probe propagates at once (the
    decoder is called once), not swallowed as 'not a chain'."""
    model = mnist_sequential(3)
    calls = []

    def forward(self, x):
        calls.append(x.shape)
        raise Refuses("no convolution today")

    monkeypatch.setattr(nn.ConvTranspose2d, "forward", forward)
    with pytest.raises(Refuses, match="no convolution today"):
        jacobian_rows(model, randn(5, 3))
    assert len(calls) == 1


def test_unrecognized_decoder_that_raises_raises_its_own_error():
    """The torch.func path: the decoder's own error comes from a plain call (not chained to
    vmap's), for ValueError and RuntimeError alike."""
    for error in (ValueError, RuntimeError):
        calls = []

        def mean(z, error=error, calls=calls):
            calls.append(1)
            raise error("bad latent codes")

        with pytest.raises(error, match="bad latent codes") as info:
            value_and_tangents(mean, randn(4, 3), randn(2, 4, 3))
        assert info.value.__context__ is None and len(calls) == 2


def test_not_vmappable_decoder_falls_back_per_direction():
    """A decoder vmap cannot batch (.item() on a value) still gets its derivatives."""

    def mean(z):
        return torch.tanh(z * float(z.detach().abs().sum().item() > -1)).repeat(1, 2)

    z = randn(4, 3)
    value, out = generic_value_and_tangents(mean, z, randn(2, 4, 3))
    value_ref, out_ref = reference(mean, z, randn(2, 4, 3))
    assert_close_rel(value, value_ref, 1e-14)
    assert_close_rel(out, out_ref, 1e-14)


@pytest.mark.parametrize("form", ["sequential", "function", "tuple"])
def test_output_not_p_by_f_is_a_value_error(form):
    """A mean must return (P, F): a (P, 1, 28, 28) image batch, or a tuple, is refused."""
    model = mnist_sequential(3)[:-1]  # no Flatten
    fn = {"sequential": model, "function": lambda z: model(z), "tuple": lambda z: (model(z),)}[form]
    with pytest.raises(ValueError, match=r"\(P, F\)"):
        jacobian_rows(fn, randn(4, 3))


def test_tangents_shape_is_checked():
    with pytest.raises(ValueError, match="tangents"):
        value_and_tangents(mnist_sequential(3), randn(4, 3), randn(2, 4, 2))


@pytest.mark.parametrize("as_module", [True, False])
def test_image_output_decoder_is_flattened(as_module):
    """A decoder returning images (P, 1, 28, 28) (the usual conv decoder, no Flatten at its end):
    RBFPrecision.fit takes images as data and ExpectedMetric flattens the mean, so that lengths,
    geodesics and the stacked forward mode (modules) equal those of the same decoder with an
    explicit Flatten; a mean whose images do not hold D values is refused."""
    torch.manual_seed(0)
    flat = mnist_sequential(5).double()
    images = nn.Sequential(*list(flat)[:-1])  # the same layers without the final Flatten
    mean = images if as_module else (lambda z: images(z))
    z = randn(60, 5)
    with torch.no_grad():
        x = images(z) + 0.05 * randn(60, 1, 28, 28)
    prec = fastgeo.RBFPrecision.fit(z, x, mean, num_centers=6, steps=20, progress=False)
    ref_prec = fastgeo.RBFPrecision.fit(z, x.flatten(1), flat, num_centers=6, steps=20, progress=False)
    assert torch.equal(prec.weights, ref_prec.weights)
    metric, ref = fastgeo.ExpectedMetric(mean, prec), fastgeo.ExpectedMetric(flat, ref_prec)
    assert metric.mean(z[:3]).shape == (3, 784)
    if as_module:
        assert stacked_chain(metric.mean, z[:4]) is not None  # the structure stays visible
    curves = randn(2, 7, 5)
    assert_close_rel(metric.length(curves), ref.length(curves), 1e-12)
    with torch.no_grad():
        a = fastgeo.geodesics(metric, z[:2], z[2:4], max_iter=5, check_resolution=False)
        b = fastgeo.geodesics(ref, z[:2], z[2:4], max_iter=5, check_resolution=False)
    assert_close_rel(a.lengths, b.lengths, 1e-9)
    with pytest.raises(ValueError, match="images"):
        fastgeo.ExpectedMetric(lambda q: images(q)[..., :27], prec)  # 756 values, not 784
    with pytest.raises(ValueError, match="mean must map"):
        fastgeo.RBFPrecision.fit(z, x, lambda q: images(q)[..., :27], num_centers=6, steps=1, progress=False)


class _ClampedInPlace(nn.Module):
    """A "safety clamp" written in place, its result not assigned (``mu.clamp_(...)``)."""

    def __init__(self, how: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc, self.out, self.how = nn.Linear(2, 16), nn.Linear(16, 10), how
        self.act = nn.ReLU(inplace=True)

    def forward(self, z):
        mu = self.out(torch.tanh(self.fc(z)))
        if self.how == "method":
            mu.clamp_(-0.5, 0.5)
        else:
            self.act(mu)
        return mu


@pytest.mark.parametrize("how", ["method", "module"])
def test_an_in_place_write_whose_value_is_unused_is_not_dropped(how):
    """torch.fx took ``mu.clamp_(...)`` (value unused) for pure and removed it: the chain read
    without the clamp matched the decoder at the metric's probes (where the clamp does not act)
    and gave Jacobians 8-58 % off elsewhere, silently."""
    dec = _ClampedInPlace(how).double().eval()
    g = torch.Generator().manual_seed(1)
    prec = fastgeo.RBFPrecision(
        0.1 * torch.randn(8, 2, generator=g, dtype=F64), torch.ones(8, dtype=F64),
        torch.rand(10, 8, generator=g, dtype=F64), 1e-2,
    )  # fmt: skip
    metric = fastgeo.ExpectedMetric(dec, prec)
    z = torch.cat(
        [0.05 * torch.randn(4, 2, generator=g, dtype=F64), 4 * torch.randn(4, 2, generator=g, dtype=F64)]
    )
    with torch.no_grad():
        assert bool((dec(z).abs() >= 0.5).any() if how == "method" else (dec(z) == 0).any())  # it acts
    features, jac = metric.features_and_jacobian(z)
    want = torch.func.vmap(torch.func.jacrev(dec))(z)
    assert_close_rel(jac[:, :10], want, 1e-12)
    assert_close_rel(features[:, :10], dec(z).detach(), 1e-12)
