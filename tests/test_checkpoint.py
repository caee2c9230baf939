"""Resumable pairwise_distances: kill -9 mid-run, resume, same matrix bit for bit; foreign
checkpoints refused."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from analytic import bumpy_metric, disc_points

import fastgeo

TESTS = Path(__file__).resolve().parent
ROOT = Path(fastgeo.__file__).resolve().parent.parent
M, CHUNK, OPTS = 7, 4, {"max_iter": 20}  # 21 pairs -> 6 chunks

WORKER = """
import sys, time
sys.path.insert(0, {tests!r})
import torch
torch.set_num_threads({threads})
import analytic, fastgeo
import fastgeo.pairwise.checkpoint as fd

save = fd.Checkpoint.save
def save_then_hang(self, c, rec):
    save(self, c, rec)
    if self.finished() >= 2:  # two chunks safely on disk: signal the parent, then wait for the kill
        open({marker!r}, "w").close()
        time.sleep(600)
fd.Checkpoint.save = save_then_hang
fastgeo.pairwise_distances(analytic.bumpy_metric(), analytic.disc_points({M}, 1.5), chunk_size={chunk},
                           checkpoint={ckpt!r}, progress=False, workers=1, **{opts!r})
"""


def run(ckpt=None, **kw):
    return fastgeo.pairwise_distances(bumpy_metric(), disc_points(M, 1.5), chunk_size=CHUNK, checkpoint=ckpt,
                                      progress=False, return_report=True, **{"workers": 1, **OPTS, **kw})


def test_kill9_then_resume_equals_uninterrupted(tmp_path):
    """A worker killed (SIGKILL) after two of six chunks: the resumed run loads exactly those two,
    computes the other four, ignores a torn temporary file, and returns the uninterrupted run's
    matrix and report bit for bit; a third start solves nothing."""
    ckpt, marker = tmp_path / "ckpt", tmp_path / "two_chunks_written"
    script = WORKER.format(tests=str(TESTS), threads=torch.get_num_threads(), marker=str(marker), M=M,
                           chunk=CHUNK, ckpt=str(ckpt), opts=OPTS)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120  # a safety net, not a timing assertion
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(f"worker exited early ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("worker wrote no checkpoint chunk")
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # A write cut short by a kill leaves only a temporary file: it must be ignored.
    (ckpt / ".chunk_00000005.pt.abc123.tmp").write_bytes(b"\x00garbage")

    D, report = run(ckpt)
    assert report.chunks_total == 6 and report.chunks_loaded == 2 and report.chunks_computed == 4
    D_ref, ref = run(None)
    assert torch.equal(D, D_ref)  # bit for bit
    assert torch.equal(report.converged, ref.converged) and torch.equal(report.iterations, ref.iterations)
    # A third start solves nothing.
    D3, report3 = run(ckpt)
    assert report3.chunks_computed == 0 and report3.chunks_loaded == 6 and torch.equal(D3, D_ref)


@pytest.mark.filterwarnings("ignore:fastgeo.pairwise_distances")
def test_foreign_checkpoint_is_refused(tmp_path):
    """A checkpoint folder written for other inputs (Z, options, chunk layout, metric, Y, or a
    decoder module whose parameters changed) is refused with a ValueError naming what differs."""
    ckpt = tmp_path / "ckpt"
    metric, Z = bumpy_metric(), disc_points(5, 1.5)
    fastgeo.pairwise_distances(metric, Z, chunk_size=3, checkpoint=ckpt, progress=False, **OPTS)
    again, rep = fastgeo.pairwise_distances(metric, Z, chunk_size=3, checkpoint=ckpt, progress=False,
                                            return_report=True, **OPTS)
    assert rep.chunks_computed == 0
    cases = {
        "Z": dict(Z=Z + 1e-3),
        "options": dict(max_iter=21),
        "layout": dict(chunk_size=4),
        "metric": dict(metric=bumpy_metric(seed=1)),
        "Y": dict(Y=Z[:2]),
    }
    for component, change in cases.items():
        args = {"metric": metric, "Z": Z, "chunk_size": 3, **OPTS, **change}
        with pytest.raises(ValueError, match=f"different inputs.*{component}"):
            fastgeo.pairwise_distances(checkpoint=ckpt, progress=False, **args)
    # Changed decoder parameters of an nn.Module mean are caught too.
    lin = torch.nn.Linear(2, 6).double()
    m1 = fastgeo.ExpectedMetric(lin, metric.precision)
    fastgeo.pairwise_distances(m1, Z, checkpoint=tmp_path / "lin", progress=False, max_iter=2)
    with torch.no_grad():
        lin.weight[0, 0] += 1
    with pytest.raises(ValueError, match="metric"):
        fastgeo.pairwise_distances(m1, Z, checkpoint=tmp_path / "lin", progress=False, max_iter=2)


def test_checkpoint_path_must_be_a_folder(tmp_path):
    """A checkpoint path that is an existing file is refused."""
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        fastgeo.pairwise_distances(bumpy_metric(), disc_points(3, 1.0), checkpoint=f, progress=False)


def test_an_empty_checkpoint_path_is_refused(tmp_path, monkeypatch):
    """``checkpoint=""`` (a config's "none") made the current folder a checkpoint, files and all."""
    monkeypatch.chdir(tmp_path)
    for empty in ("", "  "):
        with pytest.raises(ValueError, match="checkpoint must name a folder, got an empty path"):
            fastgeo.pairwise_distances(bumpy_metric(), disc_points(3, 1.0), checkpoint=empty, progress=False)
    assert list(tmp_path.iterdir()) == []
