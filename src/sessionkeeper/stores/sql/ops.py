"""The SQL a session store runs, one transaction's worth per method; shared by every dialect.

Every write first locks the session rows it is about to change, in key order, with one
``SELECT ... FOR UPDATE`` (SQLite has no row locks: the store's ``BEGIN IMMEDIATE`` already holds
the database's write lock), decides each session's fate in Python on rows nobody else can change
meanwhile, and then writes with a constant number of bulk statements whatever the batch size.
Rows that do not exist cannot be locked: a concurrent creator of the same row makes our INSERT
fail on the primary key, and the store runs the whole transaction again. The sweep is in
:mod:`.sweep`, how a batch becomes statements in :mod:`.batches`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from ...errors import CorruptSessionData, ValueTooLarge
from ...logs import fields, session_hash
from ..records import (
    AppCounts,
    ExpiredSession,
    SaveRequest,
    SaveResult,
    SaveStatus,
    StoredSession,
    _rebase,
    earliest_expiry,
)
from . import batches, feed, sweep
from . import schema as sch
from .batches import Key
from .dialects import SqlDialect
from .schema import Layout

log = logging.getLogger("sessionkeeper.store.sql")


def _rounds(requests: Sequence[SaveRequest]) -> list[list[int]]:
    """Request indexes split so that no key appears twice in one round, order kept per key."""
    rounds: list[list[int]] = []
    seen: dict[Key, int] = {}
    for i, r in enumerate(requests):
        n = seen.get((r.app, r.token), 0)
        seen[(r.app, r.token)] = n + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(i)
    return rounds


class SqlOps:
    """The statements of one store (its tables, layout and dialect). Stateless apart from
    those: safe to share between threads, each with its own connection."""

    def __init__(self, tables: sch.Tables, layout: Layout, dialect: SqlDialect) -> None:
        self.tables = tables
        self.layout = layout
        self._dialect = dialect
        self._key_chunk = batches.key_chunk(dialect)
        #: The store's limit on one value (set on connecting); in the single-row layout it
        #: bounds the blob of all attributes.
        self.max_value_bytes: int | None = None

    # -- reading ---------------------------------------------------------------------------------

    def _session_columns(self, *, data: bool) -> list[sa.Column[Any]]:
        s = self.tables.sessions
        cols = [
            s.c.app,
            s.c.token,
            s.c.version,
            s.c.created_at,
            s.c.last_access_at,
            s.c.timeout_s,
            s.c.absolute_expires_at,
            s.c.expires_at,
            s.c.owner,
            s.c.node,
            s.c.tombstone_until,
        ]
        return [*cols, s.c.data] if data else cols

    def _lock_rows(
        self, conn: Connection, keys: Sequence[Key], *, data: bool
    ) -> dict[Key, RowMapping]:
        """The stored session rows (live or tombstone) of ``keys``, locked until commit."""
        s = self.tables.sessions
        out: dict[Key, RowMapping] = {}
        for chunk in batches.chunks(sorted(set(keys)), self._key_chunk):
            stmt = (
                sa.select(*self._session_columns(data=data))
                .where(batches.keys_clause(s, chunk))
                .order_by(s.c.app, s.c.token)
                .with_for_update()
            )
            stmt = self._dialect.by_primary_key(stmt, s)
            for row in conn.execute(stmt).mappings():
                out[(row["app"], row["token"])] = row
        return out

    def _attributes_of(self, conn: Connection, keys: Sequence[Key]) -> dict[Key, dict[str, bytes]]:
        a = self.tables.attributes
        out: dict[Key, dict[str, bytes]] = {k: {} for k in keys}
        for chunk in batches.chunks(sorted(set(keys)), self._key_chunk):
            stmt = sa.select(a.c.app, a.c.token, a.c.name, a.c.value).where(
                batches.keys_clause(a, chunk)
            )
            for app, token, name, value in conn.execute(stmt):
                try:
                    sch.as_name(name)
                except CorruptSessionData as exc:
                    # Merging a write: an unreadable attribute is already lost; skip it rather
                    # than fail every session in the batch.
                    log.warning("session %s/%s: %s, ignored", app, session_hash(app, token), exc)
                    continue
                out.setdefault((app, token), {})[name] = sch.as_bytes(value, f"attribute {name!r}")
        return out

    def load(self, conn: Connection, app: str, token: str) -> StoredSession | None:
        s, a = self.tables.sessions, self.tables.attributes
        single = self.layout is Layout.SINGLE_ROW
        cols = self._session_columns(data=single)
        where = sa.and_(s.c.app == app, s.c.token == token)
        if single:
            row = conn.execute(sa.select(*cols).where(where)).mappings().first()
            if row is None or row["tombstone_until"] is not None:
                return None
            return sch.stored_session(app, token, row, self._decode(app, token, row["data"]))
        # One statement, so the metadata and the attributes come from one snapshot.
        join = s.outerjoin(a, sa.and_(a.c.app == s.c.app, a.c.token == s.c.token))
        stmt = sa.select(*cols, a.c.name, a.c.value).select_from(join).where(where)
        rows = conn.execute(stmt).mappings().all()
        if not rows or rows[0]["tombstone_until"] is not None:
            return None
        attrs = {
            sch.as_name(r["name"]): sch.as_bytes(r["value"], f"attribute {r['name']!r}")
            for r in rows
            if r["name"] is not None
        }
        return sch.stored_session(app, token, rows[0], attrs)

    def _decode(self, app: str, token: str, blob: object) -> dict[str, bytes]:
        try:
            return sch.decode_blob(blob)
        except CorruptSessionData as exc:
            raise CorruptSessionData(f"session {app}/{session_hash(app, token)}: {exc}") from exc

    # -- writing ---------------------------------------------------------------------------------

    def save(self, conn: Connection, requests: Sequence[SaveRequest]) -> list[SaveResult]:
        results: list[SaveResult | None] = [None] * len(requests)
        for indexes in _rounds(requests):
            self._save_round(conn, [(i, requests[i]) for i in indexes], results)
        return [r for r in results if r is not None]

    def _save_round(
        self,
        conn: Connection,
        batch: list[tuple[int, SaveRequest]],
        results: list[SaveResult | None],
    ) -> None:
        single = self.layout is Layout.SINGLE_ROW
        current = self._lock_rows(conn, [(r.app, r.token) for _, r in batch], data=single)
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        saved: list[tuple[SaveRequest, bool]] = []  # (request, existed before)
        conflicts: list[tuple[int, SaveRequest, RowMapping]] = []
        for i, req in batch:
            row = current.get((req.app, req.token))
            if row is None:
                if req.expected_version != 0:
                    results[i] = SaveResult(SaveStatus.GONE)
                    continue
                inserts.append(self._new_row(req))
                saved.append((req, False))
                results[i] = SaveResult(SaveStatus.SAVED, 1)
            elif row["tombstone_until"] is not None or not sch.is_valid_row(row):
                results[i] = SaveResult(SaveStatus.GONE)
            elif row["version"] != req.expected_version:
                conflicts.append((i, req, row))
            else:
                updates.append(self._updated_row(req, row))
                saved.append((req, True))
                results[i] = SaveResult(SaveStatus.SAVED, row["version"] + 1)
        for i, rebased, row, stored in self._merge_conflicts(conn, conflicts):
            updates.append(self._updated_row(rebased, row))
            saved.append((rebased, True))
            results[i] = SaveResult(SaveStatus.SAVED, row["version"] + 1, stored)
        # Key order, as the rows were locked: two batches creating the same sessions meet on
        # their first common key rather than each waiting for a key the other inserted.
        inserts.sort(key=lambda row: (row["app"], row["token"]))
        for chunk in batches.chunks(inserts, batches.ROWS):
            self._dialect.insert_rows(conn, self.tables.sessions, chunk)
        columns = [c for c in updates[0] if c not in ("app", "token")] if updates else []
        for chunk in batches.chunks(updates, batches.ROWS):
            self._dialect.bulk_update(conn, self.tables.sessions, chunk, columns)
        if not single:
            self._write_attributes(conn, saved)

    def _merge_conflicts(
        self, conn: Connection, conflicts: list[tuple[int, SaveRequest, RowMapping]]
    ) -> Iterator[tuple[int, SaveRequest, RowMapping, StoredSession]]:
        """Each conflicting request rebased on the stored session, which we hold locked: merging
        here, rather than answering CONFLICT and letting the base retry after our lock is gone,
        cannot be starved by other writers of the same session (see ``stores.base``)."""
        if not conflicts:
            return
        multi = self.layout is Layout.MULTI_ROW
        attrs = (
            self._attributes_of(conn, [(r.app, r.token) for _, r, _ in conflicts]) if multi else {}
        )
        for i, req, row in conflicts:
            key = (req.app, req.token)
            current = attrs[key] if multi else self._decode_for_write(req, row["data"])
            stored = sch.stored_session(req.app, req.token, row, current)
            yield i, _rebase(req, stored), row, stored

    def _new_row(self, req: SaveRequest) -> dict[str, Any]:
        row = {
            "app": req.app,
            "token": req.token,
            "version": 1,
            "created_at": req.created_at,
            "last_access_at": req.last_access_at,
            "timeout_s": req.timeout_s,
            "absolute_expires_at": req.absolute_expires_at,
            "expires_at": req.expires_at,
            "owner": req.owner,
            "node": req.node,
            "tombstone_until": None,
            "data": None,
        }
        if self.layout is Layout.SINGLE_ROW:
            row["data"] = self._blob(req, req.changed)
        return row

    def _updated_row(self, req: SaveRequest, row: RowMapping) -> dict[str, Any]:
        last_access_at = max(float(row["last_access_at"]), req.last_access_at)
        new = {
            "app": req.app,
            "token": req.token,
            "version": row["version"] + 1,
            "created_at": row["created_at"],
            "last_access_at": last_access_at,
            "timeout_s": req.timeout_s,
            "absolute_expires_at": req.absolute_expires_at,
            "expires_at": earliest_expiry(last_access_at + req.timeout_s, req.absolute_expires_at),
            "owner": req.owner,
            "node": req.node,
            "tombstone_until": None,
        }
        if self.layout is Layout.SINGLE_ROW:
            attrs = {} if req.full else self._decode_for_write(req, row["data"])
            attrs.update(req.changed)
            for name in () if req.full else req.removed:
                attrs.pop(name, None)
            new["data"] = self._blob(req, attrs)
        return new

    def _blob(self, req: SaveRequest, attrs: Mapping[str, bytes]) -> bytes:
        blob = sch.encode_blob(attrs)
        limit = self.max_value_bytes
        if limit is not None and len(blob) > limit:
            raise ValueTooLarge(
                req.token, "(all attributes, one row)", len(blob), limit, app=req.app
            )
        return blob

    def _decode_for_write(self, req: SaveRequest, blob: object) -> dict[str, bytes]:
        # Stored data nobody can read is already lost; refusing the write would only block
        # every other session in the batch too. Log it and write on top of nothing.
        try:
            return sch.decode_blob(blob)
        except CorruptSessionData as exc:
            log.warning(
                "session %s/%s: unreadable stored data replaced by a write: %s",
                req.app,
                session_hash(req.app, req.token),
                exc,
                extra=fields(req.app, req.token, exc.code),
            )
            return {}

    def _write_attributes(self, conn: Connection, saved: list[tuple[SaveRequest, bool]]) -> None:
        a = self.tables.attributes
        replaced = [(r.app, r.token) for r, existed in saved if existed and r.full]
        for keys in batches.chunks(replaced, self._key_chunk):
            conn.execute(sa.delete(a).where(batches.keys_clause(a, keys)))
        values = [
            {"app": r.app, "token": r.token, "name": n, "value": bytes(v)}
            for r, _ in saved
            for n, v in r.changed.items()
        ]
        for rows in batches.chunks(values, batches.ROWS):
            self._dialect.upsert_attributes(conn, a, rows)
        removed = [
            {"app": r.app, "token": r.token, "name": n}
            for r, existed in saved
            if existed and not r.full
            for n in sorted(r.removed)
        ]
        for names in batches.chunks(removed, batches.ROWS):
            self._dialect.delete_rows(conn, a, names, ("app", "token", "name"))

    def touch(self, conn: Connection, latest: Mapping[Key, float]) -> None:
        """Raise each session's access time to ``latest[key]`` if that is later."""
        rows = self._lock_rows(conn, list(latest), data=False)
        updates = []
        for key, row in rows.items():
            live = row["tombstone_until"] is None and sch.is_valid_row(row)
            if live and latest[key] > row["last_access_at"]:
                updates.append(
                    {
                        **row,
                        "last_access_at": latest[key],
                        "expires_at": earliest_expiry(
                            latest[key] + row["timeout_s"], row["absolute_expires_at"]
                        ),
                    }
                )
        for chunk in batches.chunks(updates, batches.ROWS):
            self._dialect.bulk_update(
                conn, self.tables.sessions, chunk, ["last_access_at", "expires_at"]
            )

    # -- deleting --------------------------------------------------------------------------------

    def delete(self, conn: Connection, app: str, token: str, tombstone_until: float) -> bool:
        s, a = self.tables.sessions, self.tables.attributes
        row = self._lock_rows(conn, [(app, token)], data=False).get((app, token))
        tombstone = {
            "version": 0,
            "created_at": 0.0,
            "last_access_at": 0.0,
            "timeout_s": 0.0,
            "absolute_expires_at": None,
            "expires_at": tombstone_until,
            "owner": None,
            "node": None,
            "tombstone_until": tombstone_until,
            "data": None,
        }
        where = sa.and_(s.c.app == app, s.c.token == token)
        if row is None:
            conn.execute(sa.insert(s).values(app=app, token=token, **tombstone))
        else:
            conn.execute(sa.update(s).where(where).values(**tombstone))
        if self.layout is Layout.MULTI_ROW:
            conn.execute(sa.delete(a).where(a.c.app == app, a.c.token == token))
        feed.append(conn, self.tables, app, token, tombstone_until)
        return row is not None and row["tombstone_until"] is None

    def delete_expired(self, conn: Connection, before: float, limit: int) -> list[ExpiredSession]:
        return sweep.delete_expired(conn, self.tables, self.layout, self._dialect, before, limit)

    # -- the rest --------------------------------------------------------------------------------

    def counts(self, conn: Connection, now: float) -> dict[str, AppCounts]:
        s = self.tables.sessions
        expired = sa.func.sum(sa.case((s.c.expires_at < now, 1), else_=0))
        stmt = (
            sa.select(s.c.app, sa.func.count(), expired)
            .where(s.c.tombstone_until.is_(None))
            .group_by(s.c.app)
        )
        out = {}
        for app, total, n_expired in conn.execute(stmt):
            out[app] = AppCounts(int(total) - int(n_expired or 0), int(n_expired or 0))
        return out
