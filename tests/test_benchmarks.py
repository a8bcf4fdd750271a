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


@pytest.mark.timeout(120)
def test_the_post_cost_benchmark_counts_collections_over_a_burst(tmp_path: Path) -> None:
    out = _run(tmp_path, "bench_postcost.py", "--gc-only", "--burst", "2000", "--loop", "asyncio")
    assert "| scenario | checkout | collections (gen 0, 1, 2) |" in out
    assert (tmp_path / "postcost.md").read_text() == out
    gc_runs = json.loads((tmp_path / "postcost.json").read_text())["gc"]
    assert sorted(gc_runs) == ["unwatched/this", "watched/this"]


@pytest.mark.timeout(120)
def test_the_filtered_broadcast_benchmark_delivers_each_client_its_forum_and_prints_the_targets(tmp_path: Path) -> None:
    out = _run(tmp_path, "bench_broadcast.py", "--filtered", "--clients", "12", "6", "--messages", "3",
               "--unwatched", "500", "--rounds", "1")
    assert "| clients | mode | server CPU per delivered frame: whole | filtered | **filtered / whole**" in out
    assert "a post to a forum nobody watches costs O(1)" in out
    assert "| clients | mode | server CPU per post to a forum nobody watches | of which GC |" in out
    results = json.loads((tmp_path / "broadcast-filtered.json").read_text())
    assert not results["summary"]["failed"]
    for block, clients in zip(results["runs"], (12, 6)):
        assert block["clients"] == clients
        for mode in ("burst", "paced"):
            whole, filtered, unwatched = (block["runs"][mode][c][0] for c in ("whole", "filtered", "unwatched"))
            # The same frames either way (each client got exactly its 3: the run checks it),
            # from 3 posts to everyone against 3 per forum, one client each.
            assert (whole["frames"], whole["published"]) == (clients * 3, 3)
            assert (filtered["frames"], filtered["published"]) == (clients * 3, clients * 3)
            assert filtered["delivered_share"] == 1.0 and filtered["extra_frames"] == 0
            assert (unwatched["frames"], unwatched["published"]) == (0, 500)
        # Nobody watches the unwatched forums: the filtered hub sent only welcomes and the bursts.
        stats = block["hub_stats"]["filtered"]
        assert stats["frames_sent"] == clients * (1 + 10 + 3 * 2)  # welcome, warm-up, a burst per mode
