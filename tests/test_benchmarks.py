"""Every benchmark script starts and explains itself: ``--help`` exits 0 with its usage, so a
renamed import or option shows here rather than on the day someone measures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_every_benchmark_script_prints_its_help():
    scripts = sorted(BENCHMARKS.glob("*.py"))
    assert len(scripts) >= 10
    # All at once: each spends its time importing PyTorch.
    running = {
        script.name: subprocess.Popen(
            [sys.executable, str(script), "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for script in scripts
    }
    for name, process in running.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0 and "usage:" in out, f"{name} --help failed:\n{err[-2000:]}"
