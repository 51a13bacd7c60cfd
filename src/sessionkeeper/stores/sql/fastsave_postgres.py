"""The one-session write of :mod:`.fastsave` on PostgreSQL (psycopg): one statement in autocommit,
a data-modifying CTE (the versioned update or the insert of the session row, the attribute
upserts and deletes when it matched, the new version returned), with its deadline fence
(:mod:`..fence`): one round trip, one commit.

The statement's text follows the write's shape. Up to :data:`SCALARS` names (changed, or
removed) travel as one scalar parameter each (``VALUES (%(n0)s, %(v0)s), ...``, ``name IN
(%(r0)s, ...)``), more as arrays (``unnest``): psycopg dumps a list parameter in Python, some
30-50 µs of client CPU each, and a write of one attribute used to send three. A part with nothing
to do (no attribute changed, none removed) is left out. Each shape's text is built once, on
first use, and psycopg prepares it on the server after a few executions.

Thread safety: the texts are built into a dict that only grows (a race builds one twice, the
same); each call gets its own connection.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any

from ..base import SaveRequest, SaveResult, SaveStatus
from ..fence import ServerClock
from .fastsave import FastSave, _attributes, lock_order

#: Names (changed, or removed) up to which each is a parameter of its own; more go as arrays.
SCALARS = 8
#: A shape's count of names that travel as one array.
_ARRAY = -1

#: The insert's PostgreSQL types, which a ``SELECT`` (unlike ``VALUES``) does not take from the
#: columns.
_PG_TYPES = "::varchar ::varchar - ::float8 ::float8 ::float8 ::float8 ::float8 ::varchar"
_PG_TYPES += " ::varchar ::float8 ::bytea"
#: The server's time (epoch seconds) at execution, to measure its clock's offset.
_PG_NOW = "SELECT extract(epoch FROM clock_timestamp())::float8"

#: The batch's fence, tested again just before its ``COMMIT``: an error when the server is past
#: it, which aborts the transaction (the pipeline skips the ``COMMIT``). The cast of a text that
#: cannot be an integer is the error: it names the fence, and the planner cannot fold it (the
#: text holds the volatile ``clock_timestamp()``), as it would a constant ``1/0``.
_PG_CHECK = (
    "SELECT CASE WHEN clock_timestamp() <= to_timestamp(%(fence)s) THEN 0 "
    "ELSE ('sessionkeeper fence: late at ' || clock_timestamp())::int END"
)
#: The SQLSTATE (invalid_text_representation) and text of the error of a late ``_PG_CHECK``.
_LATE = ("22P02", "sessionkeeper fence: late at ")

#: ``psycopg.pq.TransactionStatus`` INTRANS and INERROR: a transaction open, to roll back.
_OPEN = (2, 3)

_NAMES = [f"n{i}" for i in range(SCALARS)]
_VALUES = [f"v{i}" for i in range(SCALARS)]
_REMOVED = [f"r{i}" for i in range(SCALARS)]


def _placeholders(keys: list[str], n: int, cast: str = "") -> list[str]:
    return [f"%({k})s{cast}" for k in keys[:n]]


class PostgresFastSave(FastSave):
    """One statement in autocommit: PostgreSQL runs it as its own transaction."""

    def _build(self) -> None:
        # ``f``: whether the server began the statement by its fence. ``clock_timestamp()`` is
        # the time of execution (``now()`` would be the transaction's start, and the time the
        # statement arrived is not the time a frozen server gets to it). A CTE is evaluated
        # once: the session row's condition and the answer read the same value.
        fence = "WITH f AS (SELECT clock_timestamp() <= to_timestamp(%(fence)s) AS ok), "
        insert = self._insert_sql("FROM f WHERE f.ok", _PG_TYPES)
        in_time = " AND (SELECT ok FROM f)"
        # The heads of the statements: the fence and the session row (``s``).
        self.insert = f"{fence}s AS ({insert} ON CONFLICT DO NOTHING RETURNING version)"
        self.update, self.same_owner = (
            f"{fence}s AS ({self._update_sql('GREATEST', in_time, owner=owner)} RETURNING version)"
            for owner in (True, False)
        )
        self._texts: dict[tuple[str, int, int, bool], str] = {}
        import psycopg

        # Whether the driver's libpq has pipeline mode (14+), which :meth:`save_many` needs.
        self.batches = psycopg.Pipeline.is_supported()

    def _text(self, head: str, names: int, removed: int, full: bool) -> str:
        """The statement of a write of this shape: ``head`` (a creation or an update), then
        ``names`` upserts and ``removed`` deletes (a count, or ``_ARRAY``)."""
        key = (head, names, removed, full)
        text = self._texts.get(key)
        if text is None:
            text = self._texts[key] = self._compose(head, names, removed, full)
        return text

    def _compose(self, head: str, names: int, removed: int, full: bool) -> str:
        a = self.attributes
        parts = [head]
        if names:
            if names == _ARRAY:
                source = "unnest(%(names)s::varchar[], %(values)s::bytea[])"
            else:
                rows = zip(_placeholders(_NAMES, names, "::varchar"), _VALUES, strict=False)
                source = "(VALUES " + ", ".join(f"({n}, %({v})s::bytea)" for n, v in rows) + ")"
            parts.append(
                f", u AS (INSERT INTO {a} (app, token, name, value) "
                f"SELECT %(app)s, %(token)s, n, v FROM {source} AS x(n, v) "
                "WHERE EXISTS (SELECT FROM s) "
                "ON CONFLICT (app, token, name) DO UPDATE SET value = excluded.value)"
            )
        gone = self._gone_test(names, removed, full)
        if head != self.insert and gone:
            # The delete and the upsert touch disjoint rows (``_attributes``), as one
            # statement's parts must: they see the same snapshot.
            parts.append(
                f", d AS (DELETE FROM {a} WHERE app = %(app)s AND token = %(token)s "
                f"AND EXISTS (SELECT FROM s) AND {gone})"
            )
        parts.append(" SELECT (SELECT ok FROM f), (SELECT version FROM s)")
        return "".join(parts)

    @staticmethod
    def _gone_test(names: int, removed: int, full: bool) -> str | None:
        """Which stored attributes an update deletes: a full write all but the names it wrote,
        another its removed names; ``None``: none."""
        if full:
            if not names:
                return "TRUE"
            if names == _ARRAY:
                return "name <> ALL(%(names)s::varchar[])"
            return f"name NOT IN ({', '.join(_placeholders(_NAMES, names))})"
        if not removed:
            return None
        if removed == _ARRAY:
            return "name = ANY(%(removed)s::varchar[])"
        return f"name IN ({', '.join(_placeholders(_REMOVED, removed))})"

    @staticmethod
    def _bind(params: dict[str, Any], names: list[str], values: list[bytes]) -> int:
        """Add the changed names and values to ``params``; their count in the shape."""
        if len(names) > SCALARS:
            params["names"], params["values"] = names, values
            return _ARRAY
        for i, (name, value) in enumerate(zip(names, values, strict=True)):
            params[_NAMES[i]], params[_VALUES[i]] = name, value
        return len(names)

    @staticmethod
    def _bind_removed(params: dict[str, Any], removed: list[str]) -> int:
        if len(removed) > SCALARS:
            params["removed"] = removed
            return _ARRAY
        for i, name in enumerate(removed):
            params[_REMOVED[i]] = name
        return len(removed)

    def _statement(self, req: SaveRequest) -> tuple[str, dict[str, Any]]:
        """The text and parameters of ``req``'s write, all but its fence."""
        names, values, removed = _attributes(req)
        head = self.insert if req.expected_version == 0 else self._update_for(req)
        params = self._params(req)
        shape = self._bind(params, names, values), self._bind_removed(params, removed)
        return self._text(head, *shape, req.full), params

    @staticmethod
    def _answer(in_time: bool, version: int | None) -> SaveResult | None:
        if not in_time:
            return SaveResult(SaveStatus.FENCED)  # nothing written
        return None if version is None else SaveResult(SaveStatus.SAVED, int(version))

    def save(self, raw: Any, req: SaveRequest, clock: ServerClock | None) -> SaveResult | None:
        sql, params = self._statement(req)
        autocommit = raw.autocommit
        raw.autocommit = True  # the statement is its transaction: no BEGIN, no COMMIT to send
        try:
            params["fence"] = math.inf if clock is None else self._fence(raw, clock, _PG_NOW)
            with raw.cursor() as cur:
                cur.execute(sql, params)
                in_time, version = cur.fetchone()
        finally:
            if not raw.closed:
                raw.autocommit = autocommit
        return self._answer(in_time, version)

    def save_many(
        self, raw: Any, reqs: Sequence[SaveRequest], clock: ServerClock | None
    ) -> list[SaveResult | None]:
        """Several sessions' writes (each session once) in one transaction and one round trip:
        ``BEGIN``, each one's statement in (app, token) order (the order every writer locks
        rows in), the fence's test (:data:`_PG_CHECK`), ``COMMIT``, sent together in psycopg's
        pipeline mode. Answers as :meth:`save`, each session its own: one that was stale or
        gone is ``None`` (nothing written for it, the others committed). A server past the
        fence before the ``COMMIT`` commits nothing: every session FENCED. A driver error rolls
        the whole transaction back and propagates."""
        order = lock_order(reqs)
        statements = [self._statement(reqs[i]) for i in order]
        autocommit = raw.autocommit
        raw.autocommit = True  # our own BEGIN and COMMIT, queued with the statements
        cursors: list[Any] = []
        try:
            fence = math.inf if clock is None else self._fence(raw, clock, _PG_NOW)
            with raw.pipeline():
                raw.execute("BEGIN")
                for sql, params in statements:
                    params["fence"] = fence
                    cursors.append(raw.cursor())
                    cursors[-1].execute(sql, params)
                if clock is not None:
                    raw.execute(_PG_CHECK, {"fence": fence})
                raw.execute("COMMIT")
            answers = [self._answer(*cur.fetchone()) for cur in cursors]
        except BaseException as exc:
            # On a connection that still answers; a broken one's own error is the one raised
            # (and the pool's reset rolls back whatever a failed ROLLBACK left).
            with contextlib.suppress(Exception):
                if not raw.closed and raw.info.transaction_status in _OPEN:
                    raw.execute("ROLLBACK")
            if not _late(exc):
                raise
            answers = [SaveResult(SaveStatus.FENCED)] * len(reqs)  # nothing committed
        finally:
            for cur in cursors:
                cur.close()
            if not raw.closed:
                raw.autocommit = autocommit
        out: list[SaveResult | None] = [None] * len(reqs)
        for i, answer in zip(order, answers, strict=True):
            out[i] = answer
        return out


def _late(exc: BaseException) -> bool:
    """Whether ``exc`` is the error of :data:`_PG_CHECK` run after the fence."""
    return getattr(exc, "sqlstate", None) == _LATE[0] and _LATE[1] in str(exc)
