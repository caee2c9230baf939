"""The image VAEs of fastgeo.demo.vaes: decoder structure, shapes, deterministic training."""

import pytest
import torch
from torch import nn

from fastgeo.demo import vae_training, vaes

ALLOWED = (
    nn.Linear, nn.Unflatten, nn.ConvTranspose2d, nn.Conv2d, nn.Flatten, nn.BatchNorm2d, nn.GroupNorm,
    nn.Upsample, nn.ELU, nn.Softplus, nn.SiLU, nn.Tanh, nn.GELU, nn.Sigmoid,
)  # fmt: skip


def _resize_conv_vae(d: int) -> vaes.ImageVAE:
    return vaes.conv_vae28(d, (8, 8, 8), hidden=16, norm="group", activation="gelu", upsample="bilinear")


@pytest.mark.parametrize(
    ("build", "d", "D"),
    [
        (lambda: vaes.mlp_vae(784, 6, (32, 16)), 6, 784),
        (lambda: vaes.conv_vae28(5, (8, 4, 4), hidden=16), 5, 784),
        (lambda: vaes.conv_vae28(3, (8, 8, 8), hidden=16, norm="group", activation="softplus"), 3, 784),
        (lambda: vaes.conv_vae64(4, (8, 8, 4, 4, 4), hidden=16, norm="batch"), 4, 12288),
        (lambda: _resize_conv_vae(4), 4, 784),
    ],
    ids=["mlp", "conv28", "conv28-group", "conv64-batch", "conv28-upsample"],
)
def test_decoder_is_flat_sequential(build, d, D):
    torch.manual_seed(0)
    vae = build().eval()
    dec = vae.decoder_mean
    assert isinstance(dec, nn.Sequential) and isinstance(dec[-1], (nn.Flatten, nn.Sigmoid))
    assert all(isinstance(m, ALLOWED) for m in dec)
    with torch.no_grad():
        x = dec(torch.randn(3, d))
        m, logv = vae.encode(torch.rand(3, D))
    assert x.shape == (3, D) and 0 <= x.min() and x.max() <= 1
    assert m.shape == logv.shape == (3, d)


def test_training_is_deterministic_and_improves():
    X = torch.rand(64, 784) ** 4

    def run():
        torch.manual_seed(1)
        vae = vaes.conv_vae28(2, (4, 4, 4), hidden=8)
        log = vae_training.train_vae(vae, X, epochs=3, batch_size=16, seed=1, progress=False)
        return vae, log

    (v1, l1), (v2, l2) = run(), run()
    assert all(torch.equal(a, b) for a, b in zip(v1.parameters(), v2.parameters(), strict=True))
    assert l1.steps == 12 and len(l1.epoch_loss) == 3 and l1.epoch_loss == l2.epoch_loss
    assert l1.epoch_loss[-1] < l1.epoch_loss[0]
    assert not v1.training and not any(p.requires_grad for p in v1.parameters())
    s = vae_training.evaluate_vae(v1, X)
    assert s["latents"].shape == (64, 2) and s["kl_per_dim"].shape == (2,)
    assert 0 <= s["active_units"] <= 2 and s["mse"] > 0


def test_argument_errors():
    with pytest.raises(ValueError, match="latent_dim"):
        vaes.mlp_vae(784, 0)
    with pytest.raises(ValueError, match="output"):
        vaes.mlp_vae(784, 2, output="relu")
    with pytest.raises(ValueError, match="channels"):
        vaes.conv_vae28(4, (8, 8))
    with pytest.raises(ValueError, match="activation"):
        vaes.conv_vae64(4, activation="swish")
    with pytest.raises(ValueError, match="norm"):
        vaes.conv_vae28(4, norm="layer")
    with pytest.raises(ValueError, match="upsample"):
        vaes.conv_vae28(4, upsample="area")
    vae = vaes.mlp_vae(784, 2, (8,))
    with pytest.raises(ValueError, match="x must have shape"):
        vae_training.train_vae(vae, torch.rand(4, 10), progress=False)
    with pytest.raises(ValueError, match="freeze_var"):
        vae_training.train_vae(vae, torch.rand(4, 784), freeze_var=2.0, progress=False)
    for shape in [(1, -28, -28), (784,), (1, 28, 28.0), (True, 28, 28)]:
        with pytest.raises(ValueError, match="image_shape"):
            vaes.mlp_vae(784, 2, (8,), image_shape=shape)


def test_channels_may_be_any_iterable():
    a = vaes.conv_vae28(4, channels=iter((4, 4, 4)))
    b = vaes.conv_vae28(4, channels=(4, 4, 4))
    assert [tuple(p.shape) for p in a.parameters()] == [tuple(p.shape) for p in b.parameters()]


def test_linear_output():
    """``output="linear"``: the decoder ends with its Linear layer (a Gaussian decoder's mean),
    values outside [0, 1]; any D, its image shape (1, 1, D) where D is not a square."""
    torch.manual_seed(0)
    vae = vaes.mlp_vae(50, 3, (16,), output="linear").eval()
    assert isinstance(vae.decoder_mean[-1], nn.Linear) and vae.image_shape == (1, 1, 50)
    with torch.no_grad():
        x = vae.decoder_mean(5 * torch.randn(64, 3))
    assert x.shape == (64, 50) and (x.min() < 0 or x.max() > 1)
