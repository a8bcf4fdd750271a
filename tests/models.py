"""Models shared by the tests: one per capture feature."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import DDL, JSON, Computed, FetchedValue, ForeignKey, Identity, Numeric, String, event
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from sqla_notify import NotifyOptions


class Base(DeclarativeBase):
    pass


class Container(Base):
    __tablename__ = "containers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    forums: Mapped[list[Forum]] = relationship(
        back_populates="container", cascade="all, delete-orphan", order_by="Forum.id"
    )


class Forum(Base):
    __tablename__ = "forums"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    container_id: Mapped[int | None] = mapped_column(ForeignKey("containers.id"))
    container: Mapped[Container | None] = relationship(back_populates="forums")


class User(Base):
    """Payload with changes, and a column that must never leave the process."""

    __tablename__ = "users"
    __sqla_notify__ = NotifyOptions(collection="people", payload="changes", exclude={"password_hash"})
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    email: Mapped[str] = mapped_column(String(100), default="")
    password_hash: Mapped[str] = mapped_column(String(100), default="secret")


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Event(Base):
    """Full-row payload with values JSON has no native type for."""

    __tablename__ = "events"
    __sqla_notify__ = NotifyOptions(payload="row", exclude={"secret_col"})
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime]
    amount: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    uid: Mapped[uuid.UUID]
    color: Mapped[Color]
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    secret: Mapped[str] = mapped_column("secret_col", String(20), default="hidden")


class Tag(Base):
    """A composite primary key."""

    __tablename__ = "tags"
    forum_id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(String(30), primary_key=True)
    weight: Mapped[int] = mapped_column(default=0)


class AuditLog(Base):
    """Opted out."""

    __tablename__ = "audit_log"
    __sqla_notify__ = False
    id: Mapped[int] = mapped_column(primary_key=True)
    message: Mapped[str] = mapped_column(String(100))


def _summary(obj: Any, action: str, changed: frozenset[str]) -> dict[str, Any]:
    return {"title": obj.title.upper(), "action_seen": action, "changed": sorted(changed), "token": obj.token}


class Article(Base):
    """A custom payload function; ``token`` is excluded even from its result."""

    __tablename__ = "articles"
    __sqla_notify__ = NotifyOptions(payload=_summary, exclude={"token"})
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(50))
    token: Mapped[str] = mapped_column(String(50), default="t0k3n")


class Employee(Base):
    """Joined-table inheritance base."""

    __tablename__ = "employees"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    type: Mapped[str] = mapped_column(String(20))
    __mapper_args__ = {"polymorphic_on": "type", "polymorphic_identity": "employee"}


class Engineer(Employee):
    """Joined subclass: reports the base table's collection."""

    __tablename__ = "engineers"
    id: Mapped[int] = mapped_column(ForeignKey("employees.id"), primary_key=True)
    language: Mapped[str] = mapped_column(String(20), default="python")
    __mapper_args__ = {"polymorphic_identity": "engineer"}


class Manager(Employee):
    """Single-table subclass of a joined hierarchy, with its own collection."""

    __sqla_notify__ = NotifyOptions(collection="managers")
    __mapper_args__ = {"polymorphic_identity": "manager"}


def _next_stamp() -> int:
    _next_stamp.count += 1  # type: ignore[attr-defined]
    return _next_stamp.count  # type: ignore[attr-defined, no-any-return]


_next_stamp.count = 0  # type: ignore[attr-defined]


class Stamped(Base):
    """Columns every UPDATE writes: a Python ``onupdate`` and a trigger (``server_onupdate``)."""

    __tablename__ = "stamped"
    __sqla_notify__ = NotifyOptions(payload="changes", exclude={"secret"})
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(50))
    secret: Mapped[str] = mapped_column(String(50), default="s")
    stamp: Mapped[int] = mapped_column(default=0, onupdate=_next_stamp)
    revision: Mapped[int] = mapped_column(default=0, server_onupdate=FetchedValue())


class EagerStamped(Base):
    """Like Stamped, with ``eager_defaults``: the trigger's value is fetched by the UPDATE."""

    __tablename__ = "eager_stamped"
    __sqla_notify__ = NotifyOptions(payload="changes")
    __mapper_args__ = {"eager_defaults": True}
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(50))
    revision: Mapped[int] = mapped_column(default=0, server_onupdate=FetchedValue())


for _table in ("stamped", "eager_stamped"):
    # A real server-side onupdate on both test databases: revision = revision + 1.
    event.listen(Base.metadata.tables[_table], "after_create", DDL(  # type: ignore[no-untyped-call]
        f"CREATE TRIGGER {_table}_rev AFTER UPDATE OF title ON {_table} FOR EACH ROW "
        f"BEGIN UPDATE {_table} SET revision = OLD.revision + 1 WHERE id = NEW.id; END"
    ).execute_if(dialect="sqlite"))
    for _ddl in (  # one statement each: asyncpg prepares every statement
        f"CREATE OR REPLACE FUNCTION {_table}_rev() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN NEW.revision := OLD.revision + 1; RETURN NEW; END $$",
        f"CREATE TRIGGER {_table}_rev BEFORE UPDATE ON {_table} "
        f"FOR EACH ROW EXECUTE FUNCTION {_table}_rev()",
    ):
        event.listen(
            Base.metadata.tables[_table], "after_create",
            DDL(_ddl).execute_if(dialect="postgresql"),  # type: ignore[no-untyped-call]
        )


class Versioned(Base):
    """``version_id_col``: every UPDATE also writes the version counter."""

    __tablename__ = "versioned"
    __sqla_notify__ = NotifyOptions(payload="changes")
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(50))
    version: Mapped[int] = mapped_column(default=1)
    __mapper_args__ = {"version_id_col": version}


class Doubled(Base):
    """An ``Identity`` primary key and a ``Computed`` column, with full-row payloads."""

    __tablename__ = "doubled"
    __sqla_notify__ = NotifyOptions(payload="row")
    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    n: Mapped[int]
    label: Mapped[str] = mapped_column(String(50), default="")
    double: Mapped[int] = mapped_column(Computed("n * 2", persisted=True))


class Node(Base):
    """``post_update``: the link to another node is written by a second UPDATE."""

    __tablename__ = "nodes"
    __sqla_notify__ = NotifyOptions(payload="changes")
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    next_id: Mapped[int | None] = mapped_column(ForeignKey("nodes.id"))
    next: Mapped[Node | None] = relationship(remote_side=[id], post_update=True)


class ApiKey(Base):
    """A secret primary key, excluded: it must never leave the process."""

    __tablename__ = "api_keys"
    __sqla_notify__ = NotifyOptions(payload="changes", exclude={"key"})
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(50))


class ResetCode(Base):
    """A secret primary key in the default primary-key mode: notified without data."""

    __tablename__ = "reset_codes"
    __sqla_notify__ = NotifyOptions(exclude={"code"})
    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    user: Mapped[str] = mapped_column(String(50))


def _account_payload(obj: Any, action: str, changed: frozenset[str]) -> dict[str, Any]:
    # Keys by column name and by attribute key alike: both must be filtered.
    return {"id": obj.id, "name": obj.name, "pw_hash": obj.secret, "secret": obj.secret}


class Account(Base):
    """A column whose name (``pw_hash``) differs from its attribute key (``secret``)."""

    __tablename__ = "accounts"
    __sqla_notify__ = NotifyOptions(payload=_account_payload, exclude={"pw_hash"})
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    secret: Mapped[str] = mapped_column("pw_hash", String(100))
