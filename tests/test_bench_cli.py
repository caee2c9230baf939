"""``fastgeo bench`` end to end at smoke-test sizes: the JSON has the required fields and every
time and ratio is finite and positive. No wall-clock assertions (benchmarks are not tests)."""

from __future__ import annotations

import json
import math

from fastgeo.cli import main

ENV_FIELDS = ("fastgeo_version", "git_commit", "torch_version", "triton_version", "device", "cpu_model",
              "threads")  # fmt: skip


def _positive(v: object) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def test_bench_ops_tiny(tmp_path, capsys):
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
        assert r["git_commit"] and r["cpu_model"]
        t = r["time_s"]
        assert _positive(t["min"]) and _positive(t["median"]) and t["rounds"] >= 1
        assert t["min"] <= t["median"]
        assert _positive(r["ratio_vs_reference"])
