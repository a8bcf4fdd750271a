"""Models for tests/test_typescript.py: one of each payload mode and of each column type the
TypeScript generator maps, filters, old values, inheritance and a collection name that is
not an identifier. Never created in a database."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON, BigInteger, Boolean, Enum, Float, ForeignKey, Interval, LargeBinary, Numeric, PickleType, String,
    Text, TypeDecorator, Uuid,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sqla_notify import NotifyOptions


class Base(DeclarativeBase):
    pass


class Status(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Lowercase(TypeDecorator[str]):
    """An application's own type: its Python values are the app's to describe."""

    impl = String(50)
    cache_ok = True


class Forum(Base):
    """The default: primary keys only."""

    __tablename__ = "forums"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(50))


class Post(Base):
    """Changes, filters (one nullable), old values and an excluded column."""

    __tablename__ = "posts"
    __sqla_notify__ = NotifyOptions(
        payload="changes", exclude={"secret"}, filter_by={"forum_id", "status", "editor_id"}, old=True,
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    forum_id: Mapped[int] = mapped_column(ForeignKey("forums.id"))
    title: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[Status] = mapped_column(default=Status.OPEN)
    editor_id: Mapped[int | None]
    secret: Mapped[str] = mapped_column(String(50), default="")


class Sample(Base):
    """Every column type the generator maps, in a full-row payload."""

    __tablename__ = "samples"
    __sqla_notify__ = NotifyOptions(payload="row", collection="sample-rows")
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    big: Mapped[int] = mapped_column(BigInteger)
    ratio: Mapped[float] = mapped_column(Float)
    price: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    approx: Mapped[float] = mapped_column(Numeric(10, 2, asdecimal=False))
    flag: Mapped[bool | None] = mapped_column(Boolean)
    body: Mapped[str] = mapped_column(Text)
    at: Mapped[dt.datetime]
    day: Mapped[dt.date | None]
    time: Mapped[dt.time]
    duration: Mapped[dt.timedelta] = mapped_column(Interval)
    blob: Mapped[bytes] = mapped_column(LargeBinary)
    kind: Mapped[str] = mapped_column(Enum("a", "b", 'say "c"', name="kind"))
    priority: Mapped[Priority]
    doc: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    scores: Mapped[list[int]] = mapped_column(ARRAY(Float))
    grid: Mapped[list[list[str | None]]] = mapped_column(ARRAY(String, dimensions=2))
    email: Mapped[str] = mapped_column(Lowercase)
    pickled: Mapped[Any] = mapped_column(PickleType)


class Member(Base):
    """Joined inheritance: a subclass's row payload carries its own columns too, so the
    collection's data is a union."""

    __tablename__ = "members"
    __sqla_notify__ = NotifyOptions(payload="row")
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    type: Mapped[str] = mapped_column(String(20))
    __mapper_args__ = {"polymorphic_on": "type", "polymorphic_identity": "member"}


class Moderator(Member):
    __tablename__ = "moderators"
    id: Mapped[int] = mapped_column(ForeignKey("members.id"), primary_key=True)
    level: Mapped[int] = mapped_column(default=1)
    __mapper_args__ = {"polymorphic_identity": "moderator"}


def _summary(obj: Any, action: str, changed: frozenset[str]) -> dict[str, Any]:
    return {"title": obj.title}


class Digest(Base):
    """A payload function."""

    __tablename__ = "digests"
    __sqla_notify__ = NotifyOptions(payload=_summary)
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(50))


class Invite(Base):
    """A secret primary key, excluded from a primary-key payload: no data at all."""

    __tablename__ = "invites"
    __sqla_notify__ = NotifyOptions(exclude={"code"})
    code: Mapped[str] = mapped_column(String(64), primary_key=True)


class Audit(Base):
    """Opted out: absent from the output."""

    __tablename__ = "audit"
    __sqla_notify__ = False
    id: Mapped[int] = mapped_column(primary_key=True)


class WrongFilter(DeclarativeBase):
    """A base whose model filters on a column it does not have."""


class Broken(WrongFilter):
    __tablename__ = "broken"
    __sqla_notify__ = NotifyOptions(filter_by={"nope"})
    id: Mapped[int] = mapped_column(primary_key=True)
