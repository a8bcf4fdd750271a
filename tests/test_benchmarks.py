"""The benchmark scripts still run: a tiny run of each scenario that needs no database.

They are not part of the package, but they read a few of the hub's private fields
(``benchmarks/contenders/hub.py``) and start real servers; a refactoring that breaks them
should fail here, not in the next benchmark run. Results go to a temporary directory
(``BENCH_RESULTS``), so ``benchmarks/results/`` is left alone.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def _module(name: str) -> Any:
    """A benchmark script imported as a module (with its neighbours importable, as when run)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


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
def test_the_frame_cost_benchmark_counts_per_frame_whole_split_filtered_and_unwatched(tmp_path: Path) -> None:
    # --tool switches: the same server and clients as callgrind's runs, without valgrind.
    out = _run(tmp_path, "bench_framecost.py", "--tool", "switches", "--clients", "5", "--frames", "3",
               "--unwatched", "20")
    assert "switches: 5 clients, 3 frames each; unwatched: 20 posts" in out
    for scenario in ("whole", "split", "filtered"):
        for mode in ("back to back", "paced"):
            assert f"{scenario}, {mode}: context switches per frame:" in out
    assert "unwatched, paced: context switches per post:" in out


def test_the_frame_cost_benchmark_states_filtered_against_split_and_whole_per_frame() -> None:
    bench_framecost = _module("bench_framecost")
    rows = [{"scenario": s, "mode": m, "frames": 10, "instructions": i * 10}
            for s, i in (("whole", 20_000), ("split", 40_000), ("filtered", 50_000)) for m in ("back to back", "paced")]
    assert bench_framecost.ratios(rows) == [
        "filtered / split, back to back: 1.25", "filtered / split, paced: 1.25",
        "filtered / whole, back to back: 2.50", "filtered / whole, paced: 2.50",
    ]
    # Split's collections are as long as "posts": its frames are the size of the others.
    assert len(bench_framecost.split_name(9_999)) == len("posts")


@pytest.mark.timeout(120)
def test_the_filtered_broadcast_benchmark_delivers_each_client_its_forum_and_prints_the_targets(tmp_path: Path) -> None:
    out = _run(tmp_path, "bench_broadcast.py", "--filtered", "--clients", "12", "6", "--messages", "3",
               "--unwatched", "500", "--rounds", "1")
    assert ("| clients | mode | server CPU per delivered frame: whole | split | filtered | **filtered / split** "
            "| filtered / whole |") in out
    assert "a post to a forum nobody watches costs O(1)" in out
    assert "| clients | mode | server CPU per post to a forum nobody watches | of which GC |" in out
    results = json.loads((tmp_path / "broadcast-filtered.json").read_text())
    assert not results["summary"]["failed"]
    for block, clients in zip(results["runs"], (12, 6)):
        assert block["clients"] == clients
        for mode in ("burst", "paced"):
            whole, split, filtered, unwatched = (block["runs"][mode][c][0]
                                                 for c in ("whole", "split", "filtered", "unwatched"))
            # The same frames each way (each client got exactly its 3: the run checks it),
            # from 3 posts to everyone against 3 per collection or forum, one client each.
            assert (whole["frames"], whole["published"]) == (clients * 3, 3)
            for one_each in (split, filtered):
                assert (one_each["frames"], one_each["published"]) == (clients * 3, clients * 3)
                assert one_each["delivered_share"] == 1.0 and one_each["extra_frames"] == 0
            assert (unwatched["frames"], unwatched["published"]) == (0, 500)
        # Nobody watches the unwatched forums: the filtered hub sent only welcomes and the bursts.
        for hub in ("split", "filtered"):
            stats = block["hub_stats"][hub]
            assert stats["frames_sent"] == clients * (1 + 10 + 3 * 2)  # welcome, warm-up, a burst per mode
            assert stats["published"] == (0 if hub == "split" else 10 * clients + 500 * 2) + clients * (10 + 3 * 2)


def test_the_filtered_report_judges_filtered_against_split_and_against_whole() -> None:
    report = _module("broadcast_report")

    def run(cpu: float, frames: int, published: int) -> dict[str, float]:
        return {"server_cpu_s": cpu, "server_gc_cpu_s": 0.0, "frames": frames, "published": published}

    # 1,000 frames each: whole from one post, split and filtered from 1,000.
    runs = {"whole": [run(0.010, 1000, 1)], "split": [run(0.020, 1000, 1000)],
            "filtered": [run(0.023, 1000, 1000)], "unwatched": [run(0.005, 0, 1000)]}
    summary = report.filtered_summary([{"clients": 1000, "runs": {"burst": runs}, "failed": ""}])
    assert {k: (v["measured"], v["met"]) for k, v in summary["targets"].items()} == {
        "ratio_to_split": (pytest.approx(1.15), True), "ratio_per_frame": (pytest.approx(2.3), False)}
    table = report.filtered_render(summary)
    assert ("| server CPU per delivered frame, filtered ≤ 1.2× split: a collection of its own each, one frame per "
            "post (like for like) (1,000 clients, back to back) | 1.15× | **met** |") in table
    assert "filtered ≤ 1.2× whole: one post to all (literal; a filtered frame carries a whole post) " in table
    assert "| 2.30× | **missed** |" in table


@pytest.mark.timeout(120)
def test_the_broadcast_benchmark_runs_only_the_scenarios_named_and_states_issue_14s_latency_targets(
    tmp_path: Path,
) -> None:
    out = _run(tmp_path, "bench_broadcast.py", "--quick", "--only", "single", "memory", "--clients", "8",
               "--idle", "50", "--single-repeats", "2", "--contenders", "notify", "--pin")
    results = json.loads((tmp_path / "broadcast-single-memory.json").read_text())
    assert results["meta"]["scenarios"] == ["single", "memory"]
    assert results["throughput"] == [] and results["stalled"] is None and results["workers"] is None
    assert set(results["single"]["runs"]) == set(results["memory"]["runs"]) == {"bare", "notify"}
    assert results["single"]["stalled"] == 1  # 1% of 8, at least one
    assert "| clients | burst |" not in out and "clients stalled |" not in out
    assert "issue 14: p99 of one notification to all 7 healthy clients" in out
    assert "issue 14: one notification within 1.1× / 1.25× of the bare loop at p50 / p99, none stalled" in out
    assert "p99 over 2 broadcasts is their maximum (nearest rank)" in out  # says when it is no p99
    assert results["meta"]["pinned"] is True
    assert "pinned (--pin): servers on one CPU" in (tmp_path / "broadcast-single-memory.md").read_text()
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


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pinning apart needs two CPUs")
def test_pinning_puts_a_server_on_one_cpu_and_the_load_generator_on_the_others_only_when_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    harness = _module("harness")
    cpus = sorted(os.sched_getaffinity(0))
    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(3)]
    try:
        harness.pin(procs[0].pid, "server")  # BENCH_PIN unset: left alone
        monkeypatch.setenv("BENCH_PIN", "1")
        harness.pin(procs[1].pid, "server")
        harness.pin(procs[2].pid, "clients")
        assert [sorted(os.sched_getaffinity(p.pid)) for p in procs] == [cpus, cpus[:1], cpus[1:]]
    finally:
        for p in procs:
            p.kill()
            p.wait()
