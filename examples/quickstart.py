"""Prints the notifications that committed transactions produce.

From a clone, with the package installed in a virtual environment (the core is enough; the
``.venv`` that ``scripts/example.sh`` or ``scripts/test.sh`` made will do)::

    python3 -m venv .venv && .venv/bin/pip install -e .
    .venv/bin/python examples/quickstart.py      # SQLite file ./quickstart.db

With PostgreSQL (the ``postgres`` extra installs psycopg)::

    .venv/bin/pip install -e ".[postgres]"
    DATABASE_URL=postgresql+psycopg://USER@127.0.0.1/DBNAME .venv/bin/python examples/quickstart.py
"""

from __future__ import annotations

import os

from sqlalchemy import ForeignKey, String, create_engine, text, update
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker

from sqla_notify import Notification, Notifier, NotifyOptions, encode


class Base(DeclarativeBase):
    pass


class Container(Base):
    __tablename__ = "containers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    forums: Mapped[list[Forum]] = relationship(cascade="all, delete-orphan")


class Forum(Base):
    __tablename__ = "forums"
    __sqla_notify__ = NotifyOptions(payload="changes")
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    container_id: Mapped[int] = mapped_column(ForeignKey("containers.id"))


def show(batch: list[Notification]) -> None:
    print(f"committed {len(batch)} change(s):")
    for n in batch:
        print("   ", encode(n).decode())


def main() -> None:
    engine = create_engine(os.environ.get("DATABASE_URL", "sqlite:///quickstart.db"))
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    notifier = Notifier(show)
    Session = notifier.attach(sessionmaker(engine))

    print("-- insert a container with two forums")
    with Session.begin() as s:
        s.add(Container(id=1, name="General", forums=[Forum(id=1, name="news"), Forum(id=2, name="help")]))

    print("-- rename a forum, then roll back: nothing is published")
    with Session() as s:
        s.get(Forum, 1).name = "never"  # type: ignore[union-attr]
        s.flush()
        s.rollback()

    print("-- a bulk UPDATE reports each row it touched")
    with Session.begin() as s:
        s.execute(update(Forum).where(Forum.container_id == 1).values(name="renamed"))

    print("-- raw SQL, announced with notify(session=...)")
    with Session.begin() as s:
        s.execute(text("UPDATE containers SET name = 'Lobby' WHERE id = 1"))
        notifier.notify("containers", "update", {"id": 1}, session=s)

    print("-- delete the container: its forums go by cascade")
    with Session.begin() as s:
        s.delete(s.get(Container, 1))

    print(notifier.stats())


if __name__ == "__main__":
    main()
