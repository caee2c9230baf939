"""A user's decoder mean is checked when the metric is made: in training mode behind a function,
random, dependent on its batch, detached from autograd, of another dtype than the precision, or
raising: each a clear error (or, for a derivative that disagrees with central differences, a
warning); well-formed decoders of every kind pass without a warning."""

import sys
import warnings

import pytest
import torch
from analytic import constant_precision

import fastgeo

f64 = torch.float64


def mlp(act=torch.nn.Tanh, dtype=f64, d=2, D=3, extra=()):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(d, 8), *extra, act(), torch.nn.Linear(8, D)).to(dtype).eval()


@pytest.mark.parametrize("wrap", ["lambda", "bound method", "closure"])
def test_training_mode_behind_a_function_is_refused(wrap):
    """Dropout behind a function makes its output random: refused (the modules behind a function
    are not searched for training flags: a whole VAE may hold them in its encoder alone)."""
    net = mlp(extra=(torch.nn.Dropout(0.3),)).train()
    fn = {
        "lambda": lambda z: net(z),
        "bound method": net.forward,
        "closure": (lambda module: lambda z: 2.0 * module(z))(net),
    }[wrap]
    with pytest.raises(ValueError, match=r"mean is random.*\.eval\(\)"):
        fastgeo.ExpectedMetric(fn, constant_precision(2, 3))
    net.eval()
    fastgeo.ExpectedMetric(fn, constant_precision(2, 3))


@pytest.mark.parametrize("entry", ["pairwise_distances", "nearest_neighbors", "LatentGraph", "geodesics"])
def test_a_decoder_switched_to_training_mode_is_refused_before_it_runs(entry):
    """pairwise_distances and nearest_neighbors refused it only after decoding every code (the
    batch norm's running statistics changed, dropout drawn from the user's RNG); LatentGraph built
    its graph from the random decoder without a word."""
    net = mlp(extra=(torch.nn.BatchNorm1d(8), torch.nn.Dropout(0.2)))
    metric = fastgeo.ExpectedMetric(net, constant_precision(2, 3))
    net.train()
    Z = torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=f64)
    call = {
        "pairwise_distances": lambda: fastgeo.pairwise_distances(metric, Z, progress=False),
        "nearest_neighbors": lambda: fastgeo.nearest_neighbors(metric, Z, k=2, progress=False),
        "LatentGraph": lambda: fastgeo.LatentGraph(metric),
        "geodesics": lambda: fastgeo.geodesics(metric, Z[:2], Z[2:], progress=False),
    }[entry]
    stats, rng = net[1].running_mean.clone(), torch.get_rng_state()
    with pytest.raises(ValueError, match="in training mode"):
        call()
    assert torch.equal(net[1].running_mean, stats) and torch.equal(torch.get_rng_state(), rng)


def test_a_method_of_a_vae_whose_encoder_alone_has_dropout_is_accepted():
    class VAE(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Dropout(0.5))
            self.decoder = mlp()

        def decode(self, z):
            return self.decoder(z)

    vae = VAE().double().train()
    vae.decoder.eval()
    fastgeo.ExpectedMetric(vae.decode, constant_precision(2, 3))
    fastgeo.ExpectedMetric(lambda z: vae.decoder(z), constant_precision(2, 3))


def test_a_random_mean_is_refused():
    net = mlp()
    with pytest.raises(ValueError, match="mean is random"):
        fastgeo.ExpectedMetric(lambda z: net(z) + 0.1 * torch.randn_like(net(z)), constant_precision(2, 3))


def test_a_mean_that_depends_on_its_batch_is_refused():
    net = mlp()
    with pytest.raises(ValueError, match="mean depends on its batch"):
        fastgeo.ExpectedMetric(lambda z: net(z - z.mean(0)), constant_precision(2, 3))
    # Normalized by the batch's spread: NaN for one code alone (std of one row), which compared as
    # "no difference" before
    with pytest.raises(ValueError, match="decoded alone gives values that are not finite"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch: std() of one row
            fastgeo.ExpectedMetric(
                lambda z: net((z - z.mean(0)) / (z.std(0) + 1e-3)), constant_precision(2, 3)
            )


def test_a_mean_that_branches_on_its_batch_size_is_refused():
    """A mean that computes otherwise for more than three codes passed the checks on one and three
    codes; the solver decodes hundreds at once."""
    net = mlp()
    with pytest.raises(
        ValueError, match="mean depends on its batch: a code decoded alone, beside 2 others and beside"
    ):
        fastgeo.ExpectedMetric(lambda z: net(z) * (2.0 if z.shape[0] > 3 else 1.0), constant_precision(2, 3))


def test_a_detached_mean_is_refused():
    net = mlp()  # parameters require grad: the output does too, but not through the codes
    with pytest.raises(ValueError, match="mean passes no gradient to its input"):
        fastgeo.ExpectedMetric(lambda z: net(z.detach()), constant_precision(2, 3))
    with pytest.raises(ValueError, match="no gradient"):
        fastgeo.ExpectedMetric(lambda z: torch.from_numpy(net(z).detach().numpy()), constant_precision(2, 3))


def test_a_partly_detached_mean_warns():
    net, other = mlp(), mlp(act=torch.nn.Sigmoid)
    with pytest.warns(UserWarning, match="disagrees with central differences"):
        fastgeo.ExpectedMetric(lambda z: 0.2 * net(z) + other(z.detach()), constant_precision(2, 3))


def test_a_mean_whose_gradient_is_nan_where_its_values_are_finite_warns():
    """``torch.where(h > 0, torch.sqrt(h), 0)``: finite values and forward derivatives, NaN
    reverse-mode gradients (0 * inf from the branch not taken): named, with the safe form."""
    torch.manual_seed(0)
    first, last = torch.nn.Linear(3, 16), torch.nn.Linear(16, 20)

    def mean(z):
        h = first(z)
        return last(torch.where(h > 0, torch.sqrt(h), torch.zeros_like(h)))

    prec = fastgeo.RBFPrecision(torch.randn(5, 3), torch.full((5,), 0.5), torch.rand(20, 5), 0.05)
    with pytest.warns(UserWarning, match=r"gradient by autograd is not finite.*h\.clamp\(min=0\)"):
        fastgeo.ExpectedMetric(mean, prec)
    with warnings.catch_warnings(record=True) as seen:  # outputs ~1e20 in float32: no false alarm
        warnings.simplefilter("always")
        fastgeo.ExpectedMetric(lambda z: 1e20 * torch.tanh(last(torch.tanh(first(z)))), prec)
    assert not [w for w in seen if "autograd" in str(w.message)]


def test_a_mean_with_nan_gradients_is_solved_by_forward_mode():
    """At d = 8 the default refinement takes reverse-mode gradients (lagged): NaN for such a mean
    (every curve ended nonfinite); the metric knows it when made, and the solver keeps to the
    forward mode (linearize='always'), converging."""
    torch.manual_seed(0)
    first, last = torch.nn.Linear(8, 16), torch.nn.Linear(16, 20)

    def mean(z):
        h = first(z)
        return last(torch.where(h > 0, torch.sqrt(h), torch.zeros_like(h)))

    g = torch.Generator().manual_seed(1)
    prec = fastgeo.RBFPrecision(
        (torch.rand(20, 8, generator=g) * 2 - 1) * 2, torch.ones(20), torch.ones(20, 20), 1e-3
    )
    with pytest.warns(UserWarning, match="forward-mode derivatives"):
        metric = fastgeo.ExpectedMetric(mean, prec)
    z0, z1 = torch.randn(2, 8, generator=g), torch.randn(2, 8, generator=g)
    res = fastgeo.geodesics(metric, z0, z1, progress=False)
    assert res.status.tolist() == ["converged", "converged"]


def test_a_bfloat16_mean_warns_of_its_rounding():
    """A decoder computing in bfloat16 behind a float32 interface: central differences are blurred
    by its rounding; the warning names that, and the detached-part question only after it."""
    torch.manual_seed(0)
    dec = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.Tanh(), torch.nn.Linear(32, 20)).to(
        torch.bfloat16
    )
    prec = fastgeo.RBFPrecision(torch.randn(5, 3), torch.full((5,), 0.5), torch.rand(20, 5), 0.05)
    with pytest.warns(
        UserWarning, match=r"compute in torch.bfloat16, whose rounding alone.*if not that: is a part"
    ):
        fastgeo.ExpectedMetric(lambda z: dec(z.to(torch.bfloat16)).float(), prec)


@pytest.mark.parametrize("wrap", [False, True])
def test_a_mean_of_another_dtype_is_named(wrap):
    net = mlp(dtype=torch.float32)
    mean = (lambda z: net(z)) if wrap else net
    with pytest.raises(TypeError, match=r"mean has torch.float32 parameters but the codes .*float64"):
        fastgeo.ExpectedMetric(mean, constant_precision(2, 3))
    # a decoder that converts the codes itself is the user's choice: accepted
    fastgeo.ExpectedMetric(lambda z: net(z.float()).double(), constant_precision(2, 3))


def test_rbf_fit_names_a_dtype_mismatch():
    net = mlp()
    z = torch.randn(40, 2)
    with pytest.raises(TypeError, match="mean has torch.float64 parameters"):
        fastgeo.RBFPrecision.fit(z, torch.randn(40, 3), net, num_centers=4, steps=2, progress=False)


def test_an_exception_of_the_mean_reaches_the_user_unchanged():
    class Refuses(Exception):
        pass

    def mean(z):
        raise Refuses("my decoder says no")

    with pytest.raises(Refuses, match="my decoder says no") as info:
        fastgeo.ExpectedMetric(mean, constant_precision(2, 3))
    if sys.version_info >= (3, 11):  # exception notes: where fastgeo called the mean
        notes = getattr(info.value, "__notes__", None)
        assert notes and "shape (1, 2)" in notes[0], notes


def conv_mean(shape, channels):
    """Codes unflattened to ``shape`` (C, H, W), then a 3x3 convolution of ``channels`` inputs."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(channels, 1, 3, padding=1)
    return torch.nn.Sequential(torch.nn.Unflatten(1, shape), conv, torch.nn.Flatten()).double().eval()


WIDTH_12 = r"mean expects inputs of width 12 \(its first layer is Linear\(in_features=12, "
CHANNELS_12 = r"mean expects inputs of 12 channels \(its first layer is Conv2d\(12, "


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: mlp(d=12), WIDTH_12 + r".*\) but the codes \(the precision's\) have latent dimension 8$"),
        (lambda: conv_mean((12, 1, 1), 12), CHANNELS_12 + r".*\) but the codes .* have latent dimension 8$"),
    ],
)
def test_a_mean_of_another_latent_width_is_named(make, match):
    """A decoder whose first layer takes another width than the codes: a ValueError naming both
    widths, not torch's error about shapes that cannot be multiplied."""
    with pytest.raises(ValueError, match=match):
        fastgeo.ExpectedMetric(make(), constant_precision(8, 3))


def test_rbf_fit_names_a_mean_of_another_latent_width():
    z, X = torch.randn(40, 8, dtype=f64), torch.randn(40, 3, dtype=f64)
    with pytest.raises(ValueError, match=WIDTH_12 + r".*\) but the latents have latent dimension 8$"):
        fastgeo.RBFPrecision.fit(z, X, mlp(d=12), num_centers=4, steps=2, progress=False)


def behind_a_function(net):
    return lambda z: net(z)


@pytest.mark.parametrize(
    "make,error",
    [
        # the modules behind a function are not searched
        (lambda: behind_a_function(mlp(d=12)), "cannot be multiplied"),
        # 8 values could be 2 x 4 channels: not guessed at
        (lambda: conv_mean((2, 2, 2), 4), "to have 4 channels"),
    ],
)
def test_other_errors_of_a_mean_are_kept(make, error):
    """Where the codes' width may be right (a function around a module, a first convolution whose
    channels divide the width), the mean's own error reaches the user."""
    with pytest.raises(RuntimeError, match=error):
        fastgeo.ExpectedMetric(make(), constant_precision(8, 4))


@pytest.mark.parametrize("dtype", [torch.float32, f64])
@pytest.mark.parametrize("act", [torch.nn.Tanh, torch.nn.ReLU, torch.nn.ELU, torch.nn.Softplus])
def test_well_formed_means_pass_silently(dtype, act):
    """MLPs (smooth and piecewise linear), a conv decoder, a plain function, and the metric made
    under torch.no_grad() and torch.inference_mode(): no error, no warning."""
    d, D = 4, 64
    torch.manual_seed(1)
    conv = torch.nn.Sequential(
        torch.nn.Linear(d, 16 * 4 * 4), act(), torch.nn.Unflatten(1, (16, 4, 4)),
        torch.nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1), act(), torch.nn.Conv2d(8, 1, 3, padding=1),
    ).to(dtype).eval()  # fmt: skip
    net = mlp(act, dtype, d=d, D=D)
    prec = constant_precision(d, D, dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for mean in (net, conv, lambda z: torch.sin(z).repeat(1, D // d)):
            fastgeo.ExpectedMetric(mean, prec)
            with torch.no_grad():
                fastgeo.ExpectedMetric(mean, prec)
            with torch.inference_mode():
                fastgeo.ExpectedMetric(mean, prec)


def test_describe_says_how_the_mean_is_differentiated():
    """``metric.describe()`` names the path a mean takes: the stacked forward mode for a chain
    (with its steps, and the smoothing of piecewise-linear ones; a function around it too),
    torch.func for a function that is not a chain of known layers."""
    prec = constant_precision(2, 3)
    smooth = fastgeo.ExpectedMetric(mlp(torch.nn.Tanh), prec).describe()
    assert "d = 2, data D = 3, torch.float64" in smooth
    assert "Affine -> tanh -> Affine" in smooth and "stacked forward mode" in smooth
    assert "piecewise-linear" not in smooth
    assert "piecewise-linear" in fastgeo.ExpectedMetric(mlp(torch.nn.ReLU), prec).describe()
    net = mlp()
    assert "stacked forward mode" in fastgeo.ExpectedMetric(lambda z: net(z), prec).describe()
    assert "torch.func" in fastgeo.ExpectedMetric(lambda z: torch.cumsum(net(z), 1), prec).describe()


def test_rbf_fit_checks_the_decoder_and_its_options():
    """RBFPrecision.fit refuses a decoder in training mode, images of another shape than the
    decoder's, and a misspelt option (with the spelling meant)."""
    torch.manual_seed(0)
    z, X = torch.randn(40, 2, dtype=f64), torch.randn(40, 16, dtype=f64)
    with pytest.raises(ValueError, match="training mode"):
        fastgeo.RBFPrecision.fit(z, X, mlp(D=16, extra=(torch.nn.Dropout(0.2),)).train(), num_centers=4)
    images = torch.nn.Sequential(mlp(D=16), torch.nn.Unflatten(1, (1, 4, 4)))
    fastgeo.RBFPrecision.fit(z, X.view(40, 1, 4, 4), images, num_centers=4, steps=2, progress=False)
    with pytest.raises(ValueError, match="mean must map"):
        fastgeo.RBFPrecision.fit(z, X.view(40, 1, 2, 8), images, num_centers=4, steps=2, progress=False)
    with pytest.raises(TypeError, match=r"unknown option 'zetta' \(did you mean 'zeta'\?\)"):
        fastgeo.RBFPrecision.fit(z, X, mlp(D=16), zetta=0.1)


def test_pairwise_distances_suggests_the_option_meant():
    metric = fastgeo.ExpectedMetric(mlp(), constant_precision(2, 3))
    with pytest.raises(TypeError, match=r"did you mean 'worker' -> 'workers'"):
        fastgeo.pairwise_distances(metric, torch.randn(3, 2, dtype=f64), worker=1)


@pytest.mark.parametrize("wrap", ["module", "bound method", "function", "twice"])
def test_a_compiled_mean_is_used_uncompiled(wrap):
    """``torch.compile`` does not change what a decoder computes; under ``torch.func`` a compiled
    module recompiles for every new shape. The metric keeps the wrapped module or function (so it
    is recognized as a chain) and never calls the compiled wrapper."""
    net = mlp(act=torch.nn.ELU)
    original = {"module": net, "bound method": net.forward, "function": lambda z: net(z), "twice": net}[wrap]
    compiled = torch.compile(original)
    if wrap == "twice":
        compiled = torch.compile(compiled)
    metric = fastgeo.ExpectedMetric(compiled, constant_precision(2, 3))
    # (a bound method is made anew at every access; compiled twice, the module's forward is kept)
    assert metric.mean == (net.forward if wrap == "twice" else original)
    assert "stacked forward mode" in metric.describe()
    plain = fastgeo.ExpectedMetric(original, constant_precision(2, 3))
    z = torch.randn(2, 5, 2, dtype=f64)
    torch.testing.assert_close(metric.length(z), plain.length(z), rtol=0, atol=0)


def test_a_compiled_mean_with_hooks_of_its_own_is_refused():
    """Hooks on the compiled wrapper would be lost with the module used uncompiled: refused, with
    where to register them."""
    compiled = torch.compile(mlp())
    compiled.register_forward_hook(lambda mod, inp, out: 3 * out)
    with pytest.raises(ValueError, match=r"forward hooks on the compiled wrapper.*_orig_mod"):
        fastgeo.ExpectedMetric(compiled, constant_precision(2, 3))


def test_repr_names_the_sizes():
    prec = fastgeo.RBFPrecision(torch.zeros(3, 2), torch.ones(3), torch.ones(5, 3), torch.ones(5))
    metric = fastgeo.ExpectedMetric(torch.nn.Sequential(torch.nn.Linear(2, 5), torch.nn.Tanh()), prec)
    assert repr(metric) == (
        "ExpectedMetric(latent_dim=2, data_dim=5, dtype=torch.float32, device=cpu, rbf_centers=3; "
        "describe() says how the mean is differentiated)"
    )
