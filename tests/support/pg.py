"""PostgreSQL things of a test's own, dropped afterwards: a database holding the
``fault_notes`` table (the ``Note`` model), a role; the libpq form of a URL, as the brokers
take it; and a batch too large for one NOTIFY."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import URL, Engine, String, create_engine, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from sqla_notify import NotifyOptions


class NoteColumns:
    """The columns of a note, announced with its whole row: mixed into each module's model,
    whose table and metadata are its own."""

    __sqla_notify__ = NotifyOptions(payload="row")
    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str] = mapped_column(String)


class NotesBase(DeclarativeBase):
    """What :func:`database` creates: the ``fault_notes`` table only."""


class Note(NoteColumns, NotesBase):
    """A note in the ``fault_notes`` table of a :func:`database`."""

    __tablename__ = "fault_notes"


def unique(prefix: str) -> str:
    """``prefix`` and ten random hex digits: a name no other test uses."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@contextmanager
def database(admin: Engine, options: str = "") -> Iterator[URL]:
    """A new database with the ``fault_notes`` table; its URL (as the superuser)."""
    name = unique("sqla_nf")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name} {options}"))
    url = admin.url.set(database=name)
    try:
        engine = create_engine(url)
        NotesBase.metadata.create_all(engine)
        engine.dispose()
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))


@contextmanager
def role(admin: Engine, options: str = "LOGIN") -> Iterator[str]:
    """A new role (``options``: its attributes); its name."""
    name = unique("sqla_nf_role")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE ROLE {name} {options}"))
    try:
        yield name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP ROLE {name}"))  # after its database: nothing it owns is left


def libpq(url: URL) -> str:
    """``url`` as libpq (and so the brokers) take it, password included."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def commit_split_batch(sessions: sessionmaker[Session]) -> None:
    """Commit notes 1 to 60 of 100 "€" each in one transaction (about 40 kB as ASCII, so
    NOTIFY carries it in several parts), then note 100, small, in another."""
    with sessions.begin() as s:
        s.add_all([Note(id=i, body="€" * 100) for i in range(1, 61)])
    with sessions.begin() as s:
        s.add(Note(id=100, body="small"))
