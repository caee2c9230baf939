"""Writing generator files as users' decoders and files are: a ``decode`` method with SELU or CELU
in the safe format, the step a safe file cannot store named, ``extra`` tensors the safe format
cannot hold named by key, and an existing file's permissions, a symlink and a long name kept."""

from __future__ import annotations

import os
import stat

import pytest
import torch
from torch import nn

import fastgeo
from fastgeo.io import load_extra, load_generator, save_generator


def _precision(D: int, seed: int = 0) -> fastgeo.RBFPrecision:
    g = torch.Generator().manual_seed(seed)
    return fastgeo.RBFPrecision(
        torch.randn(5, 2, generator=g), torch.full((5,), 0.8), torch.rand(D, 5, generator=g) + 0.1, 1e-2
    )


class VAE(nn.Module):
    def __init__(self, act: nn.Module, scale: float = 1.0) -> None:
        super().__init__()
        self.fc, self.act, self.out, self.scale = nn.Linear(2, 10), act, nn.Linear(10, 6), scale

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = self.out(self.act(self.fc(z)))
        return h if self.scale == 1.0 else h * self.scale


@pytest.mark.parametrize("act", [nn.SELU(), nn.CELU(0.7)], ids=["selu", "celu"])
def test_a_decode_method_with_selu_or_celu_saves_as_data(tmp_path, act):
    """Traced into a chain fastgeo computes, it was refused by the safe format (no layer for the
    recognizer's scaled ELU), pushing users to code files that need trust=True to load."""
    torch.manual_seed(0)
    metric = fastgeo.ExpectedMetric(VAE(act).eval().decode, _precision(6))
    path = save_generator(tmp_path / "g.safetensors", metric)
    points = torch.randn(3, 9, 2)
    with torch.no_grad():
        torch.testing.assert_close(load_generator(path).length(points), metric.length(points))


def test_the_step_a_safe_file_cannot_store_is_named(tmp_path):
    """A scaling by a constant has no standard layer: the error said only that the decoder has no
    structure to store, though fastgeo computes it as a chain."""
    metric = fastgeo.ExpectedMetric(VAE(nn.Tanh(), scale=2.0).eval().decode, _precision(6))
    with pytest.raises(ValueError, match="its traced step Scale has no standard layer"):
        save_generator(tmp_path / "g.safetensors", metric)
    save_generator(tmp_path / "g.pt2", metric, format="export")  # as code it saves


@pytest.mark.parametrize(
    "value, words",
    [
        (torch.zeros(3, dtype=torch.complex64), "complex"),
        (torch.eye(3).to_sparse(), "sparse"),
        (torch.zeros(3, device="meta"), "meta"),
    ],
    ids=["complex", "sparse", "meta"],
)
def test_extra_tensors_the_safe_format_cannot_hold_are_named(tmp_path, value, words):
    """They raised safetensors' own KeyError or RuntimeError, naming neither the key nor a way out."""
    metric = fastgeo.ExpectedMetric(nn.Sequential(nn.Linear(2, 6)), _precision(6))
    with pytest.raises(TypeError, match=rf"extra\['phase'\] is a [\w.]*{words}"):
        save_generator(tmp_path / "g.safetensors", metric, extra={"phase": value})
    assert not list(tmp_path.iterdir())


def test_an_overwritten_file_keeps_its_permissions_its_link_and_long_names_work(tmp_path):
    metric = fastgeo.ExpectedMetric(nn.Sequential(nn.Linear(2, 6)), _precision(6))
    latents = {"latents": torch.randn(4, 2)}
    path = save_generator(tmp_path / "g.safetensors", metric, extra=latents)
    os.chmod(path, 0o600)
    save_generator(path, metric, extra=latents)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # was 0o644: a private file made readable
    link = tmp_path / "latest.safetensors"
    link.symlink_to(path.name)
    save_generator(link, metric, extra={"latents": torch.zeros(4, 2)})
    assert link.is_symlink()  # written through, as open() would
    assert torch.equal(load_extra(path)["latents"], torch.zeros(4, 2))
    long = tmp_path / ("g" * 230 + ".safetensors")  # a legal name; the temporary's was too long
    save_generator(long, metric)
    assert load_generator(long).data_dim == 6
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
