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


def _run(tmp_path: Path, script: str, *argv: str, env: dict[str, str] | None = None) -> str:
    pytest.importorskip("broadcaster", reason="the bench extra is not installed")
    pytest.importorskip("socketio", reason="the bench extra is not installed")
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *argv], cwd=BENCHMARKS.parent, capture_output=True, text=True,
        env={**os.environ, "BENCH_RESULTS": str(tmp_path), **(env or {})}, timeout=110, check=False,
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
def test_the_frame_cost_benchmark_counts_per_frame_whole_filtered_and_unwatched(tmp_path: Path) -> None:
    # --tool switches: the same server and clients as callgrind's runs, without valgrind.
    out = _run(tmp_path, "bench_framecost.py", "--tool", "switches", "--clients", "5", "--frames", "3",
               "--unwatched", "20")
    assert "switches: 5 clients, 3 frames each; unwatched: 20 posts" in out
    for scenario in ("whole", "filtered"):
        for mode in ("back to back", "paced"):
            assert f"{scenario}, {mode}: context switches per frame:" in out
    assert "unwatched, paced: context switches per post:" in out


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


@pytest.mark.timeout(120)
def test_the_broadcast_benchmark_runs_only_the_scenarios_named_and_states_issue_14s_latency_targets(
    tmp_path: Path,
) -> None:
    out = _run(tmp_path, "bench_broadcast.py", "--quick", "--only", "single", "memory", "--clients", "8",
               "--idle", "50", "--single-repeats", "2", "--contenders", "notify")
    results = json.loads((tmp_path / "broadcast-single-memory.json").read_text())
    assert results["meta"]["scenarios"] == ["single", "memory"]
    assert results["throughput"] == [] and results["stalled"] is None and results["workers"] is None
    assert set(results["single"]["runs"]) == set(results["memory"]["runs"]) == {"bare", "notify"}
    assert results["single"]["stalled"] == 1  # 1% of 8, at least one
    assert "| clients | burst |" not in out and "clients stalled |" not in out
    assert "issue 14: p99 of one notification to all 7 healthy clients" in out
    assert "issue 14: one notification within 1.1× / 1.25× of the bare loop at p50 / p99, none stalled" in out
    assert "p99 over 2 broadcasts is their maximum (nearest rank)" in out  # says when it is no p99
    assert "memory per idle connection ≤ bare + 10% (50 connections)" in out
    # Every server and client process got the driver's file-descriptor limit.
    assert results["meta"]["nofile"]["server"] == results["meta"]["nofile"]["driver"]


@pytest.mark.timeout(120)
def test_the_broadcast_benchmark_at_two_workers_delivers_a_burst_published_in_one_to_the_clients_of_both(
    tmp_path: Path, redis_url: str,
) -> None:
    out = _run(tmp_path, "bench_broadcast.py", "--quick", "--only", "workers", "--workers", "2", "--clients", "10",
               "--messages", "3", "--client-procs", "2", env={"SQLA_NOTIFY_REDIS_URL": redis_url})
    workers = json.loads((tmp_path / "broadcast-workers.json").read_text())["workers"]
    assert not workers["failed"]
    assert len({s["pid"] for s in workers["servers"]}) == 3  # one server, then the two workers
    one, two = workers["runs"]["one"][0], workers["runs"]["workers"][0]
    # All 10 clients got all 3 frames either way; the publishing worker served only its half.
    assert (one["clients"], one["delivered_share"], one["server_clients"]) == (10, 1.0, 10)
    assert (two["clients"], two["delivered_share"], two["server_clients"]) == (10, 1.0, 5)
    # The other worker delivered the burst it read back from the shared stream.
    other = workers["hub_stats"][2 - two["publisher"]]
    assert other["connections"] == 5 and other["published"] >= 3
    assert "**2 processes / one** (paired by round)" in out


@pytest.mark.timeout(120)
@pytest.mark.parametrize("action", ["insert", "update", "delete"])
def test_the_instruction_count_driver_replays_the_capture_of_every_row(tmp_path: Path, action: str) -> None:
    out = _run(tmp_path, "instr_capture.py", action, "--filter-old", "--rows", "30", "--replay", "2")
    assert out.strip() == f"{action}: 30 notification(s) published, replays recorded [30, 30]"
