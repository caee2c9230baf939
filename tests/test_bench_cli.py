"""``fastgeo bench`` end to end at smoke-test sizes: the JSON has the required fields, every
time is finite and positive, and every ratio is the one its rows' times give. No wall-clock
assertions (benchmarks are not tests)."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pytest

from fastgeo.cli import main

ENV_FIELDS = ("fastgeo_version", "git_commit", "torch_version", "triton_version", "device", "cpu_model",
              "threads")  # fmt: skip


def _positive(v: object) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def test_bench_ops_tiny(tmp_path, capsys):
    """The ops layer at --tiny sizes on one thread: the three ops, both modes, the reference among
    the backends; per row the environment fields, a well-formed commit, positive times, and the
    ratio to the reference row of its group (same op, mode, batch, threads) from the two times."""
    out = tmp_path / "bench"
    # --tiny: hidden smoke-test sizes; one thread: tiny ops stall on OpenMP on a shared machine
    rc = main(["bench", "--quick", "--tiny", "--threads", "1", "--layer", "ops", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "rbf_segment_sqdist" in printed and "vs reference" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["layers"] == ["ops"]
    rows = results["results"]
    assert rows and all(r["layer"] == "ops" for r in rows)
    assert {r["op"] for r in rows} == {"rbf_precision", "segment_sqdist", "rbf_segment_sqdist"}
    assert {r["mode"] for r in rows} == {"fwd", "fwd+bwd"}
    assert "reference" in {r["backend"] for r in rows}
    for r in rows:
        for k in ENV_FIELDS:
            assert k in r, k
        assert r["threads"] == 1 and r["dtype"] == "float32" and r["shape"] and r["shapes"]
        assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?|unknown", r["git_commit"]), r["git_commit"]
        assert isinstance(r["cpu_model"], str) and r["cpu_model"].strip()
        t = r["time_s"]
        assert _positive(t["min"]) and _positive(t["median"]) and t["rounds"] >= 1 and t["number"] >= 1
    reference = {
        (r["op"], r["mode"], r["batch"], r["threads"]): r["time_s"]["min"]
        for r in rows
        if r["backend"] == "reference"
    }
    for r in rows:
        ref_time = reference[r["op"], r["mode"], r["batch"], r["threads"]]
        assert r["ratio_vs_reference"] == pytest.approx(ref_time / r["time_s"]["min"], rel=1e-12), r


def test_bench_pairwise_tiny(tmp_path, capsys):
    """The pairwise layer at --tiny sizes: exact- and draft-mode rows and a graph-mode row, each with
    all M (M-1) / 2 pairs, positive times, and for the approximate modes their measured error on a
    sample."""
    out = tmp_path / "bench"
    rc = main(["bench", "--quick", "--tiny", "--threads", "1", "--layer", "pairwise", "--out", str(out)])
    assert rc == 0
    assert "error mean / max %" in capsys.readouterr().out
    rows = json.loads((out / "results.json").read_text())["results"]
    assert {r["mode"] for r in rows} == {"exact", "draft", "graph"}
    for r in rows:
        assert r["geodesics"] == r["M"] * (r["M"] - 1) // 2
        assert _positive(r["time_s"]["min"]) and _positive(r["time_per_geodesic_s"])
        if r["mode"] == "exact":
            assert r["error_mean_pct"] is None and r["graph_edges"] is None
        else:
            assert r["error_pairs"] > 0 and ((r["graph_edges"] or 0) > 0) == (r["mode"] == "graph")
            assert math.isfinite(r["error_mean_pct"]) and math.isfinite(r["error_max_pct"])
            assert r["error_max_pct"] >= r["error_mean_pct"]


def test_quick_duration_is_the_same_in_help_and_readme(capsys):
    """``fastgeo bench --help`` and README.md state one duration for ``--quick``."""
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    in_help = re.search(r"--quick small sizes \(([^)]*)\)", help_text)
    readme = " ".join((Path(__file__).parents[1] / "README.md").read_text().split())
    in_readme = re.search(r"`fastgeo bench --quick[^`]*` \(([^)]*)\)", readme)
    assert in_help and in_readme
    assert in_help.group(1) == in_readme.group(1), (in_help.group(1), in_readme.group(1))


def test_bench_and_demo_options_are_checked_first(tmp_path, capsys, monkeypatch):
    """A device this torch lacks, --threads 0 and an --out that is a file: one line each, before
    any benchmark or training runs."""
    import fastgeo.benchmarks.runner as runner
    import fastgeo.demo as demo

    monkeypatch.setattr(runner, "main", lambda *a, **k: pytest.fail("ran before checking"))
    monkeypatch.setattr(demo, "run_demo", lambda *a, **k: pytest.fail("ran before checking"))
    a_file = tmp_path / "results"
    a_file.write_text("x")
    for argv, words in (
        (["bench", "--device", "warp9"], ["--device"]),
        (["bench", "--threads", "0"], ["--threads", ">= 1"]),
        (["bench", "--out", str(a_file)], ["--out", "not a folder"]),
        (["demo", "--out", str(a_file)], ["--out", "not a folder"]),
        (["demo", "--seed", "-1"], ["--seed", ">= 0"]),
        (["demo", "--out", str(a_file / "sub" / "demo")], ["--out", "is not a folder"]),
        (["demo", "--out", ""], ["--out", "an empty path"]),  # was the current folder, silently
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and all(w in err[0] for w in words), err

    # A read-only folder (os.access says so; file modes alone do not stop root): refused first,
    # whether --out exists or would be made inside it.
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: real_access(p, mode) and Path(p) != read_only)
    for out in (read_only, read_only / "new" / "demo"):
        for command in ("demo", "bench"):
            assert main([command, "--out", str(out)]) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and "--out" in err[0] and "not writable" in err[0], err


def test_write_plots_leaves_pyplot_alone(tmp_path):
    """The report's PNGs are drawn on Figures of their own: the caller's pyplot backend and open
    figures are unchanged (a notebook keeps drawing inline after ``fastgeo.benchmarks``)."""
    plt = pytest.importorskip("matplotlib.pyplot")
    import matplotlib

    from fastgeo.benchmarks.report import write_plots

    rows = [
        {"layer": "solver", "method": m, "pairs": 4, "time_s": {"min": t},
         "mean_excess_pct": e, "worst_excess_pct": 2 * e}
        for m, t, e in (("default", 0.5, 0.01), ("paper", 0.2, 1.0))
    ] + [
        {"layer": "pairwise", "mode": "exact", "M": m, "time_s": {"min": 0.01 * m * m}} for m in (8, 16)
    ]  # fmt: skip
    backend = matplotlib.get_backend()
    plt.switch_backend("pdf")
    try:
        paths = write_plots({"results": rows}, str(tmp_path / "plots"))
        assert matplotlib.get_backend().lower() == "pdf" and plt.get_fignums() == []
    finally:
        plt.switch_backend(backend)
    assert sorted(os.path.basename(p) for p in paths) == ["pairwise.png", "solver.png"]
    for p in paths:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_an_interrupted_bench_writes_the_layers_done(tmp_path, capsys, monkeypatch):
    """Ctrl-C during a layer: the layers finished before it are printed and written (nothing was),
    the file says which layer stopped, and the command returns 130."""
    from fastgeo.benchmarks import runner

    def interrupted(settings, device, log):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_pairwise", interrupted)
    out = tmp_path / "bench"
    args = ["--quick", "--tiny", "--threads", "1", "--layer", "ops", "pairwise", "--out", str(out)]
    assert main(["bench", *args]) == 130
    captured = capsys.readouterr()
    assert "rbf_segment_sqdist" in captured.out and "interrupted during [pairwise]" in captured.err
    results = json.loads((out / "results.json").read_text())
    assert results["interrupted"] == "pairwise" and {r["layer"] for r in results["results"]} == {"ops"}
