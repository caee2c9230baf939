"""Options of geodesics and pairwise_distances: one validation helper, errors that name the
argument (integers that are not bools, finite positive floats, booleans that are bools)."""

import re
import sys

import pytest
import torch
from analytic import bumpy_metric, disc_points

import fastgeo

CASES = [
    ({"batch_size": -1}, ValueError, "batch_size"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"batch_size": 2.0}, TypeError, "batch_size"),
    ({"refine": True}, TypeError, "refine"),
    ({"refine": 0}, ValueError, "refine"),
    ({"tol": "1e-5"}, TypeError, "tol"),
    ({"tol": float("inf")}, ValueError, "tol"),
    ({"tol": float("nan")}, ValueError, "tol"),
    ({"tol": -1e-5}, ValueError, "tol"),
    ({"graph": "no"}, TypeError, "graph"),
    ({"check_resolution": "no"}, TypeError, "check_resolution"),
    ({"check_resolution": 1}, TypeError, "check_resolution"),
    ({"warm_start": "yes"}, TypeError, "warm_start"),
    ({"explore": "yes"}, TypeError, "explore"),
    ({"explore": -1}, ValueError, "explore"),
    ({"max_iter": True}, TypeError, "max_iter"),
    ({"max_iter": 0}, ValueError, "max_iter must be an integer >= 1"),
    ({"n_points": 48.0}, TypeError, "n_points"),
    ({"n_points": 3}, ValueError, "n_points must be an integer >= 4"),  # B-splines: 2 control points
    ({"n_points": 2, "family": "legendre"}, ValueError, "n_points must be an integer >= 3"),
    ({"n_points": 3, "method": "dense"}, ValueError, "n_points must be an integer >= 4"),
    ({"latents": torch.full((5, 2), float("nan"), dtype=torch.float64)}, ValueError, "latents"),
    ({"latents": torch.zeros(5, 3, dtype=torch.float64)}, ValueError, "latents"),
    ({"linearize": "sometimes"}, ValueError, "linearize"),
    ({"linearize": 1}, ValueError, "linearize"),
]


@pytest.mark.parametrize(
    "kwargs", [{"n_points": 4}, {"n_points": 3, "family": "legendre"}, {"n_points": 4, "method": "dense"},
               {"n_points": 2, "method": "paper"}, {"n_points": 4, "method": "fast"}]
)  # fmt: skip
def test_the_fewest_points_each_method_takes_solve(kwargs):
    z = disc_points(3, 1.0)
    res = fastgeo.geodesics(bumpy_metric(), z, z.flip(0), **kwargs)
    assert bool(torch.isfinite(res.lengths).all())
    assert bool((res.lengths <= res.straight_lengths).all())


@pytest.mark.parametrize("kwargs,exc,match", CASES)
def test_geodesics_options(kwargs, exc, match):
    z = disc_points(3, 1.0)
    with pytest.raises(exc, match=match):
        fastgeo.geodesics(bumpy_metric(), z, z.flip(0), **kwargs)


@pytest.mark.parametrize("kwargs,exc,match", CASES)
def test_pairwise_options_are_checked_before_solving(kwargs, exc, match, monkeypatch):
    import fastgeo.pairwise.chunks as chunks

    calls = []
    monkeypatch.setattr(chunks, "geodesics", lambda *a, **k: calls.append(1))
    with pytest.raises(exc, match=match):
        fastgeo.pairwise_distances(bumpy_metric(), disc_points(4, 1.0), progress=False, **kwargs)
    assert not calls


def test_mean_whose_width_depends_on_the_batch_is_refused():
    prec = bumpy_metric().precision

    def odd(z):
        return torch.tanh(z @ torch.ones(2, 6 if z.shape[0] == 1 else 5, dtype=z.dtype))

    with pytest.raises(ValueError, match="mean maps"):
        fastgeo.ExpectedMetric(odd, prec)


OWN = [
    ({"chunk_size": True}, TypeError, "chunk_size"),
    ({"chunk_size": 0}, ValueError, "chunk_size"),
    ({"memory_budget": float("nan")}, ValueError, "memory_budget"),
    ({"memory_budget": 0}, ValueError, "memory_budget"),
    ({"progress": "no"}, TypeError, "progress"),
    ({"return_report": 1}, TypeError, "return_report"),
]


@pytest.mark.parametrize("kwargs,exc,match", OWN)
def test_pairwise_own_options(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fastgeo.pairwise_distances(bumpy_metric(), disc_points(4, 1.0), **kwargs)


def test_geodesics_progress_bar(capsys, monkeypatch):
    """``progress`` is a bool (or None: a bar once the call has run ``DELAY`` seconds); the bar
    (tqdm, on stderr) counts curves batch by batch, is redrawn with the decoder work between
    (one batch of slow curves shows that it runs; so does the latent graph's build, named) and
    changes no result."""
    pytest.importorskip("tqdm")
    z = disc_points(5, 1.0)
    with pytest.raises(TypeError, match="progress"):
        fastgeo.geodesics(bumpy_metric(), z, z.flip(0), progress=1)
    quiet = fastgeo.geodesics(bumpy_metric(), z, z.flip(0), batch_size=2, progress=False)
    assert "geodesics" not in capsys.readouterr().err
    shown = fastgeo.geodesics(bumpy_metric(), z, z.flip(0), batch_size=2, progress=True)  # 3 batches
    assert "geodesics" in capsys.readouterr().err
    assert torch.equal(quiet.lengths, shown.lengths)
    # Before the delay no bar (a delay no call reaches: a loaded machine must not fail this).
    monkeypatch.setattr(sys.modules["fastgeo.solver.geodesics"], "DELAY", float("inf"))
    fastgeo.geodesics(bumpy_metric(), z, z.flip(0))
    assert "geodesics" not in capsys.readouterr().err
    monkeypatch.setattr(sys.modules["fastgeo.solver.geodesics"], "DELAY", 0.0)
    one_batch = fastgeo.geodesics(bumpy_metric(), z, z.flip(0))  # past the delay: a bar
    err = capsys.readouterr().err
    assert "geodesics" in err and "decoder points" in err
    assert "building the latent graph" in err  # a new metric's graph, built in this call, is named
    assert torch.equal(quiet.lengths, one_batch.lengths)


def test_progress_bar_names_the_stages(capsys, monkeypatch):
    """While a batch of slow curves runs, the bar says which stage it is in (starts, the race of
    the starts; the refinement and the finer splines where they run), nested stages joined (a
    smoothed decoder's race)."""
    pytest.importorskip("tqdm")
    from fastgeo import _progress

    with _progress.phase("smoothed decoder 1/2"), _progress.phase("race: 8 starts on 24 points"):
        assert _progress._PHASE.get() == "smoothed decoder 1/2; race: 8 starts on 24 points"
    assert _progress._PHASE.get() is None
    monkeypatch.setattr(sys.modules["fastgeo.solver.geodesics"], "DELAY", 0.0)
    monkeypatch.setattr(_progress, "OFF_TERMINAL_INTERVAL", 0.0)  # every redraw written
    z = disc_points(5, 1.0)
    fastgeo.geodesics(bumpy_metric(), z, z.flip(0))
    err = capsys.readouterr().err
    assert "starts, decoder points" in err, err[-2000:]
    assert re.search(r"race: \d+ starts on 48 points", err), err[-2000:]  # 2-D: no coarser race


def test_progress_bars_redraw_seldom_off_a_terminal(monkeypatch):
    """A bar writing to a log file (stderr not a terminal) is redrawn every 30 s, not 5 times a
    second; on a terminal it stays lively."""
    pytest.importorskip("tqdm")
    import io
    import sys

    from fastgeo import _progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    cases = ((io.StringIO(), _progress.OFF_TERMINAL_INTERVAL), (Terminal(), _progress.TERMINAL_INTERVAL))
    for stream, interval in cases:
        monkeypatch.setattr(sys, "stderr", stream)
        bar = _progress.progress_bar(10, True, "test")
        assert bar.mininterval == interval
        bar.close()
    assert _progress.progress_bar(10, False, "test") is None


def test_progress_bars_write_lines_off_a_terminal(monkeypatch):
    """Off a terminal every redraw is a line of its own: no carriage returns joining them in a
    log, no blank lines where a bar is erased, the last state kept."""
    pytest.importorskip("tqdm")
    import io
    import sys

    from fastgeo import _progress

    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    monkeypatch.setattr(_progress, "OFF_TERMINAL_INTERVAL", 0.0)
    bar = _progress.progress_bar(3, True, "pairs")
    for _ in range(3):
        bar.update(1)
    bar.close()
    for _ in _progress.progress_iter(range(2), True, "batches"):  # erased when done
        pass
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines and all(line.strip() for line in lines)
    assert any(line.startswith("pairs") and "3/3" in line for line in lines)
    assert sum(line.startswith("pairs") for line in lines) >= 2, lines


@pytest.mark.parametrize(
    ("method", "d", "explore", "expected"),
    [("default", 2, None, 0), ("default", 4, None, 20), ("fast", 16, None, 20), ("fast", 3, None, 0),
     ("default", 2, True, 20), ("default", 12, False, 0), ("default", 12, 7, 7), ("paper", 12, 5, 0),
     ("dense", 12, None, 0)],
)  # fmt: skip
def test_explored_start_steps_per_method_and_dimension(method, d, explore, expected):
    """The explored start races by default where no graph paths do (d >= 4, default and fast);
    ``explore`` sets its Adam steps (True: the default 20), never for paper or dense."""
    from fastgeo.solver.options import solver_options

    opts = solver_options(torch.float32, d, 784, method=method, explore=explore)
    assert opts.explore_iter == expected
    assert opts.summary()["explore"] == expected


def test_logs_end_on_the_last_line_of_a_bar(monkeypatch):
    """Off a terminal (a log file) a bar that a terminal would erase when done still writes its
    last line, with the call's total decoder work (not the stage of a redraw up to 30 s old), so
    that a log does not end on its first line (0 %) as if the job had stalled."""
    pytest.importorskip("tqdm")
    import io

    from fastgeo import _progress

    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    monkeypatch.setattr(sys.modules["fastgeo.solver.geodesics"], "DELAY", 0.0)
    z = disc_points(5, 1.0)
    res = fastgeo.geodesics(bumpy_metric(), z, z.flip(0))
    last = log.getvalue().splitlines()[-1]
    assert last.startswith("geodesics") and "5/5" in last, last
    assert f"decoder points {res.decoder_evals + res.decoder_jvps:.3g}]" in last, last
    fastgeo.geodesics(bumpy_metric(), z[:2], z[2:4], method="dense", n_points=12)
    last = log.getvalue().splitlines()[-1]
    assert last.startswith("geodesics") and "2/2" in last, last  # the oracle's curves, counted at the end
    for _ in _progress.progress_iter(range(2), True, "batches"):
        pass
    last = log.getvalue().splitlines()[-1]
    assert last.startswith("batches") and "2/2" in last, last


def test_a_bar_shown_by_the_decoder_work_alone_ends_on_its_last_line(monkeypatch):
    """A call longer than its bar's delay whose count moves only at its end (the dense oracle's
    curves finish together): drawn first by the decoder work's redraws, it still writes its last
    line when done (tqdm took it for never shown, its log ended on "0/3")."""
    pytest.importorskip("tqdm")
    import io
    import time

    from fastgeo import _progress

    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    with _progress.call_bar(3, True, "geodesics", "curve", delay=0.05) as bar:
        time.sleep(0.1)
        _progress.pulse(10)  # drawn: 0/3
        bar.update(3)  # within the 30 s redraw interval off a terminal: not drawn
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and "0/3" in lines[0], lines
    assert "3/3" in lines[1] and "decoder points 10]" in lines[1], lines


def test_nearest_neighbors_bars_show_the_solves_at_work(capsys, monkeypatch):
    """Each round's bar of ``nearest_neighbors`` (one worker) is redrawn by the solves it runs,
    with their stage and decoder work, as the matrix's bar is."""
    pytest.importorskip("tqdm")
    from fastgeo import _progress

    monkeypatch.setattr(_progress, "OFF_TERMINAL_INTERVAL", 0.0)
    fastgeo.nearest_neighbors(bumpy_metric(), disc_points(6, 1.0), 1, workers=1, progress=True, max_iter=20)
    err = capsys.readouterr().err
    assert re.search(r"neighbours, round 1: .*(starts|race|refinement).*decoder points", err), err[-2000:]
