"""Pictures of the benchmark results (matplotlib, Agg backend: no display needed).

    python benchmarks/plots.py                       # from results/broadcast.json
    python benchmarks/plots.py results/broadcast-py312.json

``bench_broadcast.py`` calls :func:`plot_broadcast` after writing its JSON, and
``run_all.py`` after each run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after choosing the backend
from matplotlib.ticker import FuncFormatter, NullFormatter

HERE = Path(__file__).parent
ORDER = ("bare", "manager", "notify", "redis", "broadcaster", "socketio")
NAMES = {
    "bare": "bare send_text loop",
    "manager": "FastAPI ConnectionManager",
    "notify": "sqla_notify Hub",
    "redis": "sqla_notify Hub via Redis",
    "broadcaster": "broadcaster (memory://)",
    "socketio": "python-socketio",
}
COLOURS = {
    "bare": "#555555", "manager": "#999999", "notify": "#d62728", "redis": "#ff7f0e", "broadcaster": "#1f77b4",
    "socketio": "#2ca02c",
}
MARKERS = {"bare": "s", "manager": "D", "notify": "o", "redis": "P", "broadcaster": "^", "socketio": "v"}
HUBS = ("notify", "redis")  # sqla_notify's own lines, drawn heavier


def plot_broadcast(source: Path, out_dir: Path, name: str = "broadcast") -> list[Path]:
    """Write ``<name>-throughput.png`` and ``<name>-one-broadcast.png``; return their paths."""
    data = json.loads(source.read_text())
    meta, summary = data["meta"], data["summary"]
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [_throughput(summary, meta, out_dir / f"{name}-throughput.png")] if summary["throughput"] else []
    if summary.get("single"):
        written.append(_one_broadcast(summary, data["single"], meta, out_dir / f"{name}-one-broadcast.png"))
    return written


def _subtitle(meta: dict[str, Any]) -> str:
    return (
        f"Python {meta['python']}, uvicorn {meta['uvicorn']} ({meta['server_loop']}), {meta['cpus']} CPUs, "
        f"one server process; {meta['when']}"
    )


def _throughput(summary: dict[str, Any], meta: dict[str, Any], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 5.2))
    rows = [t for t in summary["throughput"] if t["mode"] == "burst"]
    counts = sorted({t["clients"] for t in rows})
    for c in ORDER:
        mine = sorted((t for t in rows if t["contender"] == c and "deliveries_per_s" in t), key=lambda t: t["clients"])
        if not mine:
            continue
        x = [t["clients"] for t in mine]
        med = [t["deliveries_per_s"][0] / 1e3 for t in mine]
        lo = [m - t["deliveries_per_s"][1] / 1e3 for m, t in zip(med, mine)]
        hi = [t["deliveries_per_s"][2] / 1e3 - m for m, t in zip(med, mine)]
        ax.errorbar(
            x, med, yerr=[lo, hi], label=NAMES[c], color=COLOURS[c], marker=MARKERS[c], capsize=4,
            linewidth=2.2 if c in HUBS else 1.4, linestyle="--" if c == "redis" else "-",
        )
        missing = [t["clients"] for t in rows if t["contender"] == c and "deliveries_per_s" not in t]
        for n in missing:
            ax.annotate(f"{NAMES[c]}: not measured", (n, 0), xytext=(0, 8), textcoords="offset points",
                        ha="center", fontsize=7, color=COLOURS[c])
    ax.set_xscale("log")
    ax.set_xticks(counts)
    ax.set_xticklabels([f"{n:,}" for n in counts])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlim(min(counts) / 1.5, max(counts) * 1.5)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("connected WebSocket clients (log scale)")
    ax.set_ylabel("deliveries/s, thousands (median; bars: min–max over rounds)")
    ax.set_title("Broadcast throughput: back-to-back bursts of ~100-byte notifications", fontsize=11)
    fig.text(0.5, 0.005, _subtitle(meta), ha="center", fontsize=7, color="#666666")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _one_broadcast(summary: dict[str, Any], single: dict[str, Any], meta: dict[str, Any], path: Path) -> Path:
    rows = {r["contender"]: r for r in summary["single"]}
    fig, ax = plt.subplots(figsize=(max(9.0, 1.5 + 1.6 * len(rows)), 5.2))
    positions, values, colours, labels, blocked = [], [], [], [], []
    for i, c in enumerate(c for c in ORDER if c in rows):
        for j, kind in enumerate(("unstalled", "stalled")):
            x = i * 3 + j
            k = rows[c][kind]
            labels.append((x, f"{NAMES[c]}\n{'1% stalled' if kind == 'stalled' else 'all reading'}"))
            if k["blocked_rounds"] or not k["seconds"]:
                blocked.append(x)
                continue
            positions.append(x)
            values.append([s * 1e3 for s in k["seconds"]])
            colours.append(COLOURS[c])
    parts = ax.boxplot(
        values, positions=positions, widths=0.7, whis=(1, 99), showfliers=True, patch_artist=True,
        medianprops={"color": "black"},  # the default orange would vanish in the Redis hub's box
    )
    for patch, colour in zip(parts["boxes"], colours):
        patch.set_facecolor(colour)
        patch.set_alpha(0.45)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if str(f"{v:g}")[0] in "235" else ""))
    top = max((max(v) for v in values), default=100.0)
    for x in blocked:
        ax.text(x, top, "blocked:\nnever\ncompletes", ha="center", va="top", fontsize=7, color="#b00000")
    ax.set_xticks([x for x, _ in labels])
    ax.set_xticklabels([t for _, t in labels], fontsize=6.5, rotation=30, ha="right")
    healthy = single["clients"] - single["stalled"]
    ax.set_ylabel("publish → last client received (ms, log scale)")
    ax.set_title(
        f"One notification to {healthy:,} clients, with and without {single['stalled']} more stalled "
        f"(box: quartiles, whiskers: 1st–99th percentile)", fontsize=10,
    )
    fig.text(0.5, 0.005, _subtitle(meta), ha="center", fontsize=7, color="#666666")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


LATENCY_COLOURS = {"sqlite-sync": "#ff7f0e", "sqlite-async": "#d6a21e", "postgres-sync": "#1f77b4", "postgres-async": "#17becf"}


def plot_latency(source: Path, out_dir: Path) -> Path:
    """Write ``latency-cdf.png`` from ``bench_latency.py``'s JSON: commit → client latency as
    a distribution per mode, on a log-scaled tail axis so p99 and p99.9 can be read."""
    data = json.loads(source.read_text())
    meta = data["meta"]
    fig, ax = plt.subplots(figsize=(8, 5.2))
    for row in data["latency"]:
        if not row.get("cdf_ms"):
            continue
        # x: latency; y: the share of deliveries still outstanding (1 - quantile), log scale.
        tail = [max(1 - q, 1e-4) for q in row["cdf_points"]]
        ax.step(row["cdf_ms"], tail, where="pre", label=row["session"],
                color=LATENCY_COLOURS.get(row["mode"]), linewidth=1.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_yticks([1, 0.5, 0.1, 0.01, 0.001, 0.0001])
    ax.set_yticklabels(["all", "p50", "p90", "p99", "p99.9", "max"])
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("commit() called → client decoded the notification (ms, log scale)")
    ax.set_ylabel("deliveries slower than x")
    ax.set_title(
        f"Commit to client: {meta['clients']} clients, {meta['rate']:g} commits/s, "
        f"{meta['rounds']} rounds × {meta['seconds']:g} s per mode", fontsize=11,
    )
    v = meta["versions"]
    fig.text(0.5, 0.005, f"Python {v['python']}, SQLAlchemy {v['sqlalchemy']}, uvicorn {v.get('uvicorn')}, "
             f"{meta['cpus']} CPUs, clients on the same machine; {meta['when']}", ha="center", fontsize=7, color="#666666")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    path = out_dir / "latency-cdf.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


if __name__ == "__main__":
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "results" / "broadcast.json"
    for p in plot_broadcast(src, HERE / "results", src.stem):
        print(p)
