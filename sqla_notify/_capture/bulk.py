"""Capture for ORM bulk statements run through ``session.execute()``.

``session.execute(update(Forum).where(...))``, ``delete(...)`` and ``insert(Forum)`` with a
list of rows never flush, so the flush hook cannot see them. They pass through
``SessionEvents.do_orm_execute`` instead, where the affected primary keys are learnt without
changing what the caller gets back:

* **UPDATE / DELETE with a WHERE clause**: on a database with ``UPDATE/DELETE ... RETURNING``
  (PostgreSQL, SQLite ≥ 3.35, MariaDB for DELETE) the statement gets
  ``return_defaults(<primary key>)``; the keys arrive in ``result.returned_defaults_rows``
  while the caller keeps its rows, ``rowcount`` and ``synchronize_session`` strategy.
* **UPDATE by primary key** (a list of parameter dicts) and **INSERT of a list of dicts
  that carry their primary keys**: the keys are in the parameters.
* Anything else (no RETURNING, a statement that already has its own ``RETURNING``, an
  INSERT without keys, ``INSERT ... FROM SELECT``): one notification without ``data`` for
  the collection, meaning "reload it". Never silently nothing.

Bulk rows carry the primary key only, in every payload mode: the new values were computed by
the database. For a model with ``filter_by``, the ``RETURNING`` clause also asks for those
columns: an UPDATE learns their new values (``filter_after``) and a DELETE the deleted rows'
values (``filter_before``). An UPDATE cannot learn the values it replaced without a query of
its own, so its ``filter_before`` is unknown (``None``); an UPDATE by primary key and an
INSERT know the values their parameters set, and nothing else. Bulk rows never carry ``old``. The statement is executed before anything is recorded, so a statement that
fails records nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy.sql.elements import BindParameter

from .buffer import DELETE, INSERT, UPDATE, Row, SomeRows, identity
from .recorder import Recorder

if TYPE_CHECKING:
    from sqlalchemy.engine import Result
    from sqlalchemy.orm import ORMExecuteState

logger = logging.getLogger("sqla_notify")


def do_orm_execute(recorder: Recorder, state: ORMExecuteState) -> Result[Any] | None:
    """Run a bulk DML statement and record the rows it affected in the session's buffer."""
    if state.is_insert:
        action = INSERT
    elif state.is_update:
        action = UPDATE
    elif state.is_delete:
        action = DELETE
    else:
        return None  # SELECTs: the common case, so decided first and cheaply
    if not state.is_orm_statement:
        return None  # Core DML on a Table: announce it with notify(..., session=...)
    mapper = state.bind_mapper
    info = recorder.info(mapper) if mapper is not None else None
    if mapper is None or info is None:
        return None

    statement: Any = state.statement
    params = state.parameters
    pk_keys = info.pk_keys
    keys: list[tuple[Any, ...]] | None = _keys_from_parameters(params, pk_keys, action)
    use_returning = (
        keys is None
        and action != INSERT
        and not getattr(statement, "_returning", ())
        and not getattr(statement, "_return_defaults", False)
        and _dialect_returns(state, action)
    )
    filter_by = info.filter_by
    found: list[dict[str, Any]] | None = None  # filter_by's values of each row, from RETURNING
    if use_returning:
        columns = list(mapper.primary_key)
        by_column: dict[str, str] = {}
        for k in filter_by:
            column = mapper.get_property(k).columns[0]
            by_column[column.key] = k
            columns.append(column)
        result = state.invoke_statement(statement=statement.return_defaults(*columns))
        returned = result.returned_defaults_rows or ()  # type: ignore[attr-defined]
        if filter_by:
            # RETURNING's columns come in no set order (the SET clause's first): by name.
            # It leaves out the columns the SET clause assigns a value: theirs are in it.
            assigned = _assigned(statement, by_column) if action == UPDATE else {}
            pk_names = [c.key for c in mapper.primary_key]
            keys, found = [], []
            for row in returned:
                named = dict(zip(row._fields, row, strict=True))
                keys.append(tuple([named[name] for name in pk_names]))
                values = dict(assigned)
                for name, k in by_column.items():
                    if name in named:
                        values[k] = named[name]
                found.append(values)
        else:
            keys = [tuple(row) for row in returned]
    else:
        result = state.invoke_statement()

    buf = recorder.buffer(state.session)
    if keys is not None and info.extras:
        # Only reached without RETURNING when _keys_from_parameters found a list of dicts.
        given: Any = [params] if isinstance(params, Mapping) else params
        for i, pk in enumerate(keys):
            if found is not None:
                values = found[i]
            else:  # what the parameters set; the rest is unknown
                values = {k: given[i][k] for k in filter_by if k in given[i]}
            before, after = (values, None) if action == DELETE else (None, values)
            buf.add(identity(info, pk), Row(action, info, None, before, after, None))
        return result
    value = info.actions[action]
    if keys is not None:
        for pk in keys:
            buf.add(identity(info, pk), value)
    elif getattr(result, "rowcount", -1) != 0:
        buf.add(SomeRows(), value)
    return result


def _keys_from_parameters(
    params: Any, pk_keys: tuple[str, ...], action: str
) -> list[tuple[Any, ...]] | None:
    """Primary keys named by an executemany's parameter dicts, or None if they do not all."""
    if action == INSERT and isinstance(params, Mapping):
        params = [params]  # a one-row INSERT; for UPDATE a lone dict is bind values, not rows
    if action == DELETE or not isinstance(params, list) or not params:
        return None
    keys = []
    for row in params:
        if not isinstance(row, Mapping):
            return None
        try:
            keys.append(tuple([row[k] for k in pk_keys]))
        except KeyError:
            return None
    return keys


def _assigned(statement: Any, by_column: Mapping[str, str]) -> dict[str, Any]:
    """The filter columns an UPDATE's SET clause assigns a literal value, e.g. ``.values(forum_id=8)``.

    A SQL expression, or a ``bindparam()`` filled in at execution, leaves the value unknown.
    """
    out: dict[str, Any] = {}
    for target, value in (getattr(statement, "_values", None) or {}).items():
        name = target if isinstance(target, str) else getattr(target, "key", None)
        key = by_column.get(name)  # type: ignore[arg-type]
        if key is not None and isinstance(value, BindParameter) and value.unique and value.callable is None:
            out[key] = value.value
    return out


def _dialect_returns(state: ORMExecuteState, action: str) -> bool:
    try:
        dialect = state.session.get_bind(**state.bind_arguments).dialect
    except Exception:  # noqa: BLE001 - no bind resolvable here; the statement will say so
        return False
    return bool(dialect.update_returning if action == UPDATE else dialect.delete_returning)
