"""Sync sessions committing from several threads at once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import Engine
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from sqla_notify import Notifier

from .models import Container, Forum
from .support.recording import Recorder

THREADS = 6
TRANSACTIONS = 20


def _run_concurrently(work: object) -> None:
    barrier = threading.Barrier(THREADS, timeout=10)

    def worker(t: int) -> None:
        barrier.wait()  # start together, so commits really overlap
        for i in range(TRANSACTIONS):
            work(t, i)  # type: ignore[operator]

    with ThreadPoolExecutor(THREADS) as pool:
        for future in [pool.submit(worker, t) for t in range(THREADS)]:
            future.result(timeout=30)


def _check(sink: Recorder) -> None:
    batches = sink.take()
    assert len(batches) == THREADS * TRANSACTIONS
    expected = set()
    for t in range(THREADS):
        for i in range(TRANSACTIONS):
            key = t * 1000 + i
            expected.add((("containers", "insert", (("id", key),)), ("forums", "insert", (("id", key),))))
    # Every transaction arrives as its own batch with exactly its own rows.
    got = {tuple((c, a, tuple(d.items())) for c, a, d in b if d is not None) for b in batches}
    assert got == expected
    assert len(set(sink.threads)) > 1


def test_threads_committing_at_once(factory: sessionmaker[Session], sink: Recorder) -> None:
    def work(t: int, i: int) -> None:
        key = t * 1000 + i
        with factory.begin() as s:
            s.add(Container(id=key, name=f"t{t}"))
            s.add(Forum(id=key, name=f"t{t}", container_id=key))

    _run_concurrently(work)
    _check(sink)


def test_scoped_session_in_threads(engine: Engine, notifier: Notifier, sink: Recorder) -> None:
    scoped = scoped_session(sessionmaker(engine))
    notifier.attach(scoped)

    def work(t: int, i: int) -> None:
        key = t * 1000 + i
        scoped.add(Container(id=key, name=f"t{t}"))
        scoped.add(Forum(id=key, name=f"t{t}", container_id=key))
        scoped.commit()
        if i == TRANSACTIONS - 1:
            scoped.remove()

    _run_concurrently(work)
    _check(sink)
