"""Instructions per row spent in the notifier's hooks, counted by valgrind (not timed).

Timings on a shared machine are noisy; instruction counts are not. This script runs one
10,000-row commit (insert, update or delete) on SQLite in memory, with the notifier
attached (a deferring sink, as the hub is) and the collector off, and replays the per-row
hooks ``--replay`` more times on the same flush: ``before_flush`` as it is, and the capture
in ``after_flush`` each time into a fresh buffer (kept alive, so that freeing it is not
counted). ``after_commit`` and ``after_transaction_end`` run once per transaction and do
nothing per row. Under valgrind, run it with ``--replay 0`` and ``--replay 10``: the
difference divided by ``10 * rows`` is the hooks' instructions per row::

    for r in 0 10; do
      PYTHONHASHSEED=0 valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \\
        python benchmarks/instr_capture.py update --filter-old --replay $r 2>&1 | grep 'I *refs'
    done

``--plain`` runs the same commit without the notifier (for a whole-commit comparison,
attached minus plain, which object addresses make noisier: ±400 instructions per row).

The checkout this script is in is the one imported.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, insert, select  # noqa: E402
from sqlalchemy.orm import Session, sessionmaker  # noqa: E402

import sqla_notify  # noqa: E402
from sqla_notify import Notification, Notifier, Sink  # noqa: E402

# bench_capture.py's model (this script's folder is on sys.path): the counts here and its timings measure the same table.
from bench_capture import Base, Item  # noqa: E402


class DeferredSink(Sink):
    """Keeps each batch unbuilt, as the hub does (it builds them on its own thread)."""

    _deferred = True

    def __init__(self) -> None:
        self.pending: list[Any] = []

    def publish(self, notifications: list[Notification]) -> None:
        pass

    def _publish_pending(self, batch: Any) -> None:
        self.pending.append(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("insert", "update", "delete"))
    parser.add_argument("--filter-old", action="store_true",
                        help="the model declares NotifyOptions(filter_by={'value'}, old=True)")
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--replay", type=int, default=0, help="extra runs of the per-row hooks")
    parser.add_argument("--only", choices=("before_flush", "after_flush"),
                        help="replay this hook only (default: both)")
    parser.add_argument("--plain", action="store_true", help="no notifier")
    args = parser.parse_args()
    if args.filter_old:
        Item.__sqla_notify__ = sqla_notify.NotifyOptions(filter_by={"value"}, old=True)  # type: ignore[attr-defined]

    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    factory = sessionmaker(engine)
    kept: list[Any] = []  # replayed buffers, never freed while counting
    sink = DeferredSink()
    if not args.plain:
        notifier = Notifier(sink)
        recorder = notifier._recorder
        replay_before = 0 if args.only == "after_flush" else args.replay
        replay = 0 if args.only == "before_flush" else args.replay
        before_flush, capture = recorder.before_flush, recorder._capture
        info_key = recorder.info_key

        def replayed_before_flush(session: Session, context: Any, instances: Any) -> None:
            for _ in range(replay_before):
                before_flush(session, context, instances)
            before_flush(session, context, instances)

        def replayed_capture(session: Session, context: Any) -> None:
            for _ in range(replay):
                saved = session.info.pop(info_key, None)
                capture(session, context)
                kept.append(session.info.pop(info_key, None))
                if saved is not None:
                    session.info[info_key] = saved
            capture(session, context)

        recorder.before_flush = replayed_before_flush  # type: ignore[method-assign]
        recorder._capture = replayed_capture  # type: ignore[method-assign]
        notifier.attach(factory)
    n = args.rows
    if args.action != "insert":
        with engine.begin() as conn:
            conn.execute(insert(Item), [{"name": f"n{i}", "value": i} for i in range(n)])
    with factory() as s:
        if args.action == "insert":
            s.add_all([Item(name=f"n{i}", value=i) for i in range(n)])
        else:
            objs = s.scalars(select(Item)).all()
            for o in objs:
                if args.action == "update":
                    o.value += 1
                else:
                    s.delete(o)
        gc.collect()
        gc.disable()
        s.commit()
    # What was captured, so that a run that captured nothing cannot pass for a cheap one.
    published = sum(len(batch) for batch in sink.pending)
    replayed = [sum(len(buf) for buf in pending.values()) for pending in kept if pending]
    print(f"{args.action}: {published} notification(s) published, replays recorded {replayed}")
    sys.stdout.flush()
    os._exit(0)  # freeing the heap at exit is not what is counted


if __name__ == "__main__":
    main()
