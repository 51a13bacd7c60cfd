"""The one-session write of :mod:`.fastsave` on MySQL/MariaDB (PyMySQL): the session row, the
attribute statements and the ``COMMIT`` as one multi-statement text (our engines connect with
``CLIENT.MULTI_STATEMENTS``), with its deadline fence (:mod:`..fence`): one round trip, one
commit. On a connection without that flag (a user's engine), one statement at a time, still one
transaction, and no fence.
"""

from __future__ import annotations

from typing import Any

from ..base import SaveRequest, SaveResult, SaveStatus
from ..fence import ServerClock
from .fastsave import _NO_DEADLINE, FastSave, _attributes, _Sequential

#: The server's time (epoch seconds) at execution, to measure its clock's offset.
_MYSQL_NOW = "SELECT UNIX_TIMESTAMP(SYSDATE(6))"
#: Whether the server runs the statement by the fence (``SYSDATE(6)``: the time of execution;
#: ``NOW()`` would be the statement's start, which a frozen server may have taken long before).
_IN_TIME = "UNIX_TIMESTAMP(SYSDATE(6)) <= %(fence)s"


class MysqlFastSave(_Sequential):
    def _build(self) -> None:
        import pymysql

        self.integrity_error = pymysql.err.IntegrityError
        self.update = self._update_sql("GREATEST")
        self.same_owner = self._update_sql("GREATEST", owner=False)
        self.insert = self._insert_sql()
        # ``_batch``'s: the fence in each one's condition (see there).
        in_time = f" AND {_IN_TIME}"
        self._fenced_sql = {
            "insert": self._insert_sql(f"FROM DUAL WHERE {_IN_TIME}"),
            "update": self._update_sql("GREATEST", in_time),
            "same_owner": self._update_sql("GREATEST", in_time, owner=False),
        }
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

    def save(self, raw: Any, req: SaveRequest, clock: ServerClock | None) -> SaveResult | None:
        from pymysql.constants import CLIENT

        if not raw.client_flag & CLIENT.MULTI_STATEMENTS:
            return super().save(raw, req, clock)  # a connection opened without (a user's engine)
        fence = _NO_DEADLINE if clock is None else self._fence(raw, clock, _MYSQL_NOW)
        cur = raw.cursor()
        try:
            try:
                cur.execute(self._batch(cur, req, fence))
            except self.integrity_error:
                if req.expected_version != 0:
                    raise
                raw.rollback()  # the row exists: live, tombstone or a concurrent creation
                return None
            # The first result is the session row's; the server stops at a failing statement,
            # before the COMMIT, and PyMySQL raises it while reading the results. The last one
            # is the fence's test.
            matched, in_time = cur.rowcount == 1, None
            while cur.nextset():
                if cur.description is not None:
                    in_time = cur.fetchone()[0]
        except BaseException:
            raw.rollback()
            raise
        finally:
            cur.close()
        if matched:
            return SaveResult(SaveStatus.SAVED, req.expected_version + 1)  # in time, so written
        # Nothing written, and the COMMIT ended an empty transaction: by the fence (the server
        # is past it now), or the version check (it is not: it was not then either).
        return None if in_time else SaveResult(SaveStatus.FENCED)

    def _batch(self, cur: Any, req: SaveRequest, fence: float) -> str:
        """The whole write as one multi-statement text, the values bound by PyMySQL's own
        escaping (``mogrify``, as ``execute`` does). The session row's statement comes first
        and tests the fence in its condition (the server's time as it runs it); the attribute
        statements run only if it wrote the row (the one of them tests ``ROW_COUNT()``, several
        a session variable set from it). The last statement tests the fence again: a row not
        written although the server was in time at the end was not written by the version
        check. A creation that meets an existing row fails on the primary key, and nothing
        after it runs. Each statement is a result PyMySQL reads and parses in Python: few."""
        names, values, removed = _attributes(req)
        creating = req.expected_version == 0
        app, token = self._key(req.app), self._key(req.token)
        head = self._fenced_sql[
            "insert" if creating else "update" if req.owner_changed else "same_owner"
        ]
        rows = [(app, token, self._key(n), v) for n, v in zip(names, values, strict=True)]
        deleting = not creating and bool(removed or req.full)
        upserts = len(rows) if len(rows) <= self._ROW_STATEMENTS else 1
        several = upserts + deleting > 1
        written = "@sk_matched = 1" if several else "ROW_COUNT() = 1"
        parts = [cur.mogrify(head, {**self._params(req), "fence": fence})]
        if several:
            parts.append("SET @sk_matched = ROW_COUNT()")
        if rows:
            parts += self._upserts(cur, rows, written)
        if deleting:
            gone = [self._key(n) for n in (names if req.full else removed)]
            sql = f"{self._delete_sql(len(gone), keep=req.full)} AND {written}"
            parts.append(cur.mogrify(sql, (app, token, *gone)))
        parts += ["COMMIT", cur.mogrify(f"SELECT {_IN_TIME}", {"fence": fence})]
        return ";\n".join(parts)

    #: Attributes of an update up to which each is upserted by a statement of its own; more
    #: share one from a derived table, which MariaDB builds as a temporary table each time.
    _ROW_STATEMENTS = 8

    def _upserts(self, cur: Any, rows: list[tuple[Any, ...]], written: str) -> list[str]:
        """The attribute upserts, run only if the session row was written (``written``: an
        update that matched, a creation in time), each row ``SELECT``ed ``FROM DUAL`` under
        that test."""
        head = f"INSERT INTO {self.attributes} (app, token, name, value) "
        tail = " ON DUPLICATE KEY UPDATE value = VALUES(value)"
        if len(rows) <= self._ROW_STATEMENTS:
            one = f"{head}SELECT %s, %s, %s, %s FROM DUAL WHERE {written}{tail}"
            return [cur.mogrify(one, row) for row in rows]
        first = "SELECT %s AS app, %s AS token, %s AS name, %s AS value"
        union = " UNION ALL ".join([first] + ["SELECT %s, %s, %s, %s"] * (len(rows) - 1))
        derived = (
            f"{head}SELECT v.app, v.token, v.name, v.value FROM ({union}) AS v "
            f"WHERE {written}{tail}"
        )
        return [cur.mogrify(derived, [x for r in rows for x in r])]
