"""The benchmark scripts still run: a tiny run of each scenario that needs no database.

They are not part of the package, but they read a few of the hub's private fields
(``benchmarks/contenders/hub.py``) and start real servers; a refactoring that breaks them
should fail here, not in the next benchmark run. Results go to a temporary directory
(``BENCH_RESULTS``), so ``benchmarks/results/`` is left alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def _run(tmp_path: Path, script: str, *argv: str) -> str:
    pytest.importorskip("broadcaster", reason="the bench extra is not installed")
    pytest.importorskip("socketio", reason="the bench extra is not installed")
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *argv], cwd=BENCHMARKS.parent, capture_output=True, text=True,
        env={**os.environ, "BENCH_RESULTS": str(tmp_path)}, timeout=110, check=False,
    )
    assert done.returncode == 0, f"{script} exited with {done.returncode}, expected 0; stderr:\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.timeout(120)
def test_the_writer_start_benchmark_runs_a_server_with_every_contender_and_prints_its_table(tmp_path: Path) -> None:
    out = _run(tmp_path, "bench_writer_start.py", "--rounds", "1", "--clients", "5", "--messages", "5", "--singles", "2")
    assert "| writers started | paced burst (ms) |" in out
    assert "Paced burst, chunked / all at once" in out
    runs = json.loads((tmp_path / "writer-start.json").read_text())["runs"]
    assert [len(r) for r in runs.values()] == [1, 1]


@pytest.mark.timeout(120)
def test_the_fanout_benchmark_measures_this_checkout(tmp_path: Path) -> None:
    out = _run(tmp_path, "bench_fanout.py", "--rounds", "1")
    assert "| checkout | ns per delivery" in out
    assert (tmp_path / "fanout.md").read_text() == out
