"""Every benchmark script starts and explains itself: ``--help`` exits 0 with its usage, so a
renamed import or option shows here rather than on the day someone measures."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(BENCHMARKS.glob("*.py"))


def test_the_benchmarks_are_found():
    assert len(SCRIPTS) >= 10


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_benchmark_script_prints_its_help(script, monkeypatch, capsys):
    # In this process, as `python benchmarks/<script> --help` would run it (benchmarks/ on the
    # path): a subprocess per script would spend its time importing PyTorch again.
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.setattr(sys, "argv", [str(script), "--help"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(script), run_name="__main__")
    assert exit_.value.code == 0 and "usage:" in capsys.readouterr().out


def test_the_trace_auc_matches_counting_every_pair(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from training_trace import auc

    rng = np.random.default_rng(0)
    scores, labels = rng.random(300), rng.random(300) < 0.2
    pairs = (scores[labels][:, None] > scores[~labels][None, :]).mean()
    assert auc(scores, labels) == pytest.approx(pairs, abs=1e-12)
