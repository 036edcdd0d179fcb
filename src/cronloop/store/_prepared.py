"""Core statements compiled once per dialect and run on the DBAPI cursor of a Connection.

Why hand-written: SQLAlchemy's per-execution bookkeeping costs about 40 µs, ten times what
SQLite needs to run a small statement, and a store write runs 4-6 of them. The statements on
every write path are therefore built with Core, compiled by SQLAlchemy for the connection's
dialect once, and executed on the DBAPI cursor of the same connection, inside the transaction
SQLAlchemy opened. Only plain column types (strings, integers) pass through here, which need
no bind or result processing on any dialect. Everything else uses ``Connection.execute``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

from cronloop.store._codec import Row

__all__ = ["Prepared", "fetch_all"]


class _Compiled:
    """SQL text plus a function turning a parameter mapping into the driver's arguments."""

    __slots__ = ("args", "sql")

    def __init__(self, sql: str, order: tuple[str, ...] | None, fixed: dict[str, Any]) -> None:
        self.sql = sql
        self.args: Callable[[Mapping[str, Any]], Any]
        if order is None:  # named paramstyle: the mapping itself
            self.args = (lambda params: {**fixed, **params}) if fixed else (lambda params: params)
        elif fixed:
            self.args = lambda params: tuple(
                [fixed[name] if name in fixed else params[name] for name in order]
            )
        elif len(order) == 1:
            only = order[0]
            self.args = lambda params: (params[only],)
        else:
            self.args = operator.itemgetter(*order)  # a tuple in position order, in C


class Prepared:
    """One Core statement, compiled per dialect on first use."""

    __slots__ = ("_by_dialect", "statement")

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._by_dialect: dict[tuple[str, str], _Compiled] = {}

    def _compiled(self, conn: Connection) -> _Compiled:
        dialect = conn.dialect
        key = (dialect.name, dialect.driver)
        found = self._by_dialect.get(key)
        if found is None:
            compiled = self.statement.compile(dialect=dialect)
            assert isinstance(compiled, SQLCompiler)
            # Values fixed in the statement itself (``id == 1``) travel as binds too.
            fixed = {
                name: bind.value
                for bind, name in compiled.bind_names.items()
                if not bind.required and bind.callable is None
            }
            order = tuple(compiled.positiontup or ()) if compiled.positional else None
            found = _Compiled(compiled.string, order, fixed)
            self._by_dialect[key] = found
        return found

    def run(self, conn: Connection, params: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> int:
        """Execute once (a mapping) or for many parameter sets; return the rows affected."""
        compiled = self._compiled(conn)
        cursor = conn.connection.cursor()
        try:
            if isinstance(params, Mapping):
                cursor.execute(compiled.sql, compiled.args(params))
            else:
                cursor.executemany(compiled.sql, [compiled.args(p) for p in params])
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def fetch(self, conn: Connection, params: Mapping[str, Any]) -> list[Row]:
        """Execute once and return every result row as a dict keyed by column name."""
        compiled = self._compiled(conn)
        cursor = conn.connection.cursor()
        try:
            cursor.execute(compiled.sql, compiled.args(params))
            names = [column[0] for column in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        finally:
            cursor.close()


def fetch_all(conn: Connection, statement: ClauseElement) -> list[Row]:
    """Run a one-off Core query (e.g. with an ``IN`` list) on the DBAPI cursor; rows as dicts.

    The statement is compiled with its parameters rendered into position, which costs one
    compile per call, less than SQLAlchemy's per-row result handling on large results.
    """
    compiled = statement.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    assert isinstance(compiled, SQLCompiler)
    params = compiled.construct_params()
    if compiled.positional:
        args: Any = tuple(params[name] for name in compiled.positiontup or ())
    else:
        args = params
    cursor = conn.connection.cursor()
    try:
        cursor.execute(compiled.string, args)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        cursor.close()
