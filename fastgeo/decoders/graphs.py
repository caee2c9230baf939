"""Steps of a ``torch.fx`` graph that is a single chain from its one input to its output.

Two kinds of graphs are read:

- ``aten`` graphs, as ``torch.export`` captures a module (``torch.export.export(...).module()``,
  a mean saved by :func:`fastgeo.save_generator` with ``format="export"`` and loaded back,
  decomposed or not): linear (or addmm / mm / matmul of a parameter or its transpose),
  convolution / conv{1,2}d / conv_transpose{1,2}d, upsample_*.vec, batch_norm /
  _native_batch_norm_legit_no_training (eval), group_norm / native_group_norm, layer_norm /
  native_layer_norm, pad and the padding ops, view / reshape / _unsafe_view / flatten /
  unflatten, clone, full slices and pieces (slice, select, chunk, split), dropout (eval),
  pixel_shuffle / pixel_unshuffle, avg_pool{1,2}d, adaptive_avg_pool{1,2}d, (log_)softmax over
  an axis of the point, permute / transpose / unsqueeze / squeeze of the point's axes, clamp by
  constants, prelu, glu, exp and the activations (in-place variants too);
- graphs of ``torch.fx.symbolic_trace`` (a custom decoder's ``forward``): call_module nodes of
  the layers of :mod:`fastgeo.decoders.modules`, torch / ``torch.nn.functional`` activations
  (relu, tanh, sigmoid / expit, exp, silu, elu, leaky_relu, softplus, gelu, hardtanh, relu6, mish,
  selu, celu, hardswish, hardsigmoid, softsign, logsigmoid, tanhshrink), (log_)softmax,
  ``F.normalize`` (L2, symbolically traced graphs only), ``F.interpolate``, ``F.pad``,
  ``F.pixel_(un)shuffle``, ``F.(adaptive_)avg_pool{1,2}d``,
  ``F.glu``, ``torch.flatten`` / ``torch.reshape`` / ``torch.unflatten``, ``torch.permute`` /
  ``transpose`` / ``unsqueeze`` / ``squeeze``, ``torch.chunk`` / ``split``, ``torch.clamp`` /
  ``clip``, indexing (new axes ``x[:, :, None, None]``, pieces ``h[:, :D]``), linear maps by
  parameters (``x @ W``, ``x @ W.T``, ``torch.matmul`` / ``mm``, ``F.linear``), and the methods
  view / reshape / flatten / unflatten / permute / transpose / unsqueeze / squeeze / chunk /
  split / clamp / contiguous / clone / relu / tanh / sigmoid / softmax / log_softmax, and
  ``torch.addmm`` and ``torch.einsum`` as linear layers (aten ``einsum`` too), arguments of
  ``forward`` with defaults (traced at them), ``expand`` / ``repeat`` of the value (per point)
  and ``torch.cat`` of the value with a buffer or parameter copied along the batch
  (``self.coords.expand(len(z), -1, -1, -1)``), conversions (``to`` a device or a floating dtype,
  ``float``, ``double``, ``type_as``, ``cpu``: the identity on the stack, which runs in the
  metric's dtype on its device; aten ``to`` / ``_to_copy`` / ``type_as`` too, export's dtype
  assertions beside them skipped).

In both, arithmetic of the chain's value with a number or with a tensor of the decoder's own (a
parameter or buffer) is read by :mod:`fastgeo.decoders.graph_arithmetic`; tensors computed from
parameters alone (``self.log_scale.exp()``) are parameters too
(:mod:`fastgeo.decoders.graph_derived`).

The walk along the chain (what may sit beside it, reshapes of the batch) is
:mod:`fastgeo.decoders.graph_walk`'s, the ``aten`` ops :mod:`fastgeo.decoders.graph_aten`'s; a
node of another op, or arguments of an unexpected form, and the graph is not a chain (None).
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import Graph, GraphModule, Node

from .graph_arithmetic import (
    FX_ARITHMETIC,
    METHOD_ARITHMETIC,
    fx_arithmetic_step,
)
from .graph_aten import AtenReader
from .graph_ops import (
    AXES,
    CONVERSIONS,
    FUNCTIONS,
    MATMULS,
    METHODS,
    NAMED,
    SIMPLE,
    converts_to_floats,
    copy_sizes,
)
from .graph_walk import NotAChain, attribute_names, bind, nodes, require
from .modules import module_steps
from .steps import (
    Activation,
    Affine,
    Step,
)


def graph_steps(gm: GraphModule) -> list[Step] | None:
    """Steps of ``gm`` if its graph is a single chain of known ops from its one input to its
    output, else None. Parameters are read from ``gm`` at call time."""
    return read_graph(gm.graph, gm)


def read_graph(graph: Graph, root: nn.Module) -> list[Step] | None:
    """Steps of ``graph`` (its modules and attributes looked up in ``root``), or None."""
    try:
        return _Reader(root).read(graph)
    except Exception:  # noqa: BLE001 - NotAChain, or arguments of an unexpected form: not a chain
        return None


def where_not_a_chain(graph: Graph, root: nn.Module) -> str | None:
    """The op of ``graph`` at which it stops being a chain of known ops, in words (``"MaxPool2d
    (layer 'up.2')"``, ``"torch.nn.functional.softmin"``, ``"an operator mul"``, ``"the tensor method
    .exp()"``...), or None if it is one."""
    reader = _Reader(root)
    try:
        reader.read(graph)
    except Exception:  # noqa: BLE001 - NotAChain, or arguments of an unexpected form
        node = reader.at
        if node is None:
            return "its input"
        if node.op == "call_module":
            try:
                kind = type(root.get_submodule(node.target)).__name__
            except AttributeError:
                kind = "a module"
            return f"{kind} (layer {node.target!r})"
        if node.op == "call_function":
            name = getattr(node.target, "__name__", str(node.target))
            module = getattr(node.target, "__module__", None) or ""
            operand = "an operator" if module == "_operator" else "a function"
            return f"{operand} {name}" if module in ("", "_operator") else f"{module}.{name}"
        if node.op == "call_method":
            return f"the tensor method .{node.target}()"
        return "its output"
    return None


BROADCAST_TENSORS = (torch.broadcast_tensors, torch.functional.broadcast_tensors)


class _Reader(AtenReader):
    """The ops of ``torch.fx``-traced graphs (modules, torch functions, tensor methods) and of
    ``aten`` graphs."""

    def _step(self, node: Node) -> None:
        if node.op == "call_module":
            require(node.args == (self.current,) and not node.kwargs)
            try:
                module = self.root.get_submodule(node.target)
            except AttributeError as e:
                raise NotAChain from e
            steps = module_steps(module)
            require(steps is not None)
            for step in steps:
                self._add(step)
        elif node.op == "call_function" and node.target in MATMULS or node.op == "call_method" and (
            node.target in ("matmul", "mm", "__matmul__")
        ):  # x @ W with a parameter W (in, out), or with the transpose of one (out, in)
            require(len(node.args) == 2 and node.args[0] is self.current and not node.kwargs)
            weight, identity = self._weight_of_product(node.args[1])
            self._add(Affine(weight, lambda: None, identity))
        elif node.op == "call_function" and node.target is F.linear:
            a = bind(node.args[1:], node.kwargs, (("weight", None), ("bias", None)))
            require(node.args and node.args[0] is self.current and isinstance(a["weight"], Node))
            weight, identity = self._weight_of_product(a["weight"], linear=True)
            self._add(Affine(weight, self._param(a["bias"]), (identity, attribute_names(a, "bias"))))
        elif node.op == "call_function" and node.target is torch.addmm:  # torch.addmm(b, x, W)
            a = bind(node.args, node.kwargs, (("input", None), ("mat1", None), ("mat2", None),
                                               ("beta", 1), ("alpha", 1)))  # fmt: skip
            require(a["mat1"] is self.current and a["beta"] == 1 and a["alpha"] == 1)
            weight, identity = self._weight_of_product(a["mat2"])
            self._add(Affine(weight, self._param(a["input"], False), (identity, attribute_names(a, "input"))))
        elif node.op == "call_function" and node.target is torch.cat:
            a = bind(node.args, node.kwargs, (("tensors", None), ("dim", 0)))
            self._concat(a["tensors"], a["dim"])
        elif (found := copy_sizes(node)) is not None and node.args[0] is self.current:
            self._broadcast(*found)
        elif node.op == "call_function" and node.target in BROADCAST_TENSORS:
            require(not node.kwargs)
            self._broadcast_with(node, node.args)
        elif node.op == "call_function" and node.target in (operator.pow, torch.pow, torch.square):
            require(node.args and node.args[0] is self.current and not node.kwargs)
            self._power(2 if node.target is torch.square else node.args[1] if len(node.args) == 2 else None)
        elif node.op == "call_function" and node.target is torch.einsum:
            require(not node.kwargs and len(node.args) >= 2)
            self._einsum(node.args[0], node.args[1] if len(node.args) == 2 else node.args[1:])
        elif node.op == "call_method" and node.target in METHOD_ARITHMETIC:
            self._add(fx_arithmetic_step(node, self.current, self.root))
        elif node.op == "call_method":
            require(node.args and node.args[0] is self.current)
            self._method(node.target, node.args[1:], node.kwargs)
        elif node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
            self._aten(node)
        elif node.op == "call_function" and node.target in FX_ARITHMETIC:
            self._add(fx_arithmetic_step(node, self.current, self.root))
        elif node.op == "call_function" and node.target is operator.getitem:
            require(len(node.args) == 2 and node.args[0] is self.current and not node.kwargs)
            self._index(node.args[1])
        elif node.op == "call_function" and node.target in FUNCTIONS:
            require(node.args and node.args[0] is self.current)
            name, params = FUNCTIONS[node.target]
            self._function(name, bind(node.args[1:], node.kwargs, params))
        else:
            raise NotAChain

    def _method(self, name: str, args: tuple, kwargs: dict) -> None:
        if name in ("view", "reshape"):
            require(not kwargs)
            self._reshape(args[0] if len(args) == 1 and isinstance(args[0], (tuple, list)) else args)
        elif name == "permute":  # x.permute(0, 2, 1) or x.permute((0, 2, 1))
            require(set(kwargs) <= {"dims"})
            dims = kwargs["dims"] if kwargs else args[0] if len(args) == 1 else args
            self._axes("permute", {"dims": dims})
        elif name in METHODS:
            self._function(name, bind(args, kwargs, METHODS[name]))
        elif name in ("pow", "square"):
            require(not kwargs and len(args) == (1 if name == "pow" else 0))
            self._power(args[0] if name == "pow" else 2)
        elif name in CONVERSIONS:  # the identity on the stack
            values = [*args, *kwargs.values()]
            require(converts_to_floats(values))
            require(all(v.op == "get_attr" or v in self.shapes for v in nodes(values)))
        else:
            raise NotAChain

    def _function(self, name: str, a: dict[str, Any]) -> None:
        """A torch-level function or method ``name`` of the chain's value, other arguments ``a``."""
        require(all(n in self.batch for n in nodes(a)))  # only reshapes take them
        if name in SIMPLE:
            self._add(Activation(name))
        elif name == "elu":
            self._add(Activation("elu", (float(a["alpha"]),)))
        elif name == "leaky_relu":
            self._add(Activation("leaky_relu", (float(a["negative_slope"]),)))
        elif name == "softplus":
            self._add(Activation("softplus", (float(a["beta"]), float(a["threshold"]))))
        elif name == "gelu":
            self._gelu(a["approximate"])
        elif name == "hardtanh":  # F.relu6 binds no bounds
            self._add(Activation("hardtanh", (float(a.get("min_val", 0.0)), float(a.get("max_val", 6.0)))))
        elif name in ("clamp", "clip", "clamp_min", "clamp_max"):
            self._clamp(a.get("min"), a.get("max"))
        elif name in AXES:
            self._axes(name, a)
        elif name in NAMED:
            self._named(name, a)
        elif name in ("softmax", "log_softmax"):
            require(a["dtype"] is None)
            self._softmax(a["dim"], name == "log_softmax")
        elif name == "normalize":
            require(a["out"] is None and a["p"] == 2)
            self._normalize(a["dim"], a["eps"])
        elif name in ("pixel_shuffle", "pixel_unshuffle"):
            self._pixel_shuffle(a["downscale_factor" if name == "pixel_unshuffle" else "upscale_factor"],
                                name == "pixel_unshuffle")  # fmt: skip
        elif name in ("avg_pool1d", "avg_pool2d"):
            self._avg_pool(int(name[-2]), a)
        elif name in ("adaptive_avg_pool1d", "adaptive_avg_pool2d"):
            self._adaptive_avg_pool(int(name[-2]), a["output_size"])
        elif name == "glu":
            self._glu(a["dim"])
        elif name == "chunk":
            self._parts("chunk", a["chunks"], a["dim"])
        elif name == "split":
            self._parts("split", a["split_size" if "split_size" in a else "split_size_or_sections"], a["dim"])
        elif name == "flatten":
            self._flatten(a["start_dim"], a["end_dim"])
        elif name == "unflatten":
            self._unflatten(a["dim"], a["sizes"])
        elif name == "reshape":
            self._reshape(a["shape"])
        elif name == "interpolate":
            require(not a["antialias"])
            a["recompute"] = a.pop("recompute_scale_factor")
            self._upsample(a["size"], a["scale_factor"], a["mode"], a["align_corners"], a["recompute"])
        elif name == "pad":
            self._pad(a["pad"], a["mode"], a["value"])
        elif name not in ("contiguous", "clone"):
            raise NotAChain
