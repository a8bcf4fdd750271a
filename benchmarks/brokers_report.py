"""The tables of ``bench_brokers.py``: latency per configuration, the sustained-rate ramp with
the CPU shares of the step that failed (and a guess at its bottleneck), and the targets. The
bounds a step is judged by come from the results' ``meta``."""

from __future__ import annotations

import os
from typing import Any

LABELS = {"inproc": "in-process `Hub()` (baseline)", "redis": "Redis Streams", "postgres": "PostgreSQL LISTEN/NOTIFY"}


def _bottleneck(step: dict[str, Any], late_bound: float) -> str:
    """A guess, from the CPU shares while the commits ran, at what stopped the step."""
    cpu = step["cpu"]
    parts = []
    if max(cpu["servers"]) >= 0.85:
        parts.append(f"the server processes ({max(cpu['servers']):.0%} CPU, event loop {max(cpu['server_loops']):.0%})")
    for name in ("redis", "postgres"):
        if cpu[name] is not None and cpu[name] >= 0.85:
            parts.append(f"{name} ({cpu[name]:.0%} CPU)")
    if cpu["clients"] >= 0.85:
        parts.append(f"the clients ({cpu['clients']:.0%} CPU)")
    if not parts and cpu["machine"] >= 0.9 * (os.cpu_count() or 1):
        parts.append(f"the machine's {os.cpu_count()} CPUs ({cpu['machine']:.0%} busy, {cpu['other']:.0%} of it not this benchmark)")
    if not parts and step["schedule_late_ms"] > late_bound * 1e3:
        parts.append("the commits (database or committing thread)")
    return ", ".join(parts) or "nothing saturated (by CPU)"


def _cpu_text(cpu: dict[str, Any]) -> str:
    parts = [
        "servers " + "/".join(f"{x:.0%}" for x in cpu["servers"])
        + " (loops " + "/".join(f"{x:.0%}" for x in cpu["server_loops"]) + ")",
        f"clients {cpu['clients']:.0%}",
    ]
    if cpu["redis"] is not None:
        parts.append(f"Redis {cpu['redis']:.0%}")
    if cpu["postgres"] is not None:
        parts.append(f"PostgreSQL {cpu['postgres']:.0%}")
    parts.append(f"interrupts {cpu['interrupts']:.0%}")
    parts.append(f"machine {cpu['machine']:.0%} (other processes {cpu['other']:.0%}, stolen {cpu['stolen']:.0%})")
    return ", ".join(parts)


def _ramp_table(meta: dict[str, Any], thr: dict[str, Any], keys: list[str]) -> list[str]:
    lines = [
        "",
        (f"**(b) Sustained rate**: steps of {meta['step_seconds']:g} s from {meta['start_rate']:g} to "
         f"{meta['max_rate']:g} committed notifications/s (both processes together, ×{meta['factor']:.3g} per step, "
         f"at most {meta['max_commits_per_s']} commits/s); a step holds when every client gets everything within "
         f"{meta['lag_bound_s'] * 1e3:.0f} ms, with no resync or drop, and the commits keep to schedule. Per process: "
         "notifications each of its clients received per second, and WebSocket frames it sent per second "
         "(× clients). CPU while the commits ran: 100% = one CPU; *loops* = the server process without "
         "its committing thread; *other processes* = the machine's busy time not accounted for here."),
        "",
        "| configuration | highest step held: committed/s offered (achieved) | delivered per process (notifications/s) | frames/s per process | lag p99 / max (ms) | next step | what failed | CPU in the failed step | likely bottleneck |",
        "|---|---:|---:|---:|---|---:|---|---|---|",
    ]
    for k in keys:
        x = thr[k]
        held, failed = x["held"], x["failed"]
        if held:
            per = min(held["delivered_notifications_per_s_per_process"])
            achieved = held["commits"] * held["rows"] / held["window_s"]
            cells = [f"{held['offered_notifications_per_s']:.0f} ({achieved:.0f})", f"{per:.0f}",
                     f"{per * meta['clients_per_process']:,.0f}",
                     f"{held['lag_p99_ms']:.0f} / {held['lag_max_ms']:.0f}"]
        else:
            cells = ["none", "–", "–", "–"]
        if failed:
            cells += [f"{failed['offered_notifications_per_s']:.0f}", "; ".join(failed["problems"]),
                      _cpu_text(failed["cpu"]), _bottleneck(failed, meta['late_bound_s'])]
        else:
            cells += ["–", f"not reached ({x['stopped']})", _cpu_text(held["cpu"]) if held else "–", "–"]
        lines.append(f"| {LABELS[k]} | " + " | ".join(cells) + " |")
    lines += ["", "Every step (✓ held, ✗ failed; lag p99 in ms; server CPU):", "",
              "| committed/s | " + " | ".join(LABELS[k] for k in keys) + " |",
              "|---:|" + "---|" * len(keys)]
    rates = sorted({s["offered_notifications_per_s"] for k in keys for s in thr[k]["steps"]})
    for rate in rates:
        cells = []
        for k in keys:
            steps = [s for s in thr[k]["steps"] if s["offered_notifications_per_s"] == rate]
            cells.append(", then ".join(
                f"{'✓' if not s['problems'] else '✗'} {s['lag_p99_ms'] or 0:.0f} ms, "
                + "/".join(f"{v:.0%}" for v in s["cpu"]["servers"]) for s in steps) or "–")
        lines.append(f"| {rate:.0f} | " + " | ".join(cells) + " |")
    return lines


def report(meta: dict[str, Any], lat: dict[str, Any], thr: dict[str, Any], skipped: str | None) -> str:
    keys = list(lat)
    v = meta["versions"]
    lines = [
        (f"sqla_notify at {meta['git']['commit']}{' (with uncommitted changes)' if meta['git']['uncommitted_package_files'] else ''}; "
         f"Python {v['python']}, {meta['cpus']} CPUs, uvicorn {v['uvicorn']}, redis-py {v.get('redis')}, "
         f"psycopg {v.get('psycopg')}, Redis {v.get('redis_server')}, PostgreSQL {v.get('postgresql_server', '–').split()[0]}. "
         f"{meta['clients_per_process']} clients on each of 2 uvicorn processes per configuration; "
         f"commits to {meta['database']}. {meta['note']}"),
        "",
        (f"**(a) Commit → client latency**, {meta['rate']:g} commits/s (one row each) alternating "
         f"between the processes, {meta['rounds']} × {meta['seconds']:g} s per configuration, rounds "
         "interleaved; from `commit()` called to each client's read of the frame (all clients for "
         "a broker, the committing process's for in-process)."),
        "",
        "| configuration | deliveries | missing | p50 (ms) | p90 (ms) | **p99 (ms)** | max (ms) | p99 per round | p99 vs in-process | p99 committing / other process's clients |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    base = lat["inproc"]["p99_ms"]
    for k in keys:
        x = lat[k]
        delta = "–" if k == "inproc" else f"{x['p99_ms'] - base:+.2f} ms"
        per_round = "–".join(f"{v:.2f}" for v in (min(x["p99_per_round_ms"]), max(x["p99_per_round_ms"])))
        lines.append(
            f"| {LABELS[k]} | {x['deliveries']} | {x['missing']} | {x['p50_ms']:.2f} | {x['p90_ms']:.2f} "
            f"| **{x['p99_ms']:.2f}** | {x['max_ms']:.2f} | {per_round} | {delta} "
            f"| {x['same_process_p99_ms']:.2f} / {'–' if x['other_process_p99_ms'] is None else format(x['other_process_p99_ms'], '.2f')} |"
        )
    if all(thr[k] is not None for k in keys):
        lines += _ramp_table(meta, thr, keys)
    lines += ["", "| target | measured | verdict |", "|---|---|---|"]
    for k in keys:
        if k != "inproc":
            d = lat[k]["p99_ms"] - base
            spread = [b - a for a, b in zip(lat["inproc"]["p99_per_round_ms"], lat[k]["p99_per_round_ms"])]
            lines.append(
                f"| {LABELS[k]}: p99 at most 2 ms over in-process at {meta['rate']:g} commits/s "
                f"| {d:+.2f} ms (per round {min(spread):+.2f} to {max(spread):+.2f}) | {'met' if d <= 2 else 'missed'} |"
            )
    if skipped:
        lines += ["", f"postgres: skipped ({skipped})"]
    return "\n".join(lines)
