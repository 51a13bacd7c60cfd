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


class MysqlFastSave(_Sequential):
    def _build(self) -> None:
        import pymysql

        self.integrity_error = pymysql.err.IntegrityError
        self.update = self._update_sql("GREATEST")
        self.same_owner = self._update_sql("GREATEST", owner=False)
        self.insert = self._insert_sql()
        # ``_batch``'s, run after ``@sk_in_time`` is set: the fence in each one's condition.
        in_time = " AND @sk_in_time = 1"
        self._fenced_sql = {
            "insert": self._insert_sql("FROM DUAL WHERE @sk_in_time = 1"),
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
                cur.nextset()
            except self.integrity_error:
                if req.expected_version != 0:
                    raise
                raw.rollback()  # the row exists: live, tombstone or a concurrent creation
                return None
            # The second result is the session row's (the first the fence's); the server
            # stops at a failing statement, before the COMMIT, and PyMySQL raises it while
            # reading the results. The last one is the fence's test.
            matched, in_time = cur.rowcount == 1, None
            while cur.nextset():
                if cur.description is not None:
                    in_time = cur.fetchone()[0]
        except BaseException:
            raw.rollback()
            raise
        finally:
            cur.close()
        # Not matched or fenced: the other statements did nothing, and the COMMIT ended an
        # empty transaction.
        if not in_time:
            return SaveResult(SaveStatus.FENCED)
        return SaveResult(SaveStatus.SAVED, req.expected_version + 1) if matched else None

    def _batch(self, cur: Any, req: SaveRequest, fence: float) -> str:
        """The whole write as one multi-statement text, the values bound by PyMySQL's own
        escaping (``mogrify``, as ``execute`` does). It first records whether the server
        began it by ``fence`` (``SYSDATE(6)``, the time of execution; ``NOW()`` would be the
        statement's start) in a session variable, which the session row's statement tests;
        that one records whether it wrote the row in another, which the attribute statements
        test; the last one reads the fence's test back. A creation that meets an existing row
        fails on the primary key, and nothing after it runs."""
        names, values, removed = _attributes(req)
        creating = req.expected_version == 0
        app, token = self._key(req.app), self._key(req.token)
        head = self._fenced_sql[
            "insert" if creating else "update" if req.owner_changed else "same_owner"
        ]
        parts = [
            cur.mogrify("SET @sk_in_time = UNIX_TIMESTAMP(SYSDATE(6)) <= %s", (fence,)),
            cur.mogrify(head, self._params(req)),
            "SET @sk_matched = ROW_COUNT()",
        ]
        if names:
            rows = [(app, token, self._key(n), v) for n, v in zip(names, values, strict=True)]
            parts += self._upserts(cur, rows)
        if not creating and (removed or req.full):
            gone = [self._key(n) for n in (names if req.full else removed)]
            sql = self._delete_sql(len(gone), keep=req.full) + " AND @sk_matched = 1"
            parts.append(cur.mogrify(sql, (app, token, *gone)))
        parts += ["COMMIT", "SELECT @sk_in_time"]
        return ";\n".join(parts)

    #: Attributes of an update up to which each is upserted by a statement of its own; more
    #: share one from a derived table, which MariaDB builds as a temporary table each time.
    _ROW_STATEMENTS = 8

    def _upserts(self, cur: Any, rows: list[tuple[Any, ...]]) -> list[str]:
        """The attribute upserts, run only if the session row was written (``@sk_matched``:
        an update that matched, a creation in time), each row ``SELECT``ed ``FROM DUAL``
        under that test."""
        head = f"INSERT INTO {self.attributes} (app, token, name, value) "
        tail = " ON DUPLICATE KEY UPDATE value = VALUES(value)"
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
