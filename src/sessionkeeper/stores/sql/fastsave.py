"""One session's write in one transaction of few statements, through the raw driver connection.

This is the path of a request's write under ``EndOfRequest`` (a ``save_many`` of one session,
``multi_row`` layout). It is optimistic: the version check is in the write itself (``UPDATE ...
WHERE version = expected AND tombstone_until IS NULL``; a creation is an ``INSERT`` that meets
the primary key when the row exists), so nothing is read first and nothing is written after.
When that check does not pass (a conflict, a tombstone, a missing row, a row SQLite holds with
wrong types) the transaction wrote nothing, and :meth:`FastSave.save` answers ``None``: the store
then runs the general path of :mod:`.ops`, which locks the row and decides CONFLICT, GONE or a
merge exactly as before. So the contract's answers come from one place, and this module only
makes the common case cheap.

Per database:

* PostgreSQL (psycopg): one statement in autocommit, a data-modifying CTE (the versioned update
  or the insert of the session row, the attribute upserts and deletes when it matched, the new
  version returned): one round trip, one commit.
* SQLite (pysqlite): ``BEGIN IMMEDIATE``, the session row, one ``executemany`` of attributes,
  the removed names, ``COMMIT``: in process, no SQLAlchemy per-statement overhead.
* MySQL/MariaDB (PyMySQL): the same statements and the ``COMMIT`` sent as one multi-statement
  text (our engines connect with ``CLIENT.MULTI_STATEMENTS``): one round trip, one commit; on a
  connection without that flag, one statement at a time, still one transaction.

Thread safety: stateless apart from the SQL text built once; each call gets its own connection.
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa

from ..base import SaveRequest, SaveResult, SaveStatus
from .schema import Tables

#: The drivers whose raw connection this module speaks to, by SQLAlchemy dialect name.
DRIVERS = {"sqlite": "pysqlite", "postgresql": "psycopg", "mysql": "pymysql"}

#: The expiry cap of a session without a deadline: later than any idle expiry (a year 3e12).
_NO_DEADLINE = 1e20

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

    def _update_for(self, req: SaveRequest) -> str:
        return self.update if req.owner_changed else self.same_owner

    def save(self, raw: Any, req: SaveRequest) -> SaveResult | None:
        """Write ``req`` in one transaction on ``raw`` and answer SAVED, or ``None`` when the
        version check did not pass (nothing was written). Driver errors propagate, after the
        transaction is rolled back."""
        raise NotImplementedError

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

    def _insert_sql(self) -> str:
        return (
            f"INSERT INTO {self.sessions} (app, token, version, created_at, last_access_at, "
            "timeout_s, absolute_expires_at, expires_at, owner, node, tombstone_until, data) "
            "VALUES (%(app)s, %(token)s, 1, %(ca)s, %(la)s, %(t)s, %(abs)s, %(exp)s, %(owner)s, "
            "%(node)s, NULL, NULL)"
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

    def save(self, raw: Any, req: SaveRequest) -> SaveResult | None:
        names, values, removed = _attributes(req)
        creating = req.expected_version == 0
        cur = raw.cursor()
        try:
            self._begin(cur)
            if creating:
                try:
                    cur.execute(self.insert, self._params(req))
                except self.integrity_error:
                    raw.rollback()  # the row exists: live, tombstone or a concurrent creation
                    return None
            else:
                cur.execute(self._update_for(req), self._params(req))
                if cur.rowcount != 1:
                    raw.rollback()
                    return None
            app, token = self._key(req.app), self._key(req.token)
            if names:
                rows = [(app, token, self._key(n), v) for n, v in zip(names, values, strict=True)]
                cur.executemany(self.upsert, rows)
            if not creating and (removed or req.full):
                # A full write keeps only the names it wrote; another removes its removed names.
                gone = [self._key(n) for n in (names if req.full else removed)]
                cur.execute(self._delete_sql(len(gone), keep=req.full), (app, token, *gone))
            raw.commit()
        except BaseException:
            raw.rollback()
            raise
        finally:
            cur.close()
        return SaveResult(SaveStatus.SAVED, req.expected_version + 1)


class SqliteFastSave(_Sequential):
    placeholder = "?"

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


class MysqlFastSave(_Sequential):
    def _build(self) -> None:
        import pymysql

        self.integrity_error = pymysql.err.IntegrityError
        self.update = self._update_sql("GREATEST")
        self.same_owner = self._update_sql("GREATEST", owner=False)
        self.insert = self._insert_sql()
        # PyMySQL sends this executemany as one multi-row INSERT.
        self.upsert = (
            f"INSERT INTO {self.attributes} (app, token, name, value) VALUES (%s, %s, %s, %s) "
            "ON DUPLICATE KEY UPDATE value = VALUES(value)"
        )

    def _key(self, value: str) -> Any:
        # The key columns are VARBINARY (``schema._MySqlBinaryText``): compared byte for byte.
        return value.encode("utf-8")

    @staticmethod
    def _params(req: SaveRequest) -> dict[str, Any]:
        params = FastSave._params(req)
        params["app"], params["token"] = req.app.encode("utf-8"), req.token.encode("utf-8")
        return params

    def save(self, raw: Any, req: SaveRequest) -> SaveResult | None:
        from pymysql.constants import CLIENT

        if not raw.client_flag & CLIENT.MULTI_STATEMENTS:
            return super().save(raw, req)  # a connection opened without (a user's engine)
        cur = raw.cursor()
        try:
            try:
                cur.execute(self._batch(cur, req))
            except self.integrity_error:
                if req.expected_version != 0:
                    raise
                raw.rollback()  # the row exists: live, tombstone or a concurrent creation
                return None
            # The first result is the session row's; the server stops at a failing statement,
            # before the COMMIT, and PyMySQL raises it while reading the results.
            matched = req.expected_version == 0 or cur.rowcount == 1
            while cur.nextset():
                pass
        except BaseException:
            raw.rollback()
            raise
        finally:
            cur.close()
        # Not matched: the attribute statements did nothing, and the COMMIT ended an empty
        # transaction.
        return SaveResult(SaveStatus.SAVED, req.expected_version + 1) if matched else None

    def _batch(self, cur: Any, req: SaveRequest) -> str:
        """The whole write as one multi-statement text, the values bound by PyMySQL's own
        escaping (``mogrify``, as ``execute`` does). An update records whether it matched in
        a session variable, which the attribute statements test; a creation that meets an
        existing row fails on the primary key, and nothing after it runs."""
        names, values, removed = _attributes(req)
        creating = req.expected_version == 0
        app, token = self._key(req.app), self._key(req.token)
        head = self.insert if creating else self._update_for(req)
        parts = [cur.mogrify(head, self._params(req))]
        if not creating:
            parts.append("SET @sk_matched = ROW_COUNT()")
        if names:
            rows = [(app, token, self._key(n), v) for n, v in zip(names, values, strict=True)]
            parts += self._upserts(cur, rows, guarded=not creating)
        if not creating and (removed or req.full):
            gone = [self._key(n) for n in (names if req.full else removed)]
            sql = self._delete_sql(len(gone), keep=req.full) + " AND @sk_matched = 1"
            parts.append(cur.mogrify(sql, (app, token, *gone)))
        parts.append("COMMIT")
        return ";\n".join(parts)

    #: Attributes of an update up to which each is upserted by a statement of its own; more
    #: share one from a derived table, which MariaDB builds as a temporary table each time.
    _ROW_STATEMENTS = 8

    def _upserts(self, cur: Any, rows: list[tuple[Any, ...]], *, guarded: bool) -> list[str]:
        """The attribute upserts. A creation's are one multi-row ``VALUES`` (nothing after a
        failed ``INSERT`` of the session row runs); an update's run only if it matched
        (``@sk_matched``), each row ``SELECT``ed ``FROM DUAL`` under that test."""
        head = f"INSERT INTO {self.attributes} (app, token, name, value) "
        tail = " ON DUPLICATE KEY UPDATE value = VALUES(value)"
        if not guarded:
            marks = ", ".join(["(%s, %s, %s, %s)"] * len(rows))
            return [cur.mogrify(f"{head}VALUES {marks}{tail}", [x for r in rows for x in r])]
        if len(rows) <= self._ROW_STATEMENTS:
            one = f"{head}SELECT %s, %s, %s, %s FROM DUAL WHERE @sk_matched = 1{tail}"
            return [cur.mogrify(one, row) for row in rows]
        first = "SELECT %s AS app, %s AS token, %s AS name, %s AS value"
        union = " UNION ALL ".join([first] + ["SELECT %s, %s, %s, %s"] * (len(rows) - 1))
        derived = (
            f"{head}SELECT v.app, v.token, v.name, v.value FROM ({union}) AS v "
            f"WHERE @sk_matched = 1{tail}"
        )
        return [cur.mogrify(derived, [x for r in rows for x in r])]


class PostgresFastSave(FastSave):
    """One statement in autocommit: PostgreSQL runs it as its own transaction."""

    def _attribute_ctes(self) -> str:
        a = self.attributes
        return (
            f", u AS (INSERT INTO {a} (app, token, name, value) "
            "SELECT %(app)s, %(token)s, n, v "
            "FROM unnest(%(names)s::varchar[], %(values)s::bytea[]) AS x(n, v) "
            "WHERE EXISTS (SELECT FROM s) "
            "ON CONFLICT (app, token, name) DO UPDATE SET value = excluded.value)"
        )

    def _build(self) -> None:
        a = self.attributes
        self.insert = (
            f"WITH s AS ({self._insert_sql()} ON CONFLICT DO NOTHING RETURNING version)"
            f"{self._attribute_ctes()} SELECT version FROM s"
        )
        # The delete and the upsert touch disjoint rows (``_attributes``), as one statement's
        # parts must: they see the same snapshot.
        self.update, self.same_owner = (
            f"WITH s AS ({self._update_sql('GREATEST', owner=owner)} RETURNING version)"
            f"{self._attribute_ctes()}, d AS (DELETE FROM {a} "
            "WHERE app = %(app)s AND token = %(token)s AND EXISTS (SELECT FROM s) "
            "AND (name = ANY(%(removed)s::varchar[]) "
            "OR (%(full)s AND name <> ALL(%(names)s::varchar[])))) "
            "SELECT version FROM s"
            for owner in (True, False)
        )

    def save(self, raw: Any, req: SaveRequest) -> SaveResult | None:
        names, values, removed = _attributes(req)
        params = {
            **self._params(req),
            "names": names,
            "values": values,
            "removed": removed,
            "full": req.full,
        }
        sql = self.insert if req.expected_version == 0 else self._update_for(req)
        autocommit = raw.autocommit
        raw.autocommit = True  # the statement is its transaction: no BEGIN, no COMMIT to send
        try:
            with raw.cursor() as cur:
                cur.execute(sql, params)
                row = cur.fetchone()
        finally:
            if not raw.closed:
                raw.autocommit = autocommit
        if row is None:
            return None
        return SaveResult(SaveStatus.SAVED, int(row[0]))


def fast_save_for(tables: Tables, dialect: sa.Dialect) -> FastSave | None:
    """The fast path for ``dialect``'s driver, or ``None`` where it has none (another driver
    than the ones in :data:`DRIVERS`, e.g. a user's engine on psycopg2 or mysqlclient)."""
    name = "mysql" if dialect.name in ("mysql", "mariadb") else dialect.name
    if DRIVERS.get(name) != dialect.driver:
        return None
    cls = {"sqlite": SqliteFastSave, "postgresql": PostgresFastSave, "mysql": MysqlFastSave}[name]
    return cls(tables, dialect)
