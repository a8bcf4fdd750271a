"""Per-model settings: which collection a model reports and what its payload holds."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy.orm import Mapper
from sqlalchemy.sql import sqltypes
from sqlalchemy.orm import registry as _registry
from sqlalchemy.orm.instrumentation import ClassManager

from .._report import fields
from ..types import PayloadFunction, PayloadMode

__all__ = ("NotifyOptions", "filter_columns")

logger = logging.getLogger("sqla_notify")

_MODES = ("pk", "changes", "row")

#: Name of the model attribute that holds its :class:`NotifyOptions` (or ``False``).
OPTIONS_ATTRIBUTE = "__sqla_notify__"


@dataclass(frozen=True)
class NotifyOptions:
    """How a mapped class is notified. Set it as the class attribute ``__sqla_notify__``.

    .. code-block:: python

        class User(Base):
            __tablename__ = "users"
            __sqla_notify__ = NotifyOptions(payload="changes", exclude={"password_hash"})

    ``__sqla_notify__ = False`` opts a model out. Subclasses inherit their base's options;
    set the attribute again on a subclass to change them.

    :param collection: the ``collection`` its notifications carry. Default: the name of the
        table of the inheritance hierarchy's base class, so that a listener of ``employees``
        also hears about ``Engineer`` rows (joined or single-table inheritance alike).
    :param payload: what ``data`` holds.

        * ``"pk"`` (default): the primary key, e.g. ``{"id": 7}``. Small, but it does tell
          which rows exist and when they change; exclude a key that is itself a secret
          (a token, a reset code): the notification then carries no data.
        * ``"changes"``: the primary key plus, for an insert, every column value the session
          holds; for an update, the new values of the columns that changed (so the keys say
          which columns changed); for a delete, the primary key only.
        * ``"row"``: the primary key plus every column value the session holds, for inserts
          and updates; the primary key only for deletes. Columns that are expired, deferred
          and not loaded, or filled in by the server and not fetched are absent: capture
          never runs SQL (``eager_defaults=True`` on the mapper fetches server defaults).
        * a :class:`PayloadFunction`: anything you compute.

        **Values only the database knows.** Every UPDATE a flush issues is announced,
        including one whose new values the database computes: a SQL expression assigned to
        an attribute (``forum.title = Forum.title + "!"``), a ``server_onupdate`` or
        ``Computed`` column. SQLAlchemy expires such columns after the UPDATE (unless
        ``eager_defaults`` fetched them, which it does not do for SQL expressions), and
        capture never runs SQL, so their new values are unknown. ``"changes"`` and
        ``"row"`` payloads then carry the key ``"$unknown"``: the list of those column keys,
        in mapper order, e.g. ``{"id": 1, "email": "b@x.org", "$unknown": ["title"]}``; the
        columns themselves are absent, never sent with a stale value. ``"$unknown"`` is
        omitted when empty, so payloads without such columns are unchanged; it cannot clash
        with an attribute key (``$`` is not valid in a Python name). It may also appear on
        an insert that a later UPDATE in the same transaction recomputed. Columns written
        on every UPDATE of their table (``onupdate``, the ``version_id_col`` counter,
        ``server_onupdate``, ``Computed``) count as changed whenever the row is updated,
        with their value if the session has it (``onupdate`` computed in Python, the
        version counter, values fetched by ``eager_defaults``) and in ``"$unknown"``
        otherwise, even if the database happened to write the same value. A
        :class:`PayloadFunction` gets these keys in ``changed``; reading such an attribute
        there loads it. ``"pk"`` payloads are unchanged: such a row is an ``update`` like
        any other. Excluded columns are never named, not even in ``"$unknown"``.
    :param exclude: attribute keys (or column names) that never leave the process in any
        mode: removed from every payload, custom ones included (under either name), and
        primary key columns too (the payload then carries the rest, or no data).
    :param enabled: ``False`` turns notifications for the model off, like
        ``__sqla_notify__ = False``.
    :param filter_by: attribute keys (or column names) of the columns that clients may
        filter this model's notifications on, e.g. ``{"forum_id", "status"}``. Capture then
        records their values before and after each change (see :attr:`Notification.filter_before`),
        for the hub to choose the subscribers; these values are not sent to browsers. Each
        must be a mapped column attribute, never an excluded one: checked when the model's
        options are first resolved (its first flush or bulk statement), which then raises
        :class:`ValueError`.
    :param old: ``True``: updates carry :attr:`Notification.old`, the values before the
        transaction of the columns that changed, excluded columns left out. Off by default:
        it sends what a ``"changes"`` payload does not (the previous value of every changed
        column), which a model must choose to reveal.
    :raises TypeError: for an argument of the wrong type.
    :raises ValueError: for an unknown payload mode, an empty collection name or a column
        that is both excluded and in ``filter_by``.
    """

    collection: str | None = None
    payload: PayloadMode | PayloadFunction = "pk"
    exclude: Collection[str] = ()
    enabled: bool = True
    filter_by: Collection[str] = ()
    old: bool = False

    def __post_init__(self) -> None:
        if self.collection is not None:
            if not isinstance(self.collection, str):
                raise TypeError(
                    f"NotifyOptions.collection expected a str or None, "
                    f"got {type(self.collection).__name__}: {self.collection!r}"
                )
            if not self.collection:
                raise ValueError("NotifyOptions.collection expected a non-empty name, got ''")
        if isinstance(self.payload, str):
            if self.payload not in _MODES:
                raise ValueError(
                    f"NotifyOptions.payload expected one of {', '.join(map(repr, _MODES))} "
                    f"or a function, got {self.payload!r}"
                )
        elif not callable(self.payload):
            raise TypeError(
                f"NotifyOptions.payload expected a mode name or a function, "
                f"got {type(self.payload).__name__}: {self.payload!r}"
            )
        if isinstance(self.exclude, str) or not all(isinstance(k, str) for k in self.exclude):
            raise TypeError(
                f"NotifyOptions.exclude expected a collection of attribute names, "
                f"got {self.exclude!r}"
            )
        if isinstance(self.filter_by, str) or not all(isinstance(k, str) for k in self.filter_by):
            raise TypeError(
                f"NotifyOptions.filter_by expected a collection of attribute names, "
                f"got {self.filter_by!r}"
            )
        if not isinstance(self.old, bool):
            raise TypeError(f"NotifyOptions.old expected a bool, got {type(self.old).__name__}: {self.old!r}")
        # Normalise so that equal options compare and hash equal.
        exclude, filter_by = frozenset(self.exclude), frozenset(self.filter_by)
        object.__setattr__(self, "exclude", exclude)
        object.__setattr__(self, "filter_by", filter_by)
        both = filter_by & exclude
        if both:
            raise ValueError(
                f"NotifyOptions.filter_by expected columns that are not excluded, got "
                f"{', '.join(sorted(both))}, also in exclude: an excluded column never leaves "
                f"the process, so clients cannot filter on it"
            )


class InvalidOptions(ValueError):
    """Options that do not fit their model, raised where a fallback would be unsafe."""


_DEFAULT = NotifyOptions()
# Column types whose values are immutable (by exact class: a subclass or a TypeDecorator may
# load anything, JSON and ARRAY load dicts and lists).
_SCALAR_TYPES = frozenset((
    sqltypes.Integer, sqltypes.BigInteger, sqltypes.SmallInteger, sqltypes.String, sqltypes.Text,
    sqltypes.Unicode, sqltypes.UnicodeText, sqltypes.Boolean, sqltypes.Float, sqltypes.Double,
    sqltypes.Numeric, sqltypes.Date, sqltypes.DateTime, sqltypes.Time, sqltypes.Interval, sqltypes.Uuid,
))
_Mode = Literal["pk", "changes", "row", "function"]


class ModelInfo:
    """What capture needs to know about one mapper, computed once and cached."""

    __slots__ = (
        "collection", "mode", "function", "pk_keys", "pk_set", "pk_shown", "columns", "exclude",
        "exclude_names", "payload_columns", "identity_class", "actions", "written", "key_tables",
        "filter_by", "old", "oldable", "extras", "plain", "lone", "native", "fast",
        "nonkey_columns", "scalar",
    )

    def __init__(
        self,
        collection: str,
        mode: _Mode,
        function: PayloadFunction | None,
        pk_keys: tuple[str, ...],
        columns_in_order: tuple[str, ...],
        exclude: frozenset[str],
        identity_class: type,
        written: tuple[tuple[str, frozenset[Any] | None], ...] = (),
        key_tables: dict[str, frozenset[Any]] | None = None,
        exclude_names: frozenset[str] | None = None,
        filter_by: tuple[str, ...] = (),
        old: bool = False,
        native: bool = True,
        scalar: bool = False,
    ) -> None:
        self.collection = collection
        self.mode = mode
        self.function = function
        #: attribute keys of the primary key, in the mapper's primary key order
        self.pk_keys = pk_keys
        self.pk_set = frozenset(pk_keys)
        #: the positions of the primary key columns a payload may show; ``None``: all of
        #: them (the usual case: nothing to filter)
        self.pk_shown = (
            tuple(i for i, k in enumerate(pk_keys) if k not in exclude) if self.pk_set & exclude else None
        )
        #: first item of this model's identity keys (the hierarchy's base class)
        self.identity_class = identity_class
        #: shared, preallocated buffer values for rows without payload values
        self.actions = {a: (a, self) for a in ("insert", "update", "delete")}
        #: attribute keys of every mapped column, excluded ones included (change detection)
        self.columns = frozenset(columns_in_order)
        self.exclude = exclude
        #: ``exclude`` as attribute keys and column names alike: what a payload function's
        #: result may not hold, whichever it uses
        self.exclude_names = exclude if exclude_names is None else exclude_names
        #: the keys a "row"/"changes" payload may carry, in the mapper's column order
        self.payload_columns = tuple(k for k in columns_in_order if k not in exclude)
        #: keys the database or SQLAlchemy writes on every UPDATE (``onupdate``,
        #: ``server_onupdate``, ``Computed``, the version counter), each with the tables whose
        #: UPDATE writes it (``None``: any UPDATE of the row); empty for most models
        self.written = written
        #: the tables of each column key; filled only when ``written`` is not empty
        self.key_tables = key_tables or {}
        #: attribute keys whose values before and after each change are recorded, in the
        #: mapper's column order (empty for most models)
        self.filter_by = filter_by
        #: whether updates carry the previous values of their changed columns
        self.old = old
        #: the column keys whose previous values an update carries: every column but the
        #: excluded ones with ``old``, none without (one set test per changed column)
        self.oldable = self.columns - exclude if old else frozenset()
        #: rows are recorded by key and action only: no payload values, no filter values,
        #: no old values (the cheapest path, which most models take)
        self.plain = mode == "pk" and not filter_by and not old
        #: entries carry filter and old values (see :mod:`.buffer`)
        self.extras = bool(filter_by) or old
        #: rows are recorded as ``Lone`` entries, without a dict, when first seen: filter or
        #: old values, at most one filter column, no payload values
        self.lone = mode == "pk" and self.extras and len(filter_by) <= 1
        #: the instances keep their attributes in ``__dict__`` (SQLAlchemy's default
        #: instrumentation): capture reads it directly, not through ``InstanceState.dict``
        self.native = native
        #: a transaction's first flush logs this model's rows in a loop of their own (see
        #: ``recorder._log_rows``): plain or Lone rows, native instances, no column written
        #: on every UPDATE, and for a plain model a one-column primary key
        self.fast = native and not written and (self.lone or (self.plain and len(pk_keys) == 1))
        #: ``columns`` less the primary key's
        self.nonkey_columns = self.columns - self.pk_set
        #: every column's type loads immutable values (numbers, strings, dates...): an old
        #: value needs no copy, nor the test for one (see ``recorder._snapshot``)
        self.scalar = scalar


def default_collection(mapper: Mapper[Any]) -> str:
    """The collection name used when a model does not set one."""
    table = mapper.base_mapper.local_table
    name = getattr(table, "name", None)
    # str(): a table's name is a ``quoted_name``, a str subclass that encoders such as
    # msgspec's refuse; a notification must hold plain values.
    return str(name) if isinstance(name, str) else mapper.base_mapper.class_.__name__


def model_info(mapper: Mapper[Any]) -> ModelInfo | None:
    """Resolve the options of ``mapper``'s class; ``None`` when it opted out.

    Runs inside a flush, so it must not raise: options that do not fit the model (an
    ``exclude`` naming no column) are logged and replaced by the safe primary-key mode.
    """
    raw: Any = getattr(mapper.class_, OPTIONS_ATTRIBUTE, _DEFAULT)
    if raw is False:
        return None
    options = raw if isinstance(raw, NotifyOptions) else None
    if options is None:
        logger.error(
            "%s.%s expected a NotifyOptions or False, got %r; notifying with defaults",
            mapper.class_.__name__, OPTIONS_ATTRIBUTE, raw, extra=fields("bad_options"),
        )
        options = _DEFAULT
    if not options.enabled:
        return None

    key_of_column = {}
    for prop in mapper.column_attrs:
        for column in prop.columns:
            key_of_column[getattr(column, "name", prop.key)] = prop.key
    names_of_key: dict[str, set[str]] = {}
    for name, key in key_of_column.items():
        names_of_key.setdefault(key, set()).add(name)
    ordered = tuple(p.key for p in mapper.column_attrs)
    columns = frozenset(ordered)
    pk_keys = tuple(mapper.get_property_by_column(c).key for c in mapper.primary_key)
    collection = options.collection or default_collection(mapper)

    exclude: set[str] = set()
    unknown = []
    for name in options.exclude:
        if name in columns:
            exclude.add(name)
        elif name in key_of_column:
            exclude.add(key_of_column[name])
        else:
            unknown.append(name)
    mode: _Mode = "function" if callable(options.payload) else options.payload
    if unknown:
        logger.error(
            "%s.%s excludes %s, which %s no column of the model (columns: %s); "
            "sending primary keys only for this model until it is fixed",
            mapper.class_.__name__, OPTIONS_ATTRIBUTE, ", ".join(sorted(unknown)),
            "is" if len(unknown) == 1 else "are", ", ".join(sorted(columns)),
            extra=fields("bad_options", collection=collection),
        )
        mode = "pk"
    filter_by = _filter_by(mapper, options, columns, key_of_column, exclude, ordered)
    function = options.payload if mode == "function" else None
    identity_class = mapper.identity_key_from_primary_key((None,) * len(pk_keys))[0]
    written, key_tables = _written_on_update(mapper)
    exclude_names = set(exclude)
    for key in exclude:
        exclude_names |= names_of_key.get(key, set())
    return ModelInfo(
        collection, mode, function, pk_keys, ordered, frozenset(exclude),  # type: ignore[arg-type]
        identity_class, written, key_tables, frozenset(exclude_names), filter_by, options.old,
        # ext.instrumentation's custom class managers may keep attributes elsewhere.
        type(mapper.class_manager) is ClassManager,
        all(type(c.type) in _SCALAR_TYPES for prop in mapper.column_attrs for c in prop.columns),
    )


def _filter_by(
    mapper: Mapper[Any],
    options: NotifyOptions,
    columns: frozenset[str],
    key_of_column: Mapping[str, str],
    exclude: set[str],
    ordered: tuple[str, ...],
) -> tuple[str, ...]:
    """``options.filter_by`` as attribute keys in mapper order.

    Unlike the other options, a wrong one raises: degrading silently would make filtered
    subscribers miss rows, or filter on a column that must not leave the process.

    :raises ValueError: for a name that is no mapped column attribute, or an excluded one.
    """
    keys = set()
    for name in options.filter_by:
        key = name if name in columns else key_of_column.get(name)
        if key is None:
            raise InvalidOptions(
                f"{mapper.class_.__name__}.{OPTIONS_ATTRIBUTE}: filter_by expected mapped column "
                f"attributes of {mapper.class_.__name__} (one of {', '.join(sorted(columns))}), "
                f"got {name!r}"
            )
        if key in exclude:
            raise InvalidOptions(
                f"{mapper.class_.__name__}.{OPTIONS_ATTRIBUTE}: filter_by expected columns that "
                f"are not excluded, got {name!r}, which exclude names: an excluded column never "
                f"leaves the process, so clients cannot filter on it"
            )
        keys.add(key)
    return tuple(k for k in ordered if k in keys)


def _written_on_update(
    mapper: Mapper[Any],
) -> tuple[tuple[tuple[str, frozenset[Any] | None], ...], dict[str, frozenset[Any]]]:
    """The column keys every UPDATE of a row writes without the session assigning them.

    ``onupdate`` (Python or SQL), ``server_onupdate`` and ``Computed`` columns change on every
    UPDATE of their table; the ``version_id_col`` on every UPDATE of the row.
    """
    version = mapper.version_id_col
    written: list[tuple[str, frozenset[Any] | None]] = []
    key_tables: dict[str, frozenset[Any]] = {}
    for prop in mapper.column_attrs:
        tables = frozenset(getattr(c, "table", None) for c in prop.columns)
        key_tables[prop.key] = tables
        if version is not None and any(c is version for c in prop.columns):
            written.append((prop.key, None))
        elif any(
            getattr(c, "onupdate", None) is not None or getattr(c, "server_onupdate", None) is not None
            for c in prop.columns
        ):
            written.append((prop.key, tables))
    if not written:
        return (), {}
    return tuple(written), key_tables


def filter_columns(models: Any) -> dict[str, frozenset[str]]:
    """The columns clients may filter on, by collection: every model's
    ``NotifyOptions(filter_by=...)``, for ``notify_router(filters=...)``.

    >>> filter_columns(Base)  # doctest: +SKIP
    {'posts': frozenset({'forum_id', 'status'})}

    :param models: a declarative base class (``DeclarativeBase`` subclass) or a
        ``registry``; every class mapped in it counts, so import your models first.
    :raises TypeError: for anything else.
    :raises InvalidOptions: if a model's ``filter_by`` names what is not a column, or an
        excluded one.
    """
    registry = models if isinstance(models, _registry) else getattr(models, "registry", None)
    if not isinstance(registry, _registry):
        raise TypeError(
            f"filter_columns() expected a declarative base class or a registry, got "
            f"{type(models).__name__}: {models!r}"
        )
    registry.configure()
    found: dict[str, set[str]] = {}
    for mapper in registry.mappers:
        info = model_info(mapper)
        if info is not None and info.filter_by:
            found.setdefault(info.collection, set()).update(info.filter_by)
    return {collection: frozenset(columns) for collection, columns in sorted(found.items())}
