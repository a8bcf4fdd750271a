"""Models shared by the tests: one per capture feature."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, ForeignKey, Numeric, String
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
