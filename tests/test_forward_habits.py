"""Habits of a decoder's ``forward`` that do not change its function. Conversions on the way: the
codes moved to the decoder's device and cast to its weights' dtype (``z.to(self.device)``,
``z.type_as(self.fc.weight)``, ``z.float()``, ``h.to(z.dtype)``, ``.cpu()``), traced and exported
(where torch.export adds a dtype assertion beside the chain). They are the identity on the
stacked chain, whose values and directional derivatives equal forward-mode AD; a conversion that
changes the values (to float16 and back) fails the check against the decoder and leaves it to
torch.func; one to integers is not a chain. The batch size as ``len(z)`` in a reshape
(``torch.fx`` cannot trace ``len``: it is recorded while a decoder is traced, and put back
afterwards). Also: whole powers of the value, AlphaDropout, a DataParallel wrapper, and
``F.normalize`` over an axis of each point (with its JVP below eps).
"""

from __future__ import annotations

import builtins
import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import randn
from tangent_checks import F32_TOL, check, check_forms
from torch import nn

from fastgeo.decoders import stacked_chain
from fastgeo.decoders.layers import apply
from fastgeo.decoders.recognize import recognize
from fastgeo.decoders.steps import Affine, Normalize, walk

D_LAT = 3


class Moved(nn.Module):
    """Codes moved to the decoder's device and cast to its weights' dtype, a hidden layer cast to
    the codes' dtype and moved to the CPU, the output made contiguous."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(D_LAT, 12), nn.Linear(12, 6)

    @property
    def device(self) -> torch.device:
        return self.fc1.weight.device

    def forward(self, z):
        z = z.to(self.device).type_as(self.fc1.weight)
        h = torch.tanh(self.fc1(z)).to(z.dtype).cpu()
        return self.fc2(h.to(device=self.device, non_blocking=False)).contiguous()


class Floats(nn.Module):
    """A float32 decoder that casts its codes with ``.float()`` and its output with
    ``.to(torch.float32)``."""

    def __init__(self, to: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(D_LAT, 12), nn.Linear(12, 6)
        self.to_dtype = to

    def forward(self, z):
        h = torch.sigmoid(self.fc1(z.float()))
        return self.fc2(h.to(self.to_dtype).float()).to(torch.float32)


def _affines(fn, z) -> int:
    found = recognize(fn)
    return 0 if found is None else sum(isinstance(s, Affine) for s in walk(found[0]))


def test_moves_and_casts_are_the_identity_on_the_chain():
    torch.manual_seed(0)
    check_forms(Moved().double().eval(), D_LAT, lambda fn, z: _affines(fn, z) == 2)


def test_float_casts_of_a_float32_decoder():
    torch.manual_seed(0)
    model = Floats().eval()
    z = randn(8, D_LAT, dtype=torch.float32, seed=4)
    assert _affines(model, z) == 2
    check(model, z, rtol=F32_TOL)
    batch = ({0: torch.export.Dim("P", min=0)},)
    gm = torch.export.export(model, (z[:3],), dynamic_shapes=batch).module()
    assert _affines(gm, z) == 2
    check(gm, z, rtol=F32_TOL)


def test_a_cast_that_changes_the_values_is_left_to_torch_func():
    """float16 on the way rounds the hidden layer: the identity would be another function, so
    the check against the decoder refuses the chain (torch.func gives the decoder's own
    derivatives); an integer cast is not a chain at all."""
    torch.manual_seed(0)
    model = Floats(torch.float16).eval()
    z = randn(8, D_LAT, dtype=torch.float32, seed=5)
    assert recognize(model) is not None and stacked_chain(model, z) is None
    check(model, z, recognized=False, rtol=F32_TOL)

    class ToInt(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(D_LAT, 4)

        def forward(self, z):
            return self.fc(z).to(torch.int64).float()

    assert recognize(ToInt()) is None


@pytest.mark.parametrize("call", ["cuda", "double"])
def test_conversions_that_need_what_is_not_there_raise_as_the_decoder_does(call):
    """A float32 decoder that casts to float64 midway, or moves to a missing GPU: the decoder's
    own error reaches the user (not silently another function)."""

    class Bad(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(D_LAT, 5), nn.Linear(5, 4)

        def forward(self, z):
            return self.fc2(getattr(self.fc1(z), call)())

    if call == "cuda" and torch.cuda.is_available():
        pytest.skip("a GPU is present: .cuda() works")
    # torch's own errors: no CUDA build (an AssertionError), or a matmul of mixed dtypes
    expected = "CUDA|NVIDIA|GPU" if call == "cuda" else "dtype|Double|Float"
    with pytest.raises((RuntimeError, AssertionError), match=expected):
        stacked_chain(Bad().eval(), randn(4, D_LAT, dtype=torch.float32, seed=6))


class ByLen(nn.Module):
    """A conv decoder that reshapes by ``len(z)``: ``h.view(len(z), 4, 3, 3)``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.conv = nn.Linear(D_LAT, 36), nn.ConvTranspose2d(4, 2, 3, stride=2)

    def forward(self, z):
        h = torch.tanh(self.fc(z)).view(len(z), 4, 3, 3)
        return self.conv(h).reshape(len(h), -1)


def test_the_batch_size_by_len():
    torch.manual_seed(0)
    model = ByLen().double().eval()  # (torch.export specializes len(z): not exported)
    z = randn(7, D_LAT, seed=1, scale=1.5)
    assert _affines(model, z) == 1
    check(model, z)
    check(ByLen().eval(), randn(9, D_LAT, dtype=torch.float32, seed=3), rtol=F32_TOL)
    assert "len" not in globals()  # the recording was put back
    head = nn.Linear(D_LAT, 12).double().eval()
    check(lambda z: torch.sigmoid(head(z)).view(len(z), 3, 4).flatten(1), randn(5, D_LAT, seed=7))
    assert "len" not in globals()


def test_a_len_of_the_decoder_module_s_own_is_left_alone(monkeypatch):
    """A module whose globals define ``len`` keeps it: not recorded, so not traced (torch.func)."""
    mine = []

    def own_len(x):
        mine.append(x)
        return builtins.len(x)

    monkeypatch.setitem(globals(), "len", own_len)
    model = ByLen().double().eval()
    z = randn(5, D_LAT, seed=8)
    assert globals()["len"] is own_len
    check(model, z, recognized=False)
    assert globals()["len"] is own_len and mine


class Conditional(nn.Module):
    """A decoder whose ``forward`` takes an optional condition and a keyword with a default, called
    with the codes alone (``c=None``, ``scale=2.0``)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(D_LAT, 12), nn.Linear(12, 6)
        self.cond = nn.Linear(2, 12)

    def forward(self, z, c=None, *, scale: float = 2.0):
        h = self.fc1(z)
        if c is not None:
            h = h + self.cond(c)
        return self.fc2(torch.tanh(h)) * scale


def test_arguments_with_defaults_are_traced_at_their_defaults():
    torch.manual_seed(0)
    check_forms(Conditional().double().eval(), D_LAT, lambda fn, z: _affines(fn, z) == 2)


class Powers(nn.Module):
    """Squares and cubes of the value along the chain: ``h * h``, ``h.mul(h)``, ``torch.square``,
    ``x ** 2``, ``torch.pow(x, 3)``, ``x.pow(2)`` (a squared ReLU among them)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(D_LAT, 10), nn.Linear(10, 10), nn.Linear(10, 6)

    def forward(self, z):
        h = torch.tanh(self.fc1(z))
        h = torch.square(h * h).mul(0.5)
        h = torch.pow(torch.tanh(self.fc2(h)), 3)
        h = torch.relu(h.mul(h) - 0.1) ** 2
        return torch.sigmoid(self.fc3(h).pow(2))


def test_powers_of_the_value():
    torch.manual_seed(0)
    check_forms(Powers().double().eval(), D_LAT, lambda fn, z: _affines(fn, z) == 3)


class Root(nn.Module):
    """A square root (``x ** 0.5``) is no whole power: left to torch.func."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(D_LAT, 10), nn.Linear(10, 6)

    def forward(self, z):
        return self.fc2(torch.sigmoid(self.fc1(z)) ** 0.5)


def test_a_fractional_power_is_not_a_chain():
    assert recognize(Root().double().eval()) is None


def test_alpha_dropout_is_the_identity_in_eval_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(D_LAT, 12), nn.SELU(), nn.AlphaDropout(0.1), nn.Linear(12, 6)).double()
    assert recognize(model.train()) is None
    check_forms(model.eval(), D_LAT, lambda fn, z: _affines(fn, z) == 2)


@pytest.mark.skipif(
    torch.cuda.is_available(),
    reason="with a GPU, DataParallel scatters to the GPUs and refuses a CPU module: this test is "
    "the CPU-only case",
)
def test_a_data_parallel_wrapper_is_its_module():
    """``nn.DataParallel(decoder)`` (on the CPU it calls the module it holds) is read as that
    module; with a hook of its own it is not a chain."""
    torch.manual_seed(0)
    inner = nn.Sequential(nn.Linear(D_LAT, 12), nn.Tanh(), nn.Linear(12, 6)).double().eval()
    wrapped = nn.DataParallel(inner)
    assert _affines(wrapped, None) == 2
    check(wrapped, randn(7, D_LAT, seed=1))
    wrapped.register_forward_hook(lambda mod, inp, out: 2 * out)
    assert recognize(wrapped) is None
    check(wrapped, randn(7, D_LAT, seed=1), recognized=False)


class Normalized(nn.Module):
    """Outputs of unit L2 norm (``F.normalize`` over the features; over the channels of an image)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(D_LAT, 12), nn.Linear(12, 2 * 3 * 3)

    def forward(self, z):
        h = F.normalize(torch.tanh(self.fc1(z)), dim=-1)
        return F.normalize(self.fc2(h).view(-1, 2, 3, 3), dim=1, eps=1e-6).flatten(1)


def test_l2_normalization_over_an_axis_of_the_point():
    torch.manual_seed(0)
    model = Normalized().double().eval()
    found = recognize(model)
    assert found is not None and sum(isinstance(s, Normalize) for s in walk(found[0])) == 2
    check(model, randn(7, D_LAT, seed=1, scale=1.5))
    check(copy.deepcopy(model).float(), randn(9, D_LAT, dtype=torch.float32, seed=3), rtol=F32_TOL)


def test_l2_normalization_below_eps_is_a_scaling():
    """Where a point's norm is below eps, F.normalize divides by eps: so do the tangents."""
    x = randn(5, 4, seed=2)
    x[1] = 0.0
    x[3] *= 1e-9
    tangents = randn(3, 5, 4, seed=3)
    out = apply(Normalize(-1, 1e-6), torch.cat([x[None], tangents]))
    for k in range(3):
        value, jvp = torch.func.jvp(lambda v: F.normalize(v, dim=-1, eps=1e-6), (x,), (tangents[k],))
        torch.testing.assert_close(out[0], value, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out[k + 1], jvp, rtol=1e-10, atol=1e-10)
