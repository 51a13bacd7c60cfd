"""The one-session write of :mod:`.fastsave` on MySQL/MariaDB (PyMySQL): the session row, the
attribute statements and the ``COMMIT`` as one multi-statement text (our engines connect with
``CLIENT.MULTI_STATEMENTS``), with its deadline fence (:mod:`..fence`) tested just before the
``COMMIT``: one round trip, one commit. On a connection without that flag (a user's engine), one
statement at a time, still one transaction, and no fence.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..base import SaveRequest, SaveResult, SaveStatus
from ..fence import ServerClock
from .fastsave import FastSave, _attributes, _Sequential, lock_order

#: The server's time (epoch seconds) at execution, to measure its clock's offset.
_MYSQL_NOW = "SELECT UNIX_TIMESTAMP(SYSDATE(6))"
#: The fence's test, the text's last statement before its ``COMMIT``: an error (which stops the
#: text there, the transaction open to roll back) when the server is past the fence: the largest
#: BIGINT UNSIGNED plus 1 is out of range (error 1690, whatever the ``sql_mode``), plus 0 is not.
#: ``SYSDATE(6)``: the time of execution, which keeps the optimizer from folding the sum (``NOW()``
#: would be the statement's start, which a frozen server may have taken long before). Portable:
#: MariaDB's ``BEGIN NOT ATOMIC ... SIGNAL`` is a syntax error on MySQL, and ``DO`` turns the
#: error into a warning. A ``SET`` rather than a ``SELECT``: its answer is one OK packet, where a
#: result set's column definitions and row cost PyMySQL about 12 µs of Python to read, each write.
_CHECK = "SET @sk_fence = ~0 + (UNIX_TIMESTAMP(SYSDATE(6)) > %(fence)s)"
#: ``ER_DATA_OUT_OF_RANGE``: the error of ``_CHECK`` when the server is late.
_LATE = 1690
#: The longest text of a batch of several sessions (PyMySQL's own bound on an executemany's
#: statement, well below any ``max_allowed_packet``); a longer one takes the general path.
_BATCH_CHARS = 1_024_000


class MysqlFastSave(_Sequential):
    batches = True

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

    def save(self, raw: Any, req: SaveRequest, clock: ServerClock | None) -> SaveResult | None:
        from pymysql.constants import CLIENT

        if not raw.client_flag & CLIENT.MULTI_STATEMENTS:
            return super().save(raw, req, clock)  # a connection opened without (a user's engine)
        answers = self._send(raw, [req], clock)
        return None if answers is None else answers[0]

    def save_many(
        self, raw: Any, reqs: Sequence[SaveRequest], clock: ServerClock | None
    ) -> list[SaveResult | None] | None:
        """Several sessions' writes (each session once) as one multi-statement text: each
        one's statements in (app, token) order (the order every writer locks rows in), then
        one ``COMMIT``. ``None`` (nothing written) on a connection without multi-statements,
        for a text longer than :data:`_BATCH_CHARS`, or when a creation met an existing row."""
        from pymysql.constants import CLIENT

        if not raw.client_flag & CLIENT.MULTI_STATEMENTS:
            return None
        return self._send(raw, reqs, clock)

    def _send(
        self, raw: Any, reqs: Sequence[SaveRequest], clock: ServerClock | None
    ) -> list[SaveResult | None] | None:
        """``reqs`` in one text and one transaction, each one's statements, the fence's test
        (:data:`_CHECK`), ``COMMIT``; each one's answer as :meth:`save`'s. A server past the
        fence before the ``COMMIT`` commits nothing: every session FENCED."""
        order = lock_order(reqs)
        cur = raw.cursor()
        heads: list[int] = []
        parts: list[str] = []
        counts: list[int] = []  # per statement read, its row count
        check = -1  # the index of the fence's test among the statements
        try:
            for i in order:
                heads.append(len(parts))  # the index of its session row's result
                parts += self._statements(raw, reqs[i])
            # Before the fence: a batch turned away spends no probe of the server's clock.
            if len(reqs) > 1 and sum(map(len, parts)) > _BATCH_CHARS:
                return None
            if clock is not None:
                fence = self._fence(raw, clock, _MYSQL_NOW)
                check = len(parts)
                parts.append(_bind(raw, _CHECK, {"fence": fence}))
            text = ";\n".join([*parts, "COMMIT"])
            try:
                # The server stops at a failing statement, before the COMMIT, and PyMySQL
                # raises it while reading the results.
                cur.execute(text)
                counts.append(cur.rowcount)
                while cur.nextset():
                    counts.append(cur.rowcount)
            except self.integrity_error:
                if all(reqs[i].expected_version != 0 for i in order):
                    raise
                raw.rollback()  # a row exists: live, tombstone or a concurrent creation
                return None
        except BaseException as exc:
            raw.rollback()
            # The fence's error: raised as its result was read, after all the others.
            if len(counts) != check or not _late(exc):
                raise
            return [SaveResult(SaveStatus.FENCED)] * len(reqs)  # nothing committed
        finally:
            cur.close()
        # In time up to the COMMIT, so in time at each statement: a session row not written was
        # not written by its version check.
        answers: list[SaveResult | None] = [None] * len(reqs)
        for i, at in zip(order, heads, strict=True):
            if counts[at] == 1:
                answers[i] = SaveResult(SaveStatus.SAVED, reqs[i].expected_version + 1)
        return answers

    def _statements(self, raw: Any, req: SaveRequest) -> list[str]:
        """One session's write as statements of a multi-statement text, the values bound as
        PyMySQL's ``mogrify`` binds them (:func:`_bind`). The session row's statement
        comes first; the attribute statements run only if it wrote the row (the one of them
        tests ``ROW_COUNT()``, several a session variable set from it). A creation that meets
        an existing row fails on the primary key, and nothing after it runs. Each statement is
        a result PyMySQL reads and parses in Python: few."""
        names, values, removed = _attributes(req)
        creating = req.expected_version == 0
        app, token = self._key(req.app), self._key(req.token)
        head = self.insert if creating else self._update_for(req)
        rows = [(app, token, self._key(n), v) for n, v in zip(names, values, strict=True)]
        deleting = not creating and bool(removed or req.full)
        upserts = len(rows) if len(rows) <= self._ROW_STATEMENTS else 1
        several = upserts + deleting > 1
        written = "@sk_matched = 1" if several else "ROW_COUNT() = 1"
        parts = [_bind(raw, head, self._params(req))]
        if several:
            parts.append("SET @sk_matched = ROW_COUNT()")
        if rows:
            parts += self._upserts(raw, rows, written)
        if deleting:
            gone = [self._key(n) for n in (names if req.full else removed)]
            sql = f"{self._delete_sql(len(gone), keep=req.full)} AND {written}"
            parts.append(_bind(raw, sql, (app, token, *gone)))
        return parts

    #: Attributes of an update up to which each is upserted by a statement of its own; more
    #: share one from a derived table, which MariaDB builds as a temporary table each time.
    _ROW_STATEMENTS = 8

    def _upserts(self, raw: Any, rows: list[tuple[Any, ...]], written: str) -> list[str]:
        """The attribute upserts, run only if the session row was written (``written``: an
        update that matched, a creation in time), each row ``SELECT``ed ``FROM DUAL`` under
        that test."""
        head = f"INSERT INTO {self.attributes} (app, token, name, value) "
        tail = " ON DUPLICATE KEY UPDATE value = VALUES(value)"
        if len(rows) <= self._ROW_STATEMENTS:
            one = f"{head}SELECT %s, %s, %s, %s FROM DUAL WHERE {written}{tail}"
            return [_bind(raw, one, row) for row in rows]
        first = "SELECT %s AS app, %s AS token, %s AS name, %s AS value"
        union = " UNION ALL ".join([first] + ["SELECT %s, %s, %s, %s"] * (len(rows) - 1))
        derived = (
            f"{head}SELECT v.app, v.token, v.name, v.value FROM ({union}) AS v "
            f"WHERE {written}{tail}"
        )
        return [_bind(raw, derived, [x for r in rows for x in r])]


def _literal(raw: Any, value: Any) -> str:
    """``value`` as a MySQL literal, as PyMySQL's ``escape`` writes it (bytes in hex, a float as
    its ``repr`` with an exponent, so the server reads a DOUBLE), without its per-value dispatch
    through the encoders map: a write binds some 15 values, which cost PyMySQL about 15 µs.
    Strings, and any other type, go to the connection's own escaping (the server's
    ``NO_BACKSLASH_ESCAPES`` mode decides how a quote is escaped)."""
    kind = type(value)
    if kind is bytes:
        return f"X'{value.hex()}'"
    if kind is float:
        text = repr(value)
        if "e" not in text:
            if text in ("inf", "-inf", "nan"):  # as PyMySQL: MySQL has no literal for them
                import pymysql

                raise pymysql.err.ProgrammingError(f"{text} can not be used with MySQL")
            text += "e0"
        return text
    if kind is int:
        return str(value)
    if value is None:
        return "NULL"
    return str(raw.escape(value))


def _bind(raw: Any, sql: str, args: Sequence[Any] | dict[str, Any]) -> str:
    """``sql`` with ``args`` bound by :func:`_literal`, as PyMySQL's ``mogrify`` binds them."""
    if isinstance(args, dict):
        return sql % {name: _literal(raw, value) for name, value in args.items()}
    return sql % tuple([_literal(raw, value) for value in args])


def _late(exc: BaseException) -> bool:
    """Whether ``exc`` is the error of :data:`_CHECK` run after the fence."""
    return getattr(exc, "args", (None,))[0] == _LATE
