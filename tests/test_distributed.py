"""pairwise_distances under torch.distributed: 2 CPU processes (gloo) split the chunks and both
return the single-process matrix; they can share a checkpoint folder."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from analytic import bumpy_metric, disc_points

import fastgeo

TESTS = Path(__file__).resolve().parent
ROOT = Path(fastgeo.__file__).resolve().parent.parent
M, CHUNK, OPTS = 6, 4, {"max_iter": 20}  # 15 pairs -> 4 chunks, 2 per rank

# Both ranks' scripts start alike: the tests importable, one gloo group of two ranks.
WORKER_HEAD = """
import sys
sys.path.insert(0, {tests!r})
import torch
import torch.distributed as dist
torch.set_num_threads({threads})
import analytic, fastgeo
rank = int(sys.argv[1])
dist.init_process_group("gloo", init_method={init!r}, rank=rank, world_size=2)
metric, Z = analytic.bumpy_metric(), analytic.disc_points({M}, 1.5)
"""
WORKER = WORKER_HEAD + """\
D, report = fastgeo.pairwise_distances(metric, Z, chunk_size={chunk}, checkpoint={ckpt!r}, progress=False,
                                       return_report=True, **{opts!r})
torch.save({{"D": D, "converged": report.converged, "iterations": report.iterations,
            "computed": report.chunks_computed}}, {out!r} + str(rank))
dist.destroy_process_group()
"""


def run_two_ranks(script: str) -> None:
    """``script`` as ranks 0 and 1 of a gloo group, in two processes; both must succeed."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-c", script, str(r)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for r in range(2)]  # fmt: skip
    try:
        for p in procs:
            _, err = p.communicate(timeout=240)
            assert p.returncode == 0, err.decode()[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_two_gloo_processes_match_single_process(tmp_path):
    """Two gloo processes sharing a checkpoint folder each return the single-process matrix and
    report bit for bit, computing the 4 chunks between them; a single process then resumes with
    nothing to solve."""
    ckpt, out = tmp_path / "ckpt", str(tmp_path / "out")
    script = textwrap.dedent(WORKER.format(
        tests=str(TESTS), threads=torch.get_num_threads(), init=f"file://{tmp_path / 'rendezvous'}",
        M=M, chunk=CHUNK, ckpt=str(ckpt), opts=OPTS, out=out))
    run_two_ranks(script)
    # in this process at the workers' thread count (last bits may differ across thread counts)
    D, report = fastgeo.pairwise_distances(bumpy_metric(), disc_points(M, 1.5), chunk_size=CHUNK, workers=1,
                                           progress=False, return_report=True, **OPTS)
    for r in range(2):
        res = torch.load(out + str(r))
        assert torch.equal(res["D"], D)  # every rank has the full matrix, bit for bit
        assert torch.equal(res["converged"], report.converged)
        assert torch.equal(res["iterations"], report.iterations)
        assert res["computed"] == 4  # all ranks together
    # The shared checkpoint holds every chunk: a single process resumes with nothing to solve.
    D2, rep2 = fastgeo.pairwise_distances(bumpy_metric(), disc_points(M, 1.5), chunk_size=CHUNK,
                                          checkpoint=ckpt, progress=False, return_report=True, **OPTS)
    assert rep2.chunks_loaded == 4 and rep2.chunks_computed == 0 and torch.equal(D2, D)


GRAPH_WORKER = WORKER_HEAD + """\
D, report = fastgeo.pairwise_distances(metric, Z, mode="graph", neighbors=3, error_sample=6,
                                       chunk_size={chunk}, progress=False, return_report=True, **{opts!r})
torch.save({{"D": D, "status": report.status_code, "error": report.graph_error.mean,
            "evals": report.decoder_evals}}, {out!r} + str(rank))
dist.destroy_process_group()
"""


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_graph_mode_two_gloo_processes_match_single_process(tmp_path):
    """Graph mode: the two processes split the edges and the error sample, and each returns the
    single-process matrix, statuses and error."""
    out = str(tmp_path / "out")
    script = textwrap.dedent(GRAPH_WORKER.format(
        tests=str(TESTS), threads=torch.get_num_threads(), init=f"file://{tmp_path / 'rendezvous'}",
        M=M + 2, chunk=CHUNK, opts=OPTS, out=out))  # fmt: skip
    run_two_ranks(script)
    D, report = fastgeo.pairwise_distances(
        bumpy_metric(), disc_points(M + 2, 1.5), mode="graph", neighbors=3, error_sample=6, chunk_size=CHUNK,
        workers=1, progress=False, return_report=True, **OPTS,
    )  # fmt: skip
    for r in range(2):
        res = torch.load(out + str(r))
        assert torch.equal(res["D"], D)
        assert torch.equal(res["status"], report.status_code)
        assert res["error"] == report.graph_error.mean
        assert res["evals"] >= report.decoder_evals  # each process builds its own latent graph too


NEIGHBORS_WORKER = WORKER_HEAD + """\
res = fastgeo.nearest_neighbors(metric, Z, 2, chunk_size=2, progress=False, **{opts!r})
torch.save({{"indices": res.indices, "distances": res.distances, "pairs": res.pairs_solved}},
           {out!r} + str(rank))
dist.destroy_process_group()
"""


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_nearest_neighbors_split_over_two_gloo_processes(tmp_path):
    """Two gloo processes split each round's pairs and both return the single-process neighbours."""
    out = str(tmp_path / "out")
    script = textwrap.dedent(NEIGHBORS_WORKER.format(
        tests=str(TESTS), threads=torch.get_num_threads(), init=f"file://{tmp_path / 'rendezvous'}",
        M=9, opts=OPTS, out=out))  # fmt: skip
    run_two_ranks(script)
    res = fastgeo.nearest_neighbors(bumpy_metric(), disc_points(9, 1.5), 2, chunk_size=2, workers=1,
                                    progress=False, **OPTS)  # fmt: skip
    for r in range(2):
        got = torch.load(out + str(r))
        assert torch.equal(got["indices"], res.indices) and torch.equal(got["distances"], res.distances)
        assert got["pairs"] == res.pairs_solved


OUT_WORKER = WORKER_HEAD + """\
D = fastgeo.pairwise_distances(metric, Z, chunk_size={chunk}, out={npy!r}, progress=False, **{opts!r})
torch.save(D.clone(), {out!r} + str(rank))
dist.destroy_process_group()
"""


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_two_gloo_processes_write_one_out_file(tmp_path):
    """With ``out=`` under torch.distributed, the file holds the single-process matrix (once, not
    summed over ranks sharing its mapping), and every rank returns that matrix."""
    import numpy as np

    out, npy = str(tmp_path / "out"), str(tmp_path / "D.npy")
    script = textwrap.dedent(OUT_WORKER.format(
        tests=str(TESTS), threads=torch.get_num_threads(), init=f"file://{tmp_path / 'rendezvous'}",
        M=M, chunk=CHUNK, opts=OPTS, out=out, npy=npy))  # fmt: skip
    run_two_ranks(script)
    D = fastgeo.pairwise_distances(bumpy_metric(), disc_points(M, 1.5), chunk_size=CHUNK, workers=1,
                                   progress=False, **OPTS)  # fmt: skip
    assert torch.equal(torch.from_numpy(np.load(npy)), D)
    for r in range(2):
        assert torch.equal(torch.load(out + str(r)), D)
