"""The hub's own cost per published post, counted in instructions, and the garbage
collector's work in a burst (issue 12's filtered delivery; ``benchmarks/README.md``, the
``--filtered`` section).

A running :class:`~sqla_notify.Hub` on an asyncio or uvloop loop, subscribers without
transports (no sockets: what is measured is ``Hub.publish``, the loop's hand-over and
``Hub._dispatch`` with the index, the ``Entry``, encoding and the replay window):

* ``unwatched``: 1,000 subscribers each filtering ``posts`` on a ``forum_id`` of their own;
  posts to forums nobody watches;
* ``watched``: the same subscribers; each post to one of their forums (one frame);
* ``split``: 1,000 subscribers each of a collection of its own whole (``p0042``), each post
  to one of those collections, without ``filter_after`` (one frame, routed by name: what
  ``watched`` costs unfiltered);
* ``whole``: 1,000 subscribers of ``posts`` whole; each post to all of them.

Instructions come from valgrind's cachegrind, which other processes do not disturb: each
scenario runs twice, publishing ``WARM`` posts then ``--posts`` more or none, and the
difference divided by ``--posts`` is the cost of one post in the steady state (the replay
window full). Posts are built before either run publishes, and the collector is off while
they are published: GC is counted apart, by collections (``gc.callbacks``) over a burst of
``--burst`` posts published in one loop step, built and published one by one as
``bench_broadcast.py --filtered`` does. ``back to back`` publishes every post of a run in one
loop step, ``paced`` yields to the loop after each. ``--against`` measures another checkout
too, in the same way (``PYTHONPATH``).

    python benchmarks/bench_postcost.py                       # ~9 min on 2 vCPUs
    python benchmarks/bench_postcost.py --against /tmp/old    # and another checkout
    python benchmarks/bench_postcost.py --gc-only             # the burst alone, no valgrind

Writes ``results/postcost.json`` and ``postcost.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import ROOT as HERE, log, split_name, write

CLIENTS = 1000
WARM = 1000  # fills the replay window, whose default size this is
TITLE = "General discussion"  # as bench_broadcast's posts
SCENARIOS = ("unwatched", "watched", "split", "whole")
MODES = ("back to back", "paced")


def _posts(kind: str, first: int, count: int) -> list[Any]:
    from sqla_notify import Notification

    out = []
    for i in range(first, first + count):
        forum = -1 - i if kind == "unwatched" else i % CLIENTS
        if kind == "split":
            out.append(Notification(split_name(forum), "insert", {"id": i, "forum_id": forum, "title": TITLE}))
        else:
            out.append(Notification("posts", "insert", {"id": i, "forum_id": forum, "title": TITLE},
                                    filter_after={"forum_id": forum}))
    return out


def _subscribe(hub: Any, kind: str) -> list[Any]:
    from sqla_notify import Selection

    if kind == "whole":
        subs = [hub.subscribe(["posts"]) for _ in range(CLIENTS)]
    elif kind == "split":
        subs = [hub.subscribe([split_name(k)]) for k in range(CLIENTS)]
    else:
        subs = [hub.subscribe(Selection((), {"posts": [{"forum_id": k}]})) for k in range(CLIENTS)]
    for sub in subs:
        sub.receive_nowait()  # the welcome
    return subs


async def _publish(hub: Any, posts: list[Any], paced: bool) -> None:
    for n in posts:
        hub.publish([n])
        if paced:
            await asyncio.sleep(0)
    for _ in range(3):  # the hand-overs (and whatever they schedule) run
        await asyncio.sleep(0)


async def _run(kind: str, posts: int, built: int, paced: bool) -> None:
    from sqla_notify import Hub

    warm, measured = _posts(kind, 0, WARM), _posts(kind, WARM, built)[:posts]  # built alike in both runs
    async with Hub(queue_size=10_000_000) as hub:
        await _publish(hub, warm, paced)  # before the subscribers: 'whole' would take a million frames
        _subscribe(hub, kind)
        gc.collect()
        gc.disable()
        await _publish(hub, measured, paced)
        gc.enable()
        assert hub.stats().published == WARM + posts, hub.stats()


async def _burst(kind: str, count: int) -> dict[str, Any]:
    from sqla_notify import Hub, Notification

    async with Hub(queue_size=10_000_000) as hub:
        subs = _subscribe(hub, kind)
        collections = [0, 0, 0]
        spent = [0.0]
        started = [0.0]

        def watch(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                started[0] = time.perf_counter()
            else:
                spent[0] += time.perf_counter() - started[0]
                collections[info["generation"]] += 1

        gc.collect()
        gc.callbacks.append(watch)
        t0 = time.process_time()
        try:
            for i in range(count):
                f = -1 - i if kind == "unwatched" else i % CLIENTS
                hub.publish([Notification("posts", "insert", {"id": i, "forum_id": f, "title": TITLE},
                                          filter_after={"forum_id": f})])
            for _ in range(3):
                await asyncio.sleep(0)
        finally:
            gc.callbacks.remove(watch)
        cpu = time.process_time() - t0
        assert hub.stats().published == count, hub.stats()
        for sub in subs:
            sub.receive_nowait()
    return {"collections": collections, "gc_s": spent[0], "cpu_s": cpu}


def _child(args: argparse.Namespace) -> None:
    if args.loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if args.burst_child:
        print(json.dumps(asyncio.run(_burst(args.scenario, args.burst))))
    else:
        asyncio.run(_run(args.scenario, args.posts, args.built, args.paced))


def _instructions(path: Path, argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            ["valgrind", "--tool=cachegrind", "--cache-sim=no", f"--cachegrind-out-file={tmp}/out",
             sys.executable, __file__, "--child", *argv],
            env={**os.environ, "PYTHONPATH": str(path), "PYTHONHASHSEED": "0"}, check=True, capture_output=True,
            text=True,
        )
    match = re.search(r"I\s+refs:\s+([\d,]+)", out.stderr)
    if match is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{out.stderr[-2000:]}")
    return int(match.group(1).replace(",", ""))


def _per_post(path: Path, kind: str, mode: str, loop: str, posts: int) -> float:
    argv = ["--scenario", kind, "--loop", loop] + (["--paced"] if mode == "paced" else [])
    argv += ["--built", str(posts)]
    base = _instructions(path, [*argv, "--posts", "0"])
    more = _instructions(path, [*argv, "--posts", str(posts)])
    return (more - base) / posts


def _burst_run(path: Path, kind: str, loop: str, count: int) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child", "--burst-child", "--scenario", kind, "--loop", loop,
                          "--burst", str(count)], env={**os.environ, "PYTHONPATH": str(path)},
                         check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--against", type=Path, default=None, help="another checkout to measure too")
    parser.add_argument("--posts", type=int, default=2000, help="posts measured per filtered scenario")
    parser.add_argument("--whole-posts", type=int, default=100, help="posts measured for 'whole'")
    parser.add_argument("--burst", type=int, default=200_000, help="posts in the GC burst (0: none)")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="uvloop")
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--gc-only", action="store_true", help="only the GC burst, without valgrind")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--burst-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scenario", choices=SCENARIOS, help=argparse.SUPPRESS)
    parser.add_argument("--paced", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--built", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    checkouts = {"this": HERE} | ({"against": args.against.resolve()} if args.against else {})
    data: dict[str, Any] = {"python": sys.version.split()[0], "loop": args.loop, "clients": CLIENTS,
                            "checkouts": {k: str(v) for k, v in checkouts.items()}, "instructions": {}, "gc": {}}
    lines = []
    if not args.gc_only:
        lines += [f"Instructions per post ({args.loop}, {CLIENTS:,} subscribers, collector off):", "",
                  "| scenario | mode | " + " | ".join(checkouts) + (" | this / against |" if args.against else " |"),
                  "|---|---|" + "---:|" * (len(checkouts) + (1 if args.against else 0))]
        for kind in args.scenarios:
            for mode in args.modes:
                posts = args.whole_posts if kind == "whole" else args.posts
                row = {}
                for name, path in checkouts.items():
                    log(f"{name}: {kind}, {mode}")
                    row[name] = _per_post(path, kind, mode, args.loop, posts)
                data["instructions"][f"{kind}/{mode}"] = row
                cells = [f"{v:,.0f}" for v in row.values()]
                if args.against:
                    cells.append(f"{row['this'] / row['against']:.2f}")
                lines.append(f"| {kind} | {mode} | " + " | ".join(cells) + " |")
        lines.append("")
    kinds = ("unwatched", "watched") if args.burst else ()
    if kinds:
        lines += [f"GC over a burst of {args.burst:,} posts published in one loop step ({args.loop}):", "",
                  "| scenario | checkout | collections (gen 0, 1, 2) | in the collector | CPU, the whole burst |",
                  "|---|---|---:|---:|---:|"]
    for kind in kinds:
        for name, path in checkouts.items():
            log(f"{name}: GC, {kind}")
            burst = _burst_run(path, kind, args.loop, args.burst)
            data["gc"][f"{kind}/{name}"] = burst
            lines.append(f"| {kind} | {name} | {', '.join(map(str, burst['collections']))} | "
                         f"{burst['gc_s'] * 1000:.0f} ms | {burst['cpu_s'] * 1000:.0f} ms |")
    table = "\n".join(lines)
    print(table)
    write("postcost", data, table + "\n")


if __name__ == "__main__":
    main()
