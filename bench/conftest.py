"""Shared pieces of the CPU benchmarks: a session-wide results table printed at the end, with the
ratios side by side (reference / cpu, cpu / bare torch.mm) and the peak extra memory."""

from __future__ import annotations

import pytest
from workloads import environment_line

CPU_RESULTS: list[dict] = []


@pytest.fixture
def cpu_results() -> list[dict]:
    """Append one dict per timed (case, mode, impl, threads) to this list."""
    return CPU_RESULTS


def _fmt_mb(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def _time(row: dict | None) -> str:
    return "-" if row is None or row["min"] is None else f"{row['min']:.4f} ({row['median']:.4f})"


def _ratio(a: dict | None, b: dict | None) -> str:
    if not a or not b or a["min"] is None or b["min"] is None:
        return "-"
    return f"{a['min'] / b['min']:.2f}"


def _table_row(rows: dict[str, dict], mode: str, threads: int) -> str:
    """One markdown row from {impl: result} of one (case, mode, threads)."""
    first = next(iter(rows.values()))
    ref, cpu, mm, mm_out = (rows.get(k) for k in ("reference", "cpu", "torch.mm", "torch.mm out="))
    cells = [
        first["op"], first["shape"], first["dtype"], mode, str(threads),
        _time(ref), _time(cpu), _time(mm), _time(mm_out),
        _ratio(ref, cpu), _ratio(cpu, mm), _ratio(cpu, mm_out),
        _fmt_mb(ref and ref.get("peak_mb")), _fmt_mb(cpu and cpu.get("peak_mb")),
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


HEADER = (
    "| op | shape | dtype | mode | threads | reference s | cpu s | torch.mm s | torch.mm out= s "
    "| ratio ref/cpu | cpu/mm | cpu/mm out= | peak extra MiB ref | peak extra MiB cpu |"
)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not CPU_RESULTS:
        return
    w = terminalreporter.write_line
    w("")
    w("fastgeo CPU benchmark (times: min over rounds, median in parentheses; ratio = reference / cpu)")
    w(environment_line() + " (threads available; each row gives its own)")
    w("")
    w(HEADER)
    w("|" + " --- |" * (HEADER.count("|") - 1))
    groups: dict[tuple, dict[str, dict]] = {}
    for r in CPU_RESULTS:
        groups.setdefault((r["case"], r["mode"], r["threads"]), {})[r["impl"]] = r
    for (_, mode, threads), rows in groups.items():
        w(_table_row(rows, mode, threads))
