"""Geodesic distance matrices at scale: chunked, resumable, multi-process.

``pairwise_distances(metric, Z)`` solves the ``M (M-1) / 2`` geodesics ``i < j`` (``M P`` with a
second set ``Y``) in fixed chunks sized to a memory budget, so that the extra memory does not grow
with ``M``; the matrix itself is the only ``O(M^2)`` allocation (with the per-pair status).

Chunk layout: the pairs are numbered in a fixed order (row-major upper triangle over the distinct
rows of ``Z``, or row-major ``Z x Y``) and cut into consecutive chunks of ``chunk_size`` pairs.
The layout depends only on the inputs and ``chunk_size``, never on resume state or the number of
processes, so a resumed or distributed run solves exactly the same batches as a plain one and
returns the same matrix bit for bit.

Checkpoints: ``checkpoint=DIR`` keeps one file per finished chunk (``chunk_00000012.pt``) and a
``meta.json`` with the fingerprint of the inputs. Every file is written atomically (temporary
file, fsync, ``os.replace``, fsync of the folder), so a run killed at any point leaves only whole
files; a run started again with the same arguments loads the finished chunks and solves the rest.
Several processes (``torch.distributed``) may share one checkpoint folder.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import _checks
from .metric import ExpectedMetric
from .solve import geodesics

CHECKPOINT_VERSION = 1
DEFAULT_CPU_BUDGET = 256 << 20  # bytes of solver working memory per chunk on the CPU
_NOT_OPTIONS = ("metric", "z0", "z1", "init")  # geodesics() arguments that are not options here


@dataclass
class PairwiseReport:
    """Per-pair status of a :func:`pairwise_distances` call.

    Attributes:
        converged: (M, M) bool, or (M, P) with ``Y``; False where the solver hit its iteration
            limit. Such entries hold the best length found, never longer than the straight line.
            The diagonal and pairs of equal points are True (distance exactly 0).
        iterations: (M, M) or (M, P) int32, solver iterations spent on each pair.
        n_pairs: geodesics solved (distinct unordered pairs for ``Z`` alone, ``M P`` with ``Y``).
        n_converged, n_failed: how many of them converged / did not.
        chunk_size, chunks_total: the fixed chunk layout.
        chunks_computed: chunks solved by this call (this process, with ``torch.distributed``:
            all processes together).
        chunks_loaded: chunks read back from the checkpoint instead of solved.
        wall_time: seconds spent in the call.
        decoder_evals, decoder_jvps: decoder work of all chunks (loaded ones included: the
            work the matrix cost).
    """

    converged: Tensor
    iterations: Tensor
    n_pairs: int
    n_converged: int
    n_failed: int
    chunk_size: int
    chunks_total: int
    chunks_computed: int
    chunks_loaded: int
    wall_time: float
    decoder_evals: int
    decoder_jvps: int
    options: dict = field(default_factory=dict)

    def failed_pairs(self) -> Tensor:
        """(k, 2) indices ``(i, j)`` of the pairs that did not converge (``i < j`` without Y)."""
        mask = ~self.converged
        if self.options.get("symmetric", False):
            mask = torch.triu(mask, diagonal=1)
        return mask.nonzero()

    def __str__(self) -> str:
        return (
            f"{self.n_pairs} geodesics, {self.n_converged} converged, {self.n_failed} not; "
            f"{self.chunks_total} chunks of {self.chunk_size} ({self.chunks_computed} solved, "
            f"{self.chunks_loaded} loaded); {self.wall_time:.2f} s; "
            f"{self.decoder_evals} decoder evals, {self.decoder_jvps} decoder JVPs"
        )


# --------------------------------------------------------------------------------------------
# Pair layout


def triu_pairs(n: int, start: int, stop: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Pairs ``k = start..stop-1`` of the row-major strict upper triangle of an (n, n) matrix.

    Closed form, so no (n^2,) index tensor is ever held: returns rows, cols (stop - start,) int64.
    """
    k = torch.arange(start, stop, dtype=torch.int64, device=device)
    total = n * (n - 1) // 2
    # Row i holds pairs [off(i), off(i + 1)) with off(i) = i n - i (i + 1) / 2. Solve off(i) <= k.
    r = total - 1 - k  # index counted from the end: row n-2-i' of a reversed triangle
    ip = ((torch.sqrt(8 * r.double() + 1) - 1) / 2).floor().to(torch.int64)
    # fix rounding: ip is the largest integer with ip (ip + 1) / 2 <= r
    ip = ip - (ip * (ip + 1) // 2 > r).to(torch.int64)
    ip = ip + ((ip + 1) * (ip + 2) // 2 <= r).to(torch.int64)
    i = n - 2 - ip
    off = i * n - i * (i + 1) // 2
    j = k - off + i + 1
    return i, j


@dataclass
class _Layout:
    symmetric: bool
    rows: int  # distinct rows of Z (symmetric) or M
    cols: int  # P (rectangular)
    n_pairs: int
    chunk_size: int

    @property
    def n_chunks(self) -> int:
        return math.ceil(self.n_pairs / self.chunk_size) if self.n_pairs else 0

    def pairs(self, chunk: int, device: torch.device) -> tuple[Tensor, Tensor]:
        start = chunk * self.chunk_size
        stop = min(self.n_pairs, start + self.chunk_size)
        if self.symmetric:
            return triu_pairs(self.rows, start, stop, device)
        k = torch.arange(start, stop, dtype=torch.int64, device=device)
        return k // self.cols, k % self.cols


def _pair_bytes(metric: ExpectedMetric, options: dict) -> int:
    """Working memory of the solver per curve (Jacobians, Gauss-Newton blocks, temporaries)."""
    method = options.get("method", "default")
    n = options.get("n_points") or (128 if method == "dense" else 32)
    if method == "dense":
        m = n - 2
    else:
        m = options.get("m") or (1 if method == "paper" else 8)
    d, D = metric.latent_dim, metric.data_dim
    el = torch.finfo(metric.dtype).bits // 8
    jac = n * 2 * D * (d + 3) * el  # features and their d Jacobian columns (the solver's estimate)
    gn = 4 * (m * d) ** 2 * el  # Gauss-Newton matrix, damped copy, solve workspace
    # x10: decoder activations, forward-mode temporaries, several starts per curve (measured:
    # ~0.85 MB per curve for d = 2, D = 64, float32, default solver, against jac = 82 KB).
    return 10 * jac + gn


def default_memory_budget(device: torch.device) -> int:
    """Solver working memory per chunk: a quarter of free GPU memory (<= 4 GiB), 256 MiB on CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(min(free // 4, 4 << 30))
    return DEFAULT_CPU_BUDGET


# --------------------------------------------------------------------------------------------
# Fingerprints and checkpoint files


def _hash_tensor(h: Any, t: Tensor) -> None:
    t = t.detach().to("cpu").contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def _tensor_digest(t: Tensor | None) -> str:
    h = hashlib.sha256()
    if t is None:
        h.update(b"none")
    else:
        _hash_tensor(h, t)
    return h.hexdigest()


def metric_fingerprint(metric: ExpectedMetric) -> str:
    """Hash of the metric's parameters: RBF buffers and weights, and the mean's tensors.

    For an ``nn.Module`` mean its ``state_dict``; for a plain function the tensors (and modules)
    captured in its closure; otherwise only its type name is known.
    """
    h = hashlib.sha256()
    for name, t in sorted(metric.precision.state_dict().items()):
        h.update(name.encode())
        _hash_tensor(h, t)
    mean = metric.mean
    h.update(type(mean).__qualname__.encode())
    if isinstance(mean, torch.nn.Module):
        for name, t in sorted(mean.state_dict().items()):
            h.update(name.encode())
            _hash_tensor(h, t)
    else:
        h.update(getattr(mean, "__qualname__", "").encode())
        for cell in getattr(mean, "__closure__", None) or ():
            try:
                value = cell.cell_contents
            except ValueError:  # empty cell
                continue
            if isinstance(value, Tensor):
                _hash_tensor(h, value)
            elif isinstance(value, torch.nn.Module):
                for name, t in sorted(value.state_dict().items()):
                    h.update(name.encode())
                    _hash_tensor(h, t)
    return h.hexdigest()


def _options_digest(options: dict) -> str:
    """Hash of solver options; tensors by value, other objects by type and tensor attributes."""
    h = hashlib.sha256()
    for k in sorted(options):
        v = options[k]
        h.update(k.encode())
        if isinstance(v, Tensor):
            _hash_tensor(h, v)
        elif v is None or isinstance(v, (bool, int, float, str)):
            h.update(repr(v).encode())
        else:
            h.update(type(v).__qualname__.encode())
            for name, a in sorted(getattr(v, "__dict__", {}).items()):
                if isinstance(a, Tensor):
                    h.update(name.encode())
                    _hash_tensor(h, a)
                elif isinstance(a, (bool, int, float, str)):
                    h.update(f"{name}={a!r}".encode())
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows: folders cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Write a file atomically: ``write(fileobj)`` to a temporary file beside it, fsync, replace."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


class _Checkpoint:
    """A checkpoint folder: ``meta.json`` plus one ``chunk_XXXXXXXX.pt`` per finished chunk."""

    def __init__(self, path: str | os.PathLike, components: dict[str, str], meta: dict) -> None:
        self.path = Path(path)
        self.components = components
        self.key = hashlib.sha256(json.dumps(components, sort_keys=True).encode()).hexdigest()
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"checkpoint {str(self.path)!r} exists and is not a folder")
        self.path.mkdir(parents=True, exist_ok=True)
        meta_path = self.path / "meta.json"
        if meta_path.exists():
            try:
                old = json.loads(meta_path.read_text())
            except (OSError, ValueError) as e:
                raise ValueError(f"checkpoint {str(self.path)!r}: unreadable meta.json ({e})") from e
            old_components = old.get("fingerprint", {})
            if old.get("version") != CHECKPOINT_VERSION or old_components != components:
                differ = sorted(k for k in set(components) | set(old_components)
                                if components.get(k) != old_components.get(k))
                raise ValueError(
                    f"checkpoint {str(self.path)!r} was written for different inputs (differs in: "
                    f"{', '.join(differ) or 'version'}); use another folder, or delete it to start over"
                )
        else:
            payload = json.dumps({"version": CHECKPOINT_VERSION, "fingerprint": components, **meta},
                                 indent=1, sort_keys=True).encode()
            atomic_write(meta_path, lambda f: f.write(payload))

    def chunk_path(self, c: int) -> Path:
        return self.path / f"chunk_{c:08d}.pt"

    def load(self, c: int, n: int) -> dict | None:
        p = self.chunk_path(c)
        if not p.exists():
            return None
        try:
            rec = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - an unreadable file is recomputed, not trusted
            warnings.warn(f"fastgeo: checkpoint chunk {p} is unreadable ({e}); solving it again",
                          stacklevel=3)
            return None
        if rec.get("key") != self.key or rec.get("chunk") != c or rec["lengths"].shape != (n,):
            raise ValueError(f"checkpoint chunk {p} does not belong to these inputs; delete the folder")
        return rec

    def save(self, c: int, rec: dict) -> None:
        rec = {**rec, "key": self.key, "chunk": c}
        atomic_write(self.chunk_path(c), lambda f: torch.save(rec, f))

    def finished(self) -> int:
        return sum(1 for _ in self.path.glob("chunk_*.pt"))


# --------------------------------------------------------------------------------------------
# The driver


def _dist_info() -> tuple[int, int]:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _progress_bar(total: int) -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional (the "progress" extra): no bar
        return None
    return tqdm(total=total, unit="pair", desc="geodesics", dynamic_ncols=True)


def _solve_chunk(metric: ExpectedMetric, a: Tensor, b: Tensor, options: dict) -> dict:
    res = geodesics(metric, a, b, **options)
    lengths, converged = res.lengths, res.converged
    bad = ~torch.isfinite(lengths)
    if bool(bad.any()):  # never hand a NaN out: fall back to the straight line, flagged
        lengths = torch.where(bad, res.straight_lengths, lengths)
        converged = converged & ~bad
        if not bool(torch.isfinite(lengths).all()):
            raise RuntimeError(
                "fastgeo.pairwise_distances: the metric is not finite along the straight line between "
                "some pairs; check the decoder mean and the RBF precision (zeta > 0) on these inputs"
            )
    return {
        "lengths": lengths.detach().cpu(),
        "converged": converged.cpu(),
        "iterations": res.iterations.to(torch.int32).cpu(),
        "decoder_evals": int(res.decoder_evals),
        "decoder_jvps": int(res.decoder_jvps),
    }


def pairwise_distances(
    metric: ExpectedMetric,
    Z: Tensor,
    Y: Tensor | None = None,
    *,
    memory_budget: int | None = None,
    chunk_size: int | None = None,
    checkpoint: str | os.PathLike | None = None,
    progress: bool = True,
    return_report: bool = False,
    **solver_options: Any,
) -> Tensor | tuple[Tensor, PairwiseReport]:
    """Geodesic distances between all pairs of ``Z`` (or between ``Z`` and ``Y``).

    Without ``Y`` only the pairs ``i < j`` of distinct rows are solved; the matrix is symmetric,
    with an exact zero diagonal and exact zeros between equal rows. Pairs stream through
    :func:`fastgeo.geodesics` in fixed chunks, so the memory beyond the output matrix is bounded
    by ``memory_budget`` whatever M.

    Pairs whose optimization did not converge keep the best length found, which is never longer
    than the straight line between their ends (an upper bound of the distance); they are counted
    in a warning and flagged in the report's ``converged`` mask, never hidden. No entry is NaN.

    Args:
        metric: the :class:`ExpectedMetric`.
        Z: (M, d) latent codes.
        Y: optional (P, d) second set: the result is then (M, P), all pairs solved.
        memory_budget: bytes of solver working memory per chunk (default: a quarter of free GPU
            memory up to 4 GiB, or 256 MiB on the CPU). Sets the chunk size.
        chunk_size: pairs per chunk, overrides ``memory_budget``.
        checkpoint: folder for resumable runs: finished chunks are saved atomically as they
            finish; a run started again with the same arguments solves only the missing chunks.
            Inputs that differ (Z, Y, options, chunk layout, metric parameters) are refused.
        progress: show a tqdm progress bar (pairs per second).
        return_report: also return a :class:`PairwiseReport`.
        **solver_options: passed to :func:`fastgeo.geodesics` (method, m, n_points, family,
            warm_start, max_iter, tol, batch_size).

    With ``torch.distributed`` initialized, the processes take every ``world_size``-th chunk and
    all of them return the full matrix (a sum all-reduce of disjoint parts: exact).

    Returns:
        D (M, M) (or (M, P)) tensor of geodesic lengths, dtype and device of the metric; with
        ``return_report=True`` the tuple ``(D, report)``.
    """
    t_start = time.perf_counter()
    if not isinstance(metric, ExpectedMetric):
        raise TypeError(f"metric must be a fastgeo.ExpectedMetric, got {type(metric).__name__}")
    metric.check_points("Z", Z, ndim=2)
    _checks.finite("Z", Z)
    if Y is not None:
        metric.check_points("Y", Y, ndim=2)
        _checks.finite("Y", Y)
    allowed = [k for k in inspect.signature(geodesics).parameters if k not in _NOT_OPTIONS]
    unknown = set(solver_options) - set(allowed)
    if unknown:
        raise TypeError(
            f"unknown option(s) {sorted(unknown)}; solver options are {allowed}"
            + (" (init is per pair and has no meaning here)" if "init" in unknown else "")
        )
    Z = Z.detach()
    Y = None if Y is None else Y.detach()
    device = metric.device
    M = Z.shape[0]

    # Distinct rows: duplicates are solved once and copied (exact zeros between them).
    rep = None
    if Y is None:
        pts = Z
        if M > 1:
            _, inverse = torch.unique(Z, dim=0, return_inverse=True)
            if int(inverse.max()) + 1 < M:
                first = torch.full((int(inverse.max()) + 1,), M, dtype=torch.int64, device=Z.device)
                first = first.scatter_reduce(0, inverse, torch.arange(M, device=Z.device), "amin")
                rep = first[inverse]  # (M,) first row equal to each row
                keep = (rep == torch.arange(M, device=Z.device)).nonzero().squeeze(1)
                pts = Z[keep]
        rows = pts.shape[0]
        layout_pairs = rows * (rows - 1) // 2
        cols = rows
    else:
        pts = Z
        rows, cols = M, Y.shape[0]
        layout_pairs = rows * cols

    if chunk_size is None:
        per_pair = _pair_bytes(metric, solver_options)
        budget = default_memory_budget(device) if memory_budget is None else int(memory_budget)
        if budget <= 0:
            raise ValueError(f"memory_budget must be > 0 bytes, got {memory_budget!r}")
        chunk_size = max(1, budget // per_pair)
        explicit_layout = memory_budget is not None
    else:
        if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
            raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
        explicit_layout = True
    chunk_size = int(min(chunk_size, max(1, layout_pairs)))
    options = dict(solver_options)
    options.setdefault("batch_size", chunk_size)

    ckpt = None
    if checkpoint is not None:
        meta_path = Path(checkpoint) / "meta.json"
        if not explicit_layout and meta_path.exists():
            # A default budget may depend on free memory: keep the layout the run started with.
            try:
                chunk_size = int(json.loads(meta_path.read_text()).get("chunk_size", chunk_size))
            except (OSError, ValueError):
                pass
            if "batch_size" not in solver_options:
                options["batch_size"] = chunk_size
        layout = _Layout(Y is None, rows, cols, layout_pairs, chunk_size)
        components = {
            "Z": _tensor_digest(Z),
            "Y": _tensor_digest(Y),
            "options": _options_digest(options),
            "layout": f"symmetric={layout.symmetric} rows={rows} cols={cols} chunk_size={chunk_size}",
            "metric": metric_fingerprint(metric),
            "dtype": str(metric.dtype),
        }
        meta = {"M": M, "P": None if Y is None else Y.shape[0], "n_pairs": layout_pairs,
                "chunk_size": chunk_size, "n_chunks": layout.n_chunks,
                "options": {k: v if v is None or isinstance(v, (bool, int, float, str)) else type(v).__name__
                            for k, v in options.items()}}
        ckpt = _Checkpoint(checkpoint, components, meta)
    else:
        layout = _Layout(Y is None, rows, cols, layout_pairs, chunk_size)

    rank, world = _dist_info()
    out = torch.zeros(rows, cols, dtype=metric.dtype, device=device)
    # Per-pair status: iterations + 1 where converged, -(iterations + 1) where not, 0 = unsolved.
    status = torch.zeros(rows, cols, dtype=torch.int32, device=device)
    counts = torch.zeros(4, dtype=torch.int64)  # evals, jvps, computed, loaded
    other = pts if Y is None else Y
    mine = range(rank, layout.n_chunks, world)
    bar = _progress_bar(layout.n_pairs) if progress and rank == 0 and layout.n_chunks else None
    try:
        for c in mine:
            i, j = layout.pairs(c, device)
            rec = ckpt.load(c, i.numel()) if ckpt is not None else None
            if rec is None:
                rec = _solve_chunk(metric, pts[i], other[j], options)
                if ckpt is not None:
                    ckpt.save(c, rec)
                counts[2] += 1
            else:
                counts[3] += 1
            counts[0] += rec["decoder_evals"]
            counts[1] += rec["decoder_jvps"]
            lengths = rec["lengths"].to(device=device, dtype=metric.dtype)
            it = rec["iterations"].to(device) + 1
            st = torch.where(rec["converged"].to(device), it, -it)
            out[i, j] = lengths
            status[i, j] = st
            if Y is None:  # symmetric fill, by the same process: parts stay disjoint
                out[j, i] = lengths
                status[j, i] = st
            if bar is not None:
                bar.update(min(i.numel() * world, bar.total - bar.n))
    finally:
        if bar is not None:
            bar.close()

    if world > 1:
        # Disjoint parts, zeros elsewhere: the sums are exact.
        dist = torch.distributed
        dist.all_reduce(out)
        dist.all_reduce(status)
        counts_dev = counts.to(device)
        dist.all_reduce(counts_dev)
        counts = counts_dev.cpu()
    n_pairs = layout.n_pairs
    n_failed = int((status < 0).sum()) // (2 if Y is None else 1)
    n_conv = n_pairs - n_failed
    if Y is None:
        out.fill_diagonal_(0)  # exact zero diagonal
        status.fill_diagonal_(1)
        if rep is not None:  # duplicates: copies of their first row (exact zeros between them)
            compact = torch.cumsum(rep == torch.arange(M, device=device), 0) - 1  # row -> distinct row
            idx = compact[rep]
            out = out[idx][:, idx]
            status = status[idx][:, idx]
    if n_failed:
        warnings.warn(
            f"fastgeo.pairwise_distances: {n_failed} of {n_pairs} geodesics did not converge; their "
            "entries hold the best length found (never longer than the straight line). "
            "Pass return_report=True for the mask, or raise max_iter.",
            RuntimeWarning,
            stacklevel=2,
        )
    if not return_report:
        return out
    report = PairwiseReport(
        converged=status > 0,
        iterations=status.abs() - 1,
        n_pairs=n_pairs,
        n_converged=n_conv,
        n_failed=n_failed,
        chunk_size=layout.chunk_size,
        chunks_total=layout.n_chunks,
        chunks_computed=int(counts[2]),
        chunks_loaded=int(counts[3]),
        wall_time=time.perf_counter() - t_start,
        decoder_evals=int(counts[0]),
        decoder_jvps=int(counts[1]),
        options={"symmetric": Y is None, "world_size": world, **options},
    )
    return out, report
