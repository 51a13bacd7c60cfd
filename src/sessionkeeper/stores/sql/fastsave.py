"""One session's write in one transaction of few statements, through the raw driver connection.

This is the path of a request's write under ``EndOfRequest`` (a ``save_many`` of one session,
``multi_row`` layout; on PostgreSQL and MySQL/MariaDB also a group commit's batch of several,
each session once, in one transaction and one round trip: ``save_many``). It is optimistic: the
version check is in the write itself (``UPDATE ...
WHERE version = expected AND tombstone_until IS NULL``; a creation is an ``INSERT`` that meets
the primary key when the row exists), so nothing is read first and nothing is written after.
When that check does not pass (a conflict, a tombstone, a missing row, a row SQLite holds with
wrong types) the transaction wrote nothing, and :meth:`FastSave.save` answers ``None``: the store
then runs the general path of :mod:`.ops`, which locks the row and decides CONFLICT, GONE or a
merge exactly as before. So the contract's answers come from one place, and this module only
makes the common case cheap.

Per database:

* PostgreSQL (psycopg, :mod:`.fastsave_postgres`): one statement in autocommit, a
  data-modifying CTE (the versioned update or the insert of the session row, the attribute
  upserts and deletes when it matched, the new version returned): one round trip, one commit.
* SQLite (pysqlite): ``BEGIN IMMEDIATE``, the session row, one ``executemany`` of attributes,
  the removed names, ``COMMIT``: in process, no SQLAlchemy per-statement overhead.
* MySQL/MariaDB (PyMySQL, :mod:`.fastsave_mysql`): the same statements and the ``COMMIT`` sent
  as one multi-statement text (our engines connect with ``CLIENT.MULTI_STATEMENTS``): one round
  trip, one commit; on a connection without that flag, one statement at a time, still one
  transaction.

A write that travels as one round trip (PostgreSQL's, MySQL's multi-statement text) carries a
deadline fence (:mod:`..fence`): the server writes nothing and answers FENCED if it begins the
write after the moment its client stops waiting for the answer, or (several statements) reaches
its ``COMMIT`` after it.

Thread safety: stateless apart from the SQL text built once; each call gets its own connection.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from ..base import SaveRequest, SaveResult, SaveStatus
from ..fence import ServerClock
from .schema import Tables

#: The drivers whose raw connection this module speaks to, by SQLAlchemy dialect name.
DRIVERS = {"sqlite": "pysqlite", "postgresql": "psycopg", "mysql": "pymysql"}

#: The expiry cap of a session without a deadline: later than any idle expiry (a year 3e12).
_NO_DEADLINE = 1e20

#: What a creation writes, in the order of ``_insert_sql``'s columns.
_INSERT_VALUES = "%(app)s %(token)s 1 %(ca)s %(la)s %(t)s %(abs)s %(exp)s %(owner)s %(node)s"
_INSERT_VALUES += " NULL NULL"
#: On SQLite the column types are not enforced: a row whose metadata has the wrong types is left
#: to the general path, which reads it as gone (``schema.is_valid_row``).
_SQLITE_TYPES = (
    " AND typeof(version) = 'integer' AND typeof(created_at) IN ('integer', 'real')"
    " AND typeof(last_access_at) IN ('integer', 'real') AND typeof(timeout_s) IN ('integer', 'real')"
    " AND typeof(owner) IN ('text', 'null') AND typeof(node) IN ('text', 'null')"
)


def _attributes(req: SaveRequest) -> tuple[list[str], list[bytes], list[str]]:
    """Names and values to upsert, and names to delete. A name both changed and removed ends
    removed, as in the general path (its upsert runs before its delete)."""
    removed = sorted(req.removed) if not req.full else []
    names = [n for n in req.changed if n not in req.removed or req.full]
    return names, [bytes(req.changed[n]) for n in names], removed


def lock_order(reqs: Sequence[SaveRequest]) -> list[int]:
    """The indices of ``reqs`` in (app, token) order: the order every writer locks rows in, so
    that two batches never wait on each other."""
    return sorted(range(len(reqs)), key=lambda i: (reqs[i].app, reqs[i].token))


class FastSave:
    """The statements for one store's tables; ``save`` runs them on a raw driver connection."""

    #: The SQL of a creation and of an update (built by ``_build``), the update also without
    #: the owner column (``same_owner``); ``upsert``: attributes.
    insert: str
    update: str
    same_owner: str
    upsert: str

    def __init__(self, tables: Tables, dialect: sa.Dialect) -> None:
        quote = dialect.identifier_preparer
        self.sessions = quote.format_table(tables.sessions)
        self.attributes = quote.format_table(tables.attributes)
        self._build()

    def _build(self) -> None:
        raise NotImplementedError

    #: Whether :meth:`save_many` may write a batch of several sessions.
    batches = False
    #: The most sessions :meth:`save_many` is given: a group commit's batch (as many as the
    #: requests that ended together). A larger one, a flush, takes the general path, whose bulk
    #: statements cost less from a few dozen sessions on (256 sessions on PostgreSQL: 231 ms
    #: one statement each, 75 ms in bulk; MariaDB 279 against 137 ms).
    max_batch = 16

    def save_many(
        self, raw: Any, reqs: Sequence[SaveRequest], clock: ServerClock | None
    ) -> list[SaveResult | None] | None:
        """Several sessions' writes (each session once) in one transaction, where
        :attr:`batches`: each one's answer as :meth:`save`'s. ``None``: not this way (nothing
        written); the general path takes the batch."""
        return None

    def _update_for(self, req: SaveRequest) -> str:
        return self.update if req.owner_changed else self.same_owner

    def save(self, raw: Any, req: SaveRequest, clock: ServerClock | None) -> SaveResult | None:
        """Write ``req`` in one transaction on ``raw`` and answer SAVED, or ``None`` when the
        version check did not pass (nothing was written). With ``clock``, a write that travels
        as one round trip carries a deadline fence (:mod:`..fence`) and answers FENCED, having
        written nothing, when the server began it after that. Driver errors propagate, after
        the transaction is rolled back."""
        raise NotImplementedError

    @staticmethod
    def _fence(raw: Any, clock: ServerClock, now_sql: str) -> float:
        """The fence of a write sent now on ``raw``; ``now_sql`` reads the server's epoch time
        when the offset must be measured (one more round trip, rarely)."""

        def probe() -> float:
            with raw.cursor() as cur:
                cur.execute(now_sql)
                return float(cur.fetchone()[0])

        return clock.fence(probe)

    def _update_sql(self, greatest: str, guard: str = "", *, owner: bool = True) -> str:
        # MySQL assigns left to right (expires_at sees the new last_access_at): GREATEST of it
        # again is the same value. %(cap)s is never NULL, as LEAST/MIN of a NULL is NULL.
        # ``owner``: set the owner column; without, its index is left alone (a request whose
        # owner did not change: ``SaveRequest.owner_changed``).
        least = {"MAX": "MIN", "GREATEST": "LEAST"}[greatest]
        return (
            f"UPDATE {self.sessions} SET version = version + 1, "
            f"last_access_at = {greatest}(last_access_at, %(la)s), "
            f"expires_at = {least}({greatest}(last_access_at, %(la)s) + %(t)s, %(cap)s), "
            "timeout_s = %(t)s, absolute_expires_at = %(abs)s, "
            + ("owner = %(owner)s, " if owner else "")
            + "node = %(node)s "
            "WHERE app = %(app)s AND token = %(token)s AND version = %(v)s "
            f"AND tombstone_until IS NULL{guard}"
        )

    def _insert_sql(self, source: str = "", types: str = "") -> str:
        """The creation's ``INSERT``: its ``VALUES``, or with ``source`` (``FROM ... WHERE``,
        a guard) the same values ``SELECT``ed, each cast to ``types`` (``-``: none)."""
        casts = [t.strip("-") for t in types.split()]
        values = ", ".join(
            v + t for v, t in itertools.zip_longest(_INSERT_VALUES.split(), casts, fillvalue="")
        )
        return (
            f"INSERT INTO {self.sessions} (app, token, version, created_at, last_access_at, "
            "timeout_s, absolute_expires_at, expires_at, owner, node, tombstone_until, data) "
            + (f"SELECT {values} {source}" if source else f"VALUES ({values})")
        )

    @staticmethod
    def _params(req: SaveRequest) -> dict[str, Any]:
        return {
            "app": req.app,
            "token": req.token,
            "v": req.expected_version,
            "ca": req.created_at,
            "la": req.last_access_at,
            "t": req.timeout_s,
            "abs": req.absolute_expires_at,
            # No deadline: a cap past any idle expiry.
            "cap": _NO_DEADLINE if req.absolute_expires_at is None else req.absolute_expires_at,
            "exp": req.expires_at,
            "owner": req.owner,
            "node": req.node,
        }


class _Sequential(FastSave):
    """SQLite and MySQL/MariaDB: the session row first, then the attribute statements only if
    it was written, then ``COMMIT``; any failure rolls back."""

    placeholder = "%s"
    integrity_error: type[BaseException] = Exception

    def _key(self, value: str) -> Any:
        return value

    def _begin(self, cur: Any) -> None:
        """Start the transaction (where the driver does not)."""

    def _fmt(self, sql: str) -> str:
        if self.placeholder == "?":
            return re.sub(r"%\((\w+)\)s", r":\1", sql)
        return sql

    def _delete_sql(self, n: int, *, keep: bool) -> str:
        names = ", ".join([self.placeholder] * n)
        test = ("NOT IN" if keep else "IN") + f" ({names})"
        p = self.placeholder
        where = f"app = {p} AND token = {p}" + (f" AND name {test}" if n else "")
        return f"DELETE FROM {self.attributes} WHERE {where}"

    def save(self, raw: Any, req: SaveRequest, clock: ServerClock | None) -> SaveResult | None:
        # Several round trips, the last a COMMIT: no fence (SQLite is in process; MySQL only
        # on a connection without multi-statements, a user's engine).
        return self._transaction(raw, [req])[0]

    def _transaction(self, raw: Any, reqs: Sequence[SaveRequest]) -> list[SaveResult | None]:
        """``reqs`` (each session once) in one transaction, in (app, token) order (the order
        every writer locks rows in): each one's answer, ``None`` for a session whose version
        check did not pass (nothing written for it; the others are). Any error rolls back."""
        order = lock_order(reqs)
        answers: list[SaveResult | None] = [None] * len(reqs)
        cur = raw.cursor()
        try:
            self._begin(cur)
            for i in order:
                if self._write_one(cur, reqs[i]):
                    answers[i] = SaveResult(SaveStatus.SAVED, reqs[i].expected_version + 1)
            if any(answers):
                raw.commit()
            else:
                raw.rollback()
        except BaseException:
            raw.rollback()
            raise
        finally:
            cur.close()
        return answers

    def _write_one(self, cur: Any, req: SaveRequest) -> bool:
        """One session's statements in the open transaction; whether its version check passed.
        A statement that fails a constraint backs out only its own changes (SQLite's and
        MySQL's statement rollback): a creation meeting an existing row writes nothing."""
        names, values, removed = _attributes(req)
        creating = req.expected_version == 0
        if creating:
            try:
                cur.execute(self.insert, self._params(req))
            except self.integrity_error:
                return False  # the row exists: live, tombstone or a concurrent creation
        else:
            cur.execute(self._update_for(req), self._params(req))
            if cur.rowcount != 1:
                return False
        app, token = self._key(req.app), self._key(req.token)
        if names:
            rows = [(app, token, self._key(n), v) for n, v in zip(names, values, strict=True)]
            cur.executemany(self.upsert, rows)
        if not creating and (removed or req.full):
            # A full write keeps only the names it wrote; another removes its removed names.
            gone = [self._key(n) for n in (names if req.full else removed)]
            cur.execute(self._delete_sql(len(gone), keep=req.full), (app, token, *gone))
        return True


class SqliteFastSave(_Sequential):
    placeholder = "?"
    #: A group commit's batch in one ``BEGIN IMMEDIATE`` ... ``COMMIT``: the write lock, which
    #: every process's writer waits for, taken once for all of them.
    batches = True

    def save_many(
        self, raw: Any, reqs: Sequence[SaveRequest], clock: ServerClock | None
    ) -> list[SaveResult | None] | None:
        return self._transaction(raw, reqs)

    def _build(self) -> None:
        import sqlite3

        self.integrity_error = sqlite3.IntegrityError
        self.update = self._fmt(self._update_sql("MAX", _SQLITE_TYPES))
        self.same_owner = self._fmt(self._update_sql("MAX", _SQLITE_TYPES, owner=False))
        self.insert = self._fmt(self._insert_sql())
        self.upsert = (
            f"INSERT INTO {self.attributes} (app, token, name, value) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (app, token, name) DO UPDATE SET value = excluded.value"
        )

    def _begin(self, cur: Any) -> None:
        # The write lock from the start (see ``SqliteDialect``): no deferred upgrade to fail.
        cur.execute("BEGIN IMMEDIATE")


def fast_save_for(tables: Tables, dialect: sa.Dialect) -> FastSave | None:
    """The fast path for ``dialect``'s driver, or ``None`` where it has none (another driver
    than the ones in :data:`DRIVERS`, e.g. a user's engine on psycopg2 or mysqlclient)."""
    name = "mysql" if dialect.name in ("mysql", "mariadb") else dialect.name
    if DRIVERS.get(name) != dialect.driver:
        return None
    # They build on this module's classes.
    from .fastsave_mysql import MysqlFastSave
    from .fastsave_postgres import PostgresFastSave

    cls = {"sqlite": SqliteFastSave, "postgresql": PostgresFastSave, "mysql": MysqlFastSave}[name]
    return cls(tables, dialect)
