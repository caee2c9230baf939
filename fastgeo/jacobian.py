"""Forward-mode Jacobians of decoder means.

The solver needs the decoder's value and its ``d`` directional derivatives at thousands of
points per iteration. Generic callables get them from ``torch.func.jvp`` vectorized over the
directions; most VAE decoders, though, are chains of affine layers and pointwise activations,
and for those a hand-written forward mode is 1.5-3.5x faster (bench/bench_solver_kernels.py):
the value and the ``d`` tangents of a layer are stacked into one ``((d+1) P, H)`` matrix, so each
affine layer is a single GEMM and each activation one pass that also yields its derivative.

Recognized chains (the structure is read at every call, so later changes to layers, activation
parameters or hooks are seen; each new structure is checked once against the callable itself on
a probe, with a fallback to the generic path on any mismatch):

- ``nn.Sequential`` (nested too) and bare ``nn.Linear``;
- ``torch.fx.GraphModule`` of ``aten`` ops, e.g. a mean saved by :func:`fastgeo.save_generator`
  (``torch.export``) and loaded back;
- activations: ELU, ReLU, LeakyReLU, Tanh, Sigmoid, Softplus, SiLU, Identity.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ._backend import use_backend

# A chain step: ("linear", weight getter, bias getter, identity) or ("act", name, params); the
# identity (the layer module's id, or the graph's attribute names) enters the chain's signature.
Step = tuple


def _elu(x: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    y = torch.nn.functional.elu(x, alpha)
    # The derivative is alpha e^x = y + alpha below 0 and 1 above, where y + alpha > alpha.
    if alpha == 1.0:
        return y, (y + 1).clamp_(max=1)
    return y, torch.where(x > 0, torch.ones_like(x), y + alpha)


def _softplus(x: Tensor, beta: float, threshold: float) -> tuple[Tensor, Tensor]:
    bx = beta * x
    linear = bx > threshold
    y = torch.where(linear, x, torch.nn.functional.softplus(x, beta, threshold))
    return y, torch.where(linear, torch.ones_like(x), torch.sigmoid(bx))


def _silu(x: Tensor) -> tuple[Tensor, Tensor]:
    s = torch.sigmoid(x)
    return x * s, s * (1 + x * (1 - s))


def _sigmoid(x: Tensor) -> tuple[Tensor, Tensor]:
    y = torch.sigmoid(x)
    return y, y * (1 - y)


def _tanh(x: Tensor) -> tuple[Tensor, Tensor]:
    y = torch.tanh(x)
    return y, 1 - y * y


# Pointwise activations: name -> (x, *params) -> (value, derivative), both shaped like x.
ACTIVATIONS: dict[str, Callable[..., tuple[Tensor, Tensor]]] = {
    "elu": _elu,
    "relu": lambda x: (x.clamp(min=0), (x > 0).to(x.dtype)),
    "leaky_relu": lambda x, slope: (
        torch.where(x > 0, x, slope * x),
        torch.where(x > 0, torch.ones_like(x), torch.full_like(x, slope)),
    ),
    "tanh": _tanh,
    "sigmoid": _sigmoid,
    "softplus": _softplus,
    "silu": _silu,
}


class MLPChain:
    """A decoder recognized as ``act_L(... act_1(z W_1^T + b_1) ...)``: value and Jacobian by
    stacked forward mode. Parameters are read at call time, so in-place training shows."""

    def __init__(self, steps: list[Step]) -> None:
        self.steps = steps

    def value_and_jacobian_rows(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """z (P, d) -> value (P, F), jacobian (d, P, F) (row i: derivative along z_i)."""
        P, d = z.shape
        # Row block 0 carries the value, blocks 1..d the tangents along each latent axis.
        x = torch.cat([z[None], torch.eye(d, dtype=z.dtype, device=z.device)[:, None, :].expand(d, P, d)])
        for step in self.steps:
            if step[0] == "linear":
                weight, bias = step[1](), step[2]()
                width = x.shape[-1]
                x = torch.mm(x.reshape(-1, width), weight.T).reshape(d + 1, P, weight.shape[0])
                if bias is not None:
                    x[0] += bias
            else:
                y, dy = ACTIVATIONS[step[1]](x[0], *step[2])
                x[1:] *= dy
                x[0] = y
        return x[0], x[1:]

    def __call__(self, z: Tensor) -> Tensor:
        """The chain's value alone: z (P, d) -> (P, F) (to check the recognition)."""
        x = z
        for step in self.steps:
            if step[0] == "linear":
                x = torch.nn.functional.linear(x, step[1](), step[2]())
            else:
                x = ACTIVATIONS[step[1]](x, *step[2])[0]
        return x


def _module_steps(module: nn.Module) -> list[Step] | None:
    """Steps of an nn.Sequential / nn.Linear / activation module, or None if not a plain chain."""
    if isinstance(module, torch.fx.GraphModule):
        return _graph_steps(module)  # torch.export's own hooks only check and flatten the input
    if module._forward_hooks or module._forward_pre_hooks:
        return None
    kind = type(module)
    if kind is nn.Sequential:
        steps: list[Step] = []
        for child in module:
            sub = _module_steps(child)
            if sub is None:
                return None
            steps += sub
        return steps
    if kind is nn.Linear:
        return [("linear", lambda m=module: m.weight, lambda m=module: m.bias, id(module))]
    if kind is nn.Identity:
        return []
    simple = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.SiLU: "silu"}
    if kind in simple:
        return [("act", simple[kind], ())]
    if kind is nn.ELU:
        return [("act", "elu", (float(module.alpha),))]
    if kind is nn.LeakyReLU:
        return [("act", "leaky_relu", (float(module.negative_slope),))]
    if kind is nn.Softplus:
        return [("act", "softplus", (float(module.beta), float(module.threshold)))]
    return None


def _graph_steps(gm: torch.fx.GraphModule) -> list[Step] | None:
    """Steps of an fx graph that is a single chain of aten linear layers and activations from
    its one input to its output (shape bookkeeping such as ``reshape(x, [-1, width])`` allowed)."""
    aten = torch.ops.aten
    acts = {aten.relu.default: "relu", aten.tanh.default: "tanh", aten.sigmoid.default: "sigmoid",
            aten.silu.default: "silu"}  # fmt: skip
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        return None
    current = placeholders[0]
    width: int | None = None
    steps: list[Step] = []

    def attr(name: str) -> Callable[[], Tensor]:
        def get() -> Tensor:
            obj = gm
            for part in name.split("."):
                obj = getattr(obj, part)
            return obj

        return get

    for node in gm.graph.nodes:
        if node.op in ("placeholder", "get_attr"):
            continue
        if node.op == "call_module" and not node.users and node.target == "_guards_fn":
            continue  # torch.export's input guards: no value flows out of them
        if node.op == "output":
            out = node.args[0]
            out = out[0] if isinstance(out, (tuple, list)) and len(out) == 1 else out
            return steps if out is current else None
        if node.op != "call_function":
            return None
        target, args = node.target, node.args
        if target is aten.sym_size.int:
            continue  # only feeds reshape targets, checked below
        if not args or args[0] is not current:
            return None
        if target in (aten.reshape.default, aten.view.default):
            shape = args[1]
            last = shape[-1] if len(shape) == 2 else None
            if not isinstance(last, int) or (width is not None and last != width):
                return None
            width = last
        elif target is aten.linear.default:
            if any(a.op != "get_attr" for a in args[1:]):
                return None
            bias = attr(args[2].target) if len(args) > 2 and args[2] is not None else (lambda: None)
            names = (args[1].target, args[2].target if len(args) > 2 and args[2] is not None else None)
            steps.append(("linear", attr(args[1].target), bias, names))
            width = None
        elif target is aten.elu.default:
            if any(float(a) != 1.0 for a in args[2:4]):
                return None  # scale / input_scale variants (SELU) are not handled
            steps.append(("act", "elu", (float(args[1]) if len(args) > 1 else 1.0,)))
        elif target is aten.leaky_relu.default:
            steps.append(("act", "leaky_relu", (float(args[1]) if len(args) > 1 else 0.01,)))
        elif target is aten.softplus.default:
            beta = float(args[1]) if len(args) > 1 else 1.0
            steps.append(("act", "softplus", (beta, float(args[2]) if len(args) > 2 else 20.0)))
        elif target in acts:
            steps.append(("act", acts[target], ()))
        else:
            return None
        if node.kwargs:
            return None
        current = node
    return None


_CHAINS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def mlp_chain(fn: Callable[[Tensor], Tensor], probe: Tensor) -> MLPChain | None:
    """The :class:`MLPChain` of ``fn`` if it is one, else None.

    The structure is read again at every call (a few dozen attribute look-ups), so layers,
    activations or hooks changed after a first call are seen; a structure is checked against
    ``fn`` itself on ``probe`` (P, d) once, when it is first seen.
    """
    from .io import FlatMean  # the loaded generator's wrapper: flattens (..., d) to (P, d)

    module = fn
    if type(module) is FlatMean and not (module._forward_hooks or module._forward_pre_hooks):
        module = module.flat
    steps = _module_steps(module) if isinstance(module, nn.Module) else None
    if steps is None or not any(s[0] == "linear" for s in steps):
        return None
    hooks = (len(module._forward_hooks), len(module._forward_pre_hooks))  # torch.export's own
    signature = (id(module), hooks, tuple(s[3] if s[0] == "linear" else s for s in steps))
    chain = MLPChain(steps)
    try:
        known, ok = _CHAINS[fn]
        if known == signature:
            return chain if ok else None
    except (KeyError, TypeError):
        pass
    try:
        with torch.no_grad():
            expected, got = fn(probe), chain(probe)
        scale = expected.abs().amax().clamp(min=1)
        ok = got.shape == expected.shape and bool(((got - expected).abs() <= 1e-4 * scale).all())
    except Exception:  # noqa: BLE001 - any failure means "not the chain we thought"
        ok = False
    try:
        _CHAINS[fn] = (signature, ok)
    except TypeError:  # not weak-referenceable: checked again next time
        pass
    return chain if ok else None


def jacobian_rows(fn: Callable[[Tensor], Tensor], z: Tensor) -> tuple[Tensor, Tensor]:
    """``fn(z)`` and its Jacobian, directions first: z (P, d) -> value (P, F), jacobian (d, P, F).

    fn maps (P, d) -> (P, F) pointwise. MLP chains (see the module docstring) take the stacked
    forward mode; anything else ``torch.func.jvp`` vectorized over the directions (the RBF ops
    run on the reference backend there: it supports forward-mode AD), or, for a ``fn`` without
    forward-mode support, the double-backward trick (two reverse passes).
    """
    chain = mlp_chain(fn, z[:4].detach()) if z.shape[0] > 0 else None
    if chain is not None:
        with torch.no_grad():
            return chain.value_and_jacobian_rows(z.detach())
    return generic_jacobian_rows(fn, z)


def generic_jacobian_rows(fn: Callable[[Tensor], Tensor], z: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`jacobian_rows` by ``torch.func.jvp`` for any differentiable ``fn`` (the reference
    of the stacked forward mode)."""
    d = z.shape[-1]
    tangents = torch.eye(d, dtype=z.dtype, device=z.device)[:, None, :].expand(d, *z.shape)
    with use_backend("reference"):
        try:  # all directions in one vectorized pass: the primal is computed once
            value, jac = torch.func.vmap(lambda v: torch.func.jvp(fn, (z,), (v,)), out_dims=(None, 0))(
                tangents
            )
        except Exception:  # noqa: BLE001 - fn is not vmappable (or returns per-direction primals)
            pairs = [_jvp(fn, z, tangents[i]) for i in range(d)]
            value, jac = pairs[0][0], torch.stack([p[1] for p in pairs])
    return value.detach(), jac.detach()


def _jvp(fn: Callable[[Tensor], Tensor], z: Tensor, tangent: Tensor) -> tuple[Tensor, Tensor]:
    try:
        return torch.func.jvp(fn, (z,), (tangent,))
    except (RuntimeError, NotImplementedError):
        # J v = d/du <J^T u, v>: exact, for callables whose ops lack forward-mode formulas.
        with torch.enable_grad():
            x = z.detach().requires_grad_(True)
            y = fn(x)
            u = torch.zeros_like(y, requires_grad=True)
            (vjp,) = torch.autograd.grad(y, x, u, create_graph=True)
            (jv,) = torch.autograd.grad(vjp, u, tangent)
        return y, jv
