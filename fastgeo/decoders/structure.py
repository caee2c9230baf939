"""A decoder's structure as data: an ``nn.Sequential`` of standard layers described by a JSON
list of layer specs (type and constructor arguments), and rebuilt from it with nothing but the
constructors of a fixed table. This is what a safe generator file stores instead of code.

    [{"type": "Linear", "in_features": 2, "out_features": 64, "bias": true},
     {"type": "ELU", "alpha": 1.0}, ...]

Parameters and buffers travel separately (``state_dict`` of the rebuilt module, keys ``"0.weight"``
...). Nested ``nn.Sequential`` are flattened; a layer of a type outside the table, a subclass of
one, or a module with hooks has no structure (None): such decoders need code.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .flat import FlatMean
from .layers_of_steps import sequential_from_steps
from .recognize import graph_steps, recognize

MAX_LAYERS = 10_000  # a file describing more is no decoder (each layer costs time to build and run)
_NORM = ("num_features", "eps", "momentum", "affine", "track_running_stats")
# type name -> (constructor, the constructor arguments read back as attributes of the module)
LAYERS: dict[str, tuple[type[nn.Module], tuple[str, ...]]] = {
    "Linear": (nn.Linear, ("in_features", "out_features", "bias")),
    "Conv2d": (nn.Conv2d, ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
                           "groups", "bias", "padding_mode")),
    "ConvTranspose2d": (nn.ConvTranspose2d, ("in_channels", "out_channels", "kernel_size", "stride",
                                             "padding", "output_padding", "groups", "bias", "dilation",
                                             "padding_mode")),
    "Upsample": (nn.Upsample, ("size", "scale_factor", "mode", "align_corners", "recompute_scale_factor")),
    "BatchNorm1d": (nn.BatchNorm1d, ("num_features", "eps", "momentum", "affine", "track_running_stats")),
    "BatchNorm2d": (nn.BatchNorm2d, ("num_features", "eps", "momentum", "affine", "track_running_stats")),
    "GroupNorm": (nn.GroupNorm, ("num_groups", "num_channels", "eps", "affine")),
    "LayerNorm": (nn.LayerNorm, ("normalized_shape", "eps", "elementwise_affine", "bias")),
    "Flatten": (nn.Flatten, ("start_dim", "end_dim")),
    "Unflatten": (nn.Unflatten, ("dim", "unflattened_size")),
    "Identity": (nn.Identity, ()),
    "ELU": (nn.ELU, ("alpha",)),
    "ReLU": (nn.ReLU, ()),
    "LeakyReLU": (nn.LeakyReLU, ("negative_slope",)),
    "Tanh": (nn.Tanh, ()),
    "Sigmoid": (nn.Sigmoid, ()),
    "Softplus": (nn.Softplus, ("beta", "threshold")),
    "SiLU": (nn.SiLU, ()),
    "GELU": (nn.GELU, ("approximate",)),
    "Hardtanh": (nn.Hardtanh, ("min_val", "max_val")),
    "ReLU6": (nn.ReLU6, ()),
    "Conv1d": (nn.Conv1d, ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
                           "groups", "bias", "padding_mode")),
    "ConvTranspose1d": (nn.ConvTranspose1d, ("in_channels", "out_channels", "kernel_size", "stride",
                                             "padding", "output_padding", "groups", "bias", "dilation",
                                             "padding_mode")),
    "InstanceNorm1d": (nn.InstanceNorm1d, _NORM),
    "InstanceNorm2d": (nn.InstanceNorm2d, _NORM),
    "ZeroPad2d": (nn.ZeroPad2d, ("padding",)),
    "ReflectionPad2d": (nn.ReflectionPad2d, ("padding",)),
    "ReplicationPad2d": (nn.ReplicationPad2d, ("padding",)),
    "PixelShuffle": (nn.PixelShuffle, ("upscale_factor",)),
    "PixelUnshuffle": (nn.PixelUnshuffle, ("downscale_factor",)),
    "AvgPool1d": (nn.AvgPool1d, ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad")),
    "AvgPool2d": (nn.AvgPool2d, ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                                 "divisor_override")),
    "Dropout": (nn.Dropout, ("p",)),
    "Dropout1d": (nn.Dropout1d, ("p",)),
    "Dropout2d": (nn.Dropout2d, ("p",)),
    "PReLU": (nn.PReLU, ("num_parameters",)),
    "SELU": (nn.SELU, ()),
    "CELU": (nn.CELU, ("alpha",)),
    "Mish": (nn.Mish, ()),
    "Hardswish": (nn.Hardswish, ()),
    "Hardsigmoid": (nn.Hardsigmoid, ()),
    "Softsign": (nn.Softsign, ()),
    "LogSigmoid": (nn.LogSigmoid, ()),
    "Tanhshrink": (nn.Tanhshrink, ()),
    "Softmax": (nn.Softmax, ("dim",)),
    "LogSoftmax": (nn.LogSoftmax, ("dim",)),
}  # fmt: skip
_BY_CLASS = {cls: name for name, (cls, _) in LAYERS.items()}


def _json_value(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_json_value(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot describe {value!r} as data")


def _layers(module: nn.Module) -> list[nn.Module] | None:
    if module._forward_hooks or module._forward_pre_hooks or module._backward_hooks:
        return None
    if type(module) is nn.Sequential:
        out: list[nn.Module] = []
        for child in module:
            sub = _layers(child)
            if sub is None:
                return None
            out += sub
        return out
    return [module] if type(module) in _BY_CLASS else None


def sequential_of(mean: Callable) -> nn.Sequential | None:
    """``mean`` as an ``nn.Sequential`` of table layers, or None if it has no structure as data.

    Accepts an ``nn.Sequential`` (nested ones flattened), a single table layer, the
    :class:`FlatMean` of a loaded generator, the ``torch.fx`` graph of an exported chain of
    linear layers and activations (generator files of an earlier format), and any module, method
    or function around modules that ``torch.fx`` traces into a chain of table layers
    (``vae.decode`` written as ``torch.sigmoid(self.fc4(F.relu(self.fc3(z))))``: its layers'
    weights, in a Sequential; :mod:`fastgeo.decoders.layers_of_steps`).
    """
    if type(mean) is FlatMean and not (mean._forward_hooks or mean._forward_pre_hooks):
        mean = mean.flat
    if isinstance(mean, torch.fx.GraphModule):
        steps = graph_steps(mean)
        return None if steps is None else sequential_from_steps(steps)
    if isinstance(mean, nn.Module):
        layers = _layers(mean)
        if layers is not None:
            return nn.Sequential(*layers)
    found = recognize(mean)
    return None if found is None else sequential_from_steps(found[0])


def describe(sequential: nn.Sequential) -> str:
    """The JSON structure of an ``nn.Sequential`` of table layers."""
    specs = []
    for layer in sequential:
        name = _BY_CLASS[type(layer)]
        spec: dict[str, Any] = {"type": name}
        for arg in LAYERS[name][1]:
            value = getattr(layer, arg)
            spec[arg] = (value is not None) if arg == "bias" else _json_value(value)
        specs.append(spec)
    return json.dumps(specs)


def _argument(value: Any) -> Any:
    """A JSON value as a constructor argument: lists become tuples; nothing else is allowed."""
    if isinstance(value, list):
        return tuple(_argument(v) for v in value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(f"unexpected value {value!r} in a decoder structure")


def build(structure: str) -> nn.Sequential:
    """The ``nn.Sequential`` a JSON structure describes (parameters freshly initialized: load
    the state dict after). Raises ValueError on anything outside the table."""
    try:
        specs = json.loads(structure)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"unreadable decoder structure ({type(e).__name__}: {e})") from e
    if not isinstance(specs, list):
        raise ValueError("a decoder structure is a list of layers")
    if len(specs) > MAX_LAYERS:
        raise ValueError(f"a decoder structure of {len(specs)} layers (at most {MAX_LAYERS})")
    # The layers' random initialization (overwritten by the state dict) must not move the
    # caller's global random stream: saving or loading a generator draws nothing of theirs.
    with torch.random.fork_rng(devices=[]):
        return nn.Sequential(*_layers_of(specs))


def _layers_of(specs: list) -> list[nn.Module]:
    layers = []
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict) or not isinstance(spec.get("type"), str) or spec["type"] not in LAYERS:
            raise ValueError(f"layer {i} of the decoder structure is not one of {sorted(LAYERS)}: {spec!r}")
        cls, args = LAYERS[spec["type"]]
        extra = set(spec) - set(args) - {"type"}
        if extra:
            raise ValueError(f"layer {i} ({spec['type']}) has unexpected arguments {sorted(extra)}")
        kwargs = {k: _argument(spec[k]) for k in args if k in spec}
        try:
            layers.append(cls(**kwargs))
        except (TypeError, ValueError, RuntimeError, OverflowError) as e:
            raise ValueError(f"layer {i} ({spec['type']}): {e}") from e
    return layers
