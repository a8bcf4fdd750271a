"""PostgreSQL things of a test's own, dropped afterwards: a database holding the
``fault_notes`` table (the ``Note`` model), a role; and the libpq form of a URL, as the
brokers take it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import URL, Engine, String, create_engine, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sqla_notify import NotifyOptions


class NotesBase(DeclarativeBase):
    """What :func:`database` creates: the ``fault_notes`` table only."""


class Note(NotesBase):
    """A note, announced with its whole row."""

    __tablename__ = "fault_notes"
    __sqla_notify__ = NotifyOptions(payload="row")
    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str] = mapped_column(String)


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
