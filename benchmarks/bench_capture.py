"""What change capture costs a commit, and what ``notify()`` costs per notification.

Each scenario runs with and without a Notifier attached, interleaved round by round in the
same process, so both sides see the same machine state. Only the flush + commit is timed
(objects are built, loaded and modified outside the clock), which makes capture's share as
large as it can be. Reported per scenario:

* the median time of each side, and the median and interquartile range of the per-round
  ratio attached / plain (the end-to-end cost, garbage collection included);
* the time spent inside sqla_notify's event handlers, as a share of the plain commit and
  per row: capture's own cost, much less noisy than a difference of two noisy timings.

    python benchmarks/bench_capture.py                 # SQLite in memory, and PostgreSQL
    python benchmarks/bench_capture.py --rounds 3      # quicker, noisier
    SQLA_NOTIFY_PG_URL=postgresql+psycopg://user@host/db python benchmarks/bench_capture.py
    python benchmarks/bench_capture.py --filter-old    # a model with filter_by and old=True
    python benchmarks/bench_capture.py --sink deferred # the notifications built off the thread

``--sink callable`` (the default) is a no-op function: the notifications are built on the
committing thread, inside the hooks, as for any sink given as a callable. ``--sink deferred``
stands in for the hub, which takes captured batches unbuilt and builds them on its event
loop: it keeps each batch and, after the commit and outside the clock, builds it on a
worker thread; that thread's CPU time is reported beside the hooks.

The checkout this script is in is the one imported, whichever is installed.

Writes ``benchmarks/results/capture.json`` and ``capture.md``.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

# This checkout's sqla_notify, not the installed one: comparisons run one checkout's script
# against another's.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgspec
import sqlalchemy
from sqlalchemy import String, create_engine, delete, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

import sqla_notify  # noqa: E402
from sqla_notify import Notification, Notifier, Sink  # noqa: E402

from harness import RESULTS, base_meta, git_state, write  # noqa: E402

DEFAULT_PG = "postgresql+psycopg://127.0.0.1/test"


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "bench_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    value: Mapped[int]


def _discard(batch: list[Notification]) -> None:
    pass


class DeferredSink(Sink):
    """Stands in for the hub: takes each captured batch unbuilt, as the hub does, and builds
    it later on another thread (the hub: on its event loop; here: in :meth:`drain`, called
    after the commit, outside the clock, so that the figures do not depend on when the
    other thread gets the GIL)."""

    _deferred = True

    def __init__(self) -> None:
        self.pending: list[Any] = []
        self.build_seconds = 0.0  # the worker thread's CPU time, building

    def publish(self, notifications: list[Notification]) -> None:
        pass

    def _publish_pending(self, batch: Any) -> None:
        self.pending.append(batch)

    def drain(self) -> None:
        batches, self.pending = self.pending, []

        def build() -> None:
            t0 = time.thread_time()
            for batch in batches:
                batch.notifications()
            self.build_seconds += time.thread_time() - t0

        worker = threading.Thread(target=build)
        worker.start()
        worker.join()


#: what every figure is timed with: wall-clock time, or with --clock cpu this thread's CPU time
#: (steadier on a busy machine; for PostgreSQL it leaves out the waits for the server, so a
#: share of the plain commit's CPU time overstates capture's share of its duration)
now = time.perf_counter


def _timed(fn: Callable[[], None]) -> float:
    gc.collect()
    t0 = now()
    fn()
    return now() - t0


# -- scenarios: each returns the seconds spent in flush + commit -----------------------------


def many_insert(factory: sessionmaker[Session], n: int) -> float:
    with factory() as s:
        objs = [Item(name=f"n{i}", value=i) for i in range(n)]
        s.add_all(objs)
        return _timed(s.commit)


def many_update(factory: sessionmaker[Session], n: int) -> float:
    with factory() as s:
        objs = s.scalars(select(Item)).all()
        for o in objs:
            o.value += 1
        return _timed(s.commit)


def many_delete(factory: sessionmaker[Session], n: int) -> float:
    with factory() as s:
        for o in s.scalars(select(Item)).all():
            s.delete(o)
        return _timed(s.commit)


def single_insert(factory: sessionmaker[Session], n: int) -> float:
    total = 0.0
    with factory() as s:
        for i in range(n):
            s.add(Item(name=f"n{i}", value=i))
            t0 = now()
            s.commit()
            total += now() - t0
    return total


def single_update(factory: sessionmaker[Session], n: int) -> float:
    total = 0.0
    with factory(expire_on_commit=False) as s:
        objs = s.scalars(select(Item)).all()
        s.commit()
        for o in objs:
            o.value += 1
            t0 = now()
            s.commit()
            total += now() - t0
    return total


def single_delete(factory: sessionmaker[Session], n: int) -> float:
    total = 0.0
    with factory(expire_on_commit=False) as s:
        objs = s.scalars(select(Item)).all()
        s.commit()
        for o in objs:
            s.delete(o)
            t0 = now()
            s.commit()
            total += now() - t0
    return total


# Each workload: (name, rows, [(label, scenario)]) — the scenarios run in this order on the
# same table, so insert fills it, update changes it, delete empties it.
WORKLOADS = [
    ("10,000 rows, one transaction", 10_000,
     [("insert", many_insert), ("update", many_update), ("delete", many_delete)]),
    ("1,000 single-row transactions", 1_000,
     [("insert", single_insert), ("update", single_update), ("delete", single_delete)]),
]


class HookClock:
    """Adds up the time spent inside one notifier's session event handlers.

    Wraps the handlers before ``attach`` registers them. This reaches into the notifier's
    private ``_recorder``: a benchmark's licence, to show capture's own cost apart from the
    noise of the whole commit.
    """

    def __init__(self, notifier: Notifier) -> None:
        self.seconds = 0.0
        #: of which the garbage collector's passes (started by an allocation in the hooks)
        self.gc_seconds = 0.0
        self._inside = False
        self._gc_start = 0.0
        gc.callbacks.append(self._on_gc)
        recorder = notifier._recorder
        # Every handler the notifier registers (older versions have no before_flush).
        for name in ("before_flush", "after_flush", "after_commit", "after_transaction_end"):
            if hasattr(recorder, name):
                setattr(recorder, name, self._wrap(getattr(recorder, name)))

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if not self._inside:
            return
        if phase == "start":
            self._gc_start = now()
        else:
            self.gc_seconds += now() - self._gc_start

    def _wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any) -> Any:
            self._inside = True
            t0 = now()
            try:
                return fn(*args)
            finally:
                self.seconds += now() - t0
                self._inside = False

        return timed


def _quartiles(values: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def run_database(url: str, rounds: int, label: str, sink: str, workloads: list[Any]) -> list[dict[str, Any]]:
    engine = create_engine(url)
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    plain = sessionmaker(engine)
    deferred = DeferredSink() if sink == "deferred" else None
    notifier = Notifier(deferred or _discard)
    clock = HookClock(notifier)
    attached = notifier.attach(sessionmaker(engine))
    rows: list[dict[str, Any]] = []
    try:
        for workload, n, scenarios in workloads:
            samples: dict[tuple[str, str], list[float]] = {}
            for r in range(rounds):
                # Alternate which side goes first so drift does not favour one of them.
                order = [("plain", plain), ("attached", attached)]
                if r % 2:
                    order.reverse()
                for side, factory in order:
                    with engine.begin() as conn:
                        conn.execute(delete(Item.__table__))
                    for action, scenario in scenarios:
                        before, gc_before = clock.seconds, clock.gc_seconds
                        samples.setdefault((action, side), []).append(scenario(factory, n))
                        if side == "attached":
                            samples.setdefault((action, "hooks"), []).append(clock.seconds - before)
                            samples.setdefault((action, "hooks_gc"), []).append(clock.gc_seconds - gc_before)
                            if deferred is not None:
                                built = deferred.build_seconds
                                deferred.drain()
                                samples.setdefault((action, "built"), []).append(deferred.build_seconds - built)
                print(f"  {label}: {workload}: round {r + 1}/{rounds}", file=sys.stderr)
            for action, _ in scenarios:
                base, cap = samples[action, "plain"], samples[action, "attached"]
                ratios = [c / b for c, b in zip(cap, base)]  # paired: same round, adjacent runs
                low, high = _quartiles(ratios)
                hooks = statistics.median(samples[action, "hooks"])
                hooks_gc = statistics.median(samples[action, "hooks_gc"])
                built = statistics.median(samples[action, "built"]) if deferred is not None else None
                rows.append({
                    "database": label, "workload": workload, "action": action, "rows": n,
                    "plain_ms": statistics.median(base) * 1e3,
                    "attached_ms": statistics.median(cap) * 1e3,
                    "ratio": statistics.median(ratios),
                    "ratio_q1": low,
                    "ratio_q3": high,
                    "hooks_ms": hooks * 1e3,
                    "hooks_share": hooks / statistics.median(base),
                    "hooks_gc_ms": hooks_gc * 1e3,
                    "hooks_us_per_row": hooks / n * 1e6,
                    "built_elsewhere_ms": None if built is None else built * 1e3,
                })
    finally:
        notifier.detach(attached)
        Base.metadata.drop_all(engine)
        engine.dispose()
    return rows


def bench_notify(n: int, rounds: int) -> dict[str, Any]:
    """µs per ``notify()`` into a no-op sink, beside the cost of an empty Python call."""
    notifier = Notifier(_discard)
    data = {"id": 7}
    best_notify = best_call = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            notifier.notify("forums", "update", data)
        best_notify = min(best_notify, time.perf_counter() - t0)
        t0 = time.perf_counter()
        for _ in range(n):
            _discard([])
        best_call = min(best_call, time.perf_counter() - t0)
    return {
        "notify_us": best_notify / n * 1e6,
        "empty_call_us": best_call / n * 1e6,
        "go_claim_us": 2.0,
        "ratio_to_go_claim": best_notify / n * 1e6 / 2.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--pg-url", default=os.environ.get("SQLA_NOTIFY_PG_URL", DEFAULT_PG))
    parser.add_argument("--no-pg", action="store_true", help="SQLite only")
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    parser.add_argument(
        "--filter-old", action="store_true",
        help="the model declares NotifyOptions(filter_by={'value'}, old=True) (the row-level options)",
    )
    parser.add_argument(
        "--sink", choices=("callable", "deferred"), default="callable",
        help="callable: a no-op function, notifications built in the hooks; deferred: built "
             "later on another thread, as the hub does (its CPU time is reported apart)",
    )
    parser.add_argument("--workloads", choices=("all", "many", "single"), default="all",
                        help="many: the 10,000-row transactions only; single: the single-row ones")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="time with the wall clock, or this thread's CPU time (steadier on a busy machine)")
    args = parser.parse_args()
    if args.clock == "cpu":
        global now
        now = time.thread_time
    code = git_state()
    suffix = ""
    if args.filter_old:
        Item.__sqla_notify__ = sqla_notify.NotifyOptions(filter_by={"value"}, old=True)  # type: ignore[attr-defined]
        suffix = ", filter_by+old"
    if args.sink == "deferred":
        suffix += ", deferred sink"
    workloads = {"all": WORKLOADS, "many": WORKLOADS[:1], "single": WORKLOADS[1:]}[args.workloads]

    rows = [] if args.no_sqlite else run_database("sqlite://", args.rounds, "SQLite (memory)" + suffix, args.sink, workloads)
    if not args.no_pg:
        try:
            rows += run_database(args.pg_url, args.rounds, "PostgreSQL" + suffix, args.sink, workloads)
        except sqlalchemy.exc.OperationalError as exc:
            print(f"PostgreSQL skipped: {exc.orig}", file=sys.stderr)
    notify = bench_notify(200_000, args.rounds)

    lines = [
        "| database | workload | action | plain (ms) | attached (ms) | **ratio** | ratio IQR "
        "| in sqla_notify's hooks | of which GC | µs/row |" + (" built elsewhere (CPU) |" if args.sink == "deferred" else ""),
        "|---|---|---|---:|---:|---:|---|---:|---:|---:|" + ("---:|" if args.sink == "deferred" else ""),
    ]
    for r in rows:
        lines.append(
            f"| {r['database']} | {r['workload']} | {r['action']} | {r['plain_ms']:.1f} "
            f"| {r['attached_ms']:.1f} | **{r['ratio']:.3f}** "
            f"| {r['ratio_q1']:.3f}–{r['ratio_q3']:.3f} "
            f"| {r['hooks_ms']:.2f} ms ({r['hooks_share']:.1%}) | {r['hooks_gc_ms']:.2f} ms "
            f"| {r['hooks_us_per_row']:.2f} |"
            + ("" if r["built_elsewhere_ms"] is None else f" {r['built_elsewhere_ms']:.2f} ms |")
        )
    lines += [
        "",
        "| `notify()` into a no-op sink | µs per call |",
        "|---|---:|",
        f"| sqla_notify `notifier.notify(...)` | **{notify['notify_us']:.2f}** |",
        f"| an empty Python call (floor) | {notify['empty_call_us']:.2f} |",
        f"| the Go library's claim | {notify['go_claim_us']:.1f}–3.0 |",
        f"| ratio to 2 µs | {notify['ratio_to_go_claim']:.2f} |",
    ]
    table = "\n".join(lines)
    print(table)

    meta = {
        **base_meta(code),
        "sqlalchemy": sqlalchemy.__version__,
        "msgspec": msgspec.__version__,
        "sqla_notify": sqla_notify.__version__,
        "rounds": args.rounds,
        "filter_old": args.filter_old,
        "sink": args.sink,
        "clock": args.clock,
    }
    write(
        "capture", {"meta": meta, "capture": rows, "notify": notify},
        f"# bench_capture ({meta['when']})\n\n"
        f"Python {meta['python']}, SQLAlchemy {meta['sqlalchemy']}, {meta['cpus']} CPUs, "
        f"median of {args.rounds} rounds; spread = min–max of per-round ratios.\n\n{table}\n",
        indent=2,
    )
    print(f"\nwrote {RESULTS / 'capture.json'} and capture.md", file=sys.stderr)


if __name__ == "__main__":
    main()
