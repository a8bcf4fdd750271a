"""The hub's own cost per delivery: ``Hub._dispatch`` of one notification, and of a 10-row
transaction, to 1,000 subscribers that have no transport (numbering, encoding once, the
per-client checks and queueing; no sockets); and what a writer's wake-up costs per client
besides its sends (taking the queue, and where the checkout has it, the commit→send latency
observation of ``sqla_notify.metrics``). Optionally against another checkout, in
alternating child processes of one run:

    python benchmarks/bench_fanout.py                       # this checkout
    python benchmarks/bench_fanout.py --against /tmp/old    # and another one, e.g. a worktree

A child process imports ``sqla_notify`` from the checkout it measures (``PYTHONPATH``), so
the same script measures both. Writes ``results/fanout.json`` and ``fanout.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from harness import ROOT as HERE, write

CLIENTS = 1000


async def _measure() -> dict[str, float]:
    from sqla_notify import Hub, Notification

    try:
        from sqla_notify._timing import sent  # what a writer calls after each wake-up's sends
    except ImportError:  # a checkout without metrics
        sent = None

    async with Hub(queue_size=1_000_000, replay=1000) as hub:
        subs = [hub.subscribe() for _ in range(CLIENTS)]
        # Versions before the public Subscriber interface had private names for it.
        public = hasattr(type(subs[0]), "receive_nowait")
        for sub in subs:
            if public:
                sub.receive_nowait()  # the welcome
                sub.receive_nowait()  # and back for more: idle
            else:
                sub._take()
                if hasattr(type(sub), "_busy"):  # versions before it had no such slot
                    sub._busy = False
        n = Notification("forums", "insert", {"id": 1})
        out = {}
        wakes = []
        for label, batch in (("one", [n]), ("ten", [n] * 10)):
            samples = []
            for _ in range(30):
                t0 = time.perf_counter()
                for _ in range(20):
                    if sent is None:
                        hub._dispatch(batch)
                    else:  # stamped with its commit time, as Hub.publish does
                        hub._dispatch(batch, None, time.time())
                samples.append((time.perf_counter() - t0) / (20 * len(batch) * CLIENTS))
                t0 = time.perf_counter()
                for sub in subs:  # as a writer takes them: one wake-up per client
                    taken = sub.receive_nowait() if public else sub._take()
                    if sent is not None:
                        sent(taken)
                wakes.append((time.perf_counter() - t0) / CLIENTS)
            out[label] = statistics.median(samples) * 1e9
        out["wake"] = statistics.median(wakes) * 1e9
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--against", type=Path, default=None, help="another checkout to measure too")
    parser.add_argument("--rounds", type=int, default=5, help="child processes per checkout, alternating")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(_measure())))
        return
    checkouts = {"this": HERE} | ({"against": args.against.resolve()} if args.against else {})
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in checkouts}
    for _ in range(args.rounds):
        for name, path in checkouts.items():
            env = {**os.environ, "PYTHONPATH": str(path)}
            out = subprocess.run([sys.executable, __file__, "--child"], env=env, check=True,
                                 capture_output=True, text=True).stdout
            runs[name].append(json.loads(out))
    lines = [
        f"| checkout | ns per delivery, 1 notification to {CLIENTS:,} (median, min–max) | "
        f"ns per delivery, 10-row transaction | ns per writer wake-up, besides sending |",
        "|---|---:|---:|---:|",
    ]
    for name, results in runs.items():
        cells = []
        for label in ("one", "ten", "wake"):
            values = [r[label] for r in results]
            cells.append(f"{statistics.median(values):.0f} ({min(values):.0f}–{max(values):.0f})")
        lines.append(f"| {name} ({checkouts[name]}) | {cells[0]} | {cells[1]} | {cells[2]} |")
    if args.against:
        for label, what in (("one", "1 notification"), ("ten", "10-row transaction"), ("wake", "writer wake-up")):
            ratio = statistics.median(r[label] for r in runs["this"]) / statistics.median(r[label] for r in runs["against"])
            lines.append(f"\nthis / against, {what}: {ratio:.2f}")
    table = "\n".join(lines)
    print(table)
    write("fanout", {"checkouts": {k: str(v) for k, v in checkouts.items()}, "python": sys.version.split()[0],
                     "runs": runs}, table + "\n")


if __name__ == "__main__":
    main()
