"""The SQL schema: tables, the schema-version row, the ``single_row`` blob framing, and turning
rows back into :class:`StoredSession` values (checking their types: SQLite stores whatever it is
given, so a row is validated before it is trusted)."""

from __future__ import annotations

import enum
import logging
import math
import struct
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection

from ...errors import CorruptSessionData, StoreError
from ...logs import session_hash
from ..base import StoredSession

#: The schema this code reads and writes. A later release that changes the tables raises it and
#: migrates; a database whose version is higher than this is refused. 2 added the invalidations
#: table (the feed every node polls), 3 the owner index (logout everywhere), 4 the absolute
#: deadline column; ``create_schema`` (``init-db``) migrates an older version.
SCHEMA_VERSION = 4

log = logging.getLogger("sessionkeeper.store.sql")


class Layout(enum.StrEnum):
    """How attributes are stored."""

    #: A session row plus one row per attribute: a write touches only the keys that changed.
    MULTI_ROW = "multi_row"
    #: All attributes framed into one blob in the session row: one row per session.
    SINGLE_ROW = "single_row"


class _MySqlBinaryText(sa.types.TypeDecorator[str]):
    """Text compared byte for byte on MySQL/MariaDB, whose default collations ignore case and
    trailing spaces: ``"Cart"``, ``"cart"`` and ``"cart "`` must be three attribute names."""

    impl = mysql.VARBINARY
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: sa.Dialect) -> bytes | None:
        return None if value is None else value.encode("utf-8")

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> str | None:
        if isinstance(value, bytes | bytearray):
            return bytes(value).decode("utf-8", errors="surrogateescape")
        return value  # type: ignore[no-any-return]


def _key_type(length: int) -> sa.types.TypeEngine[str]:
    # VARBINARY lengths are bytes: room for ``length`` characters of up to 4 UTF-8 bytes.
    mysql_type = _MySqlBinaryText(length * 4)
    return sa.String(length).with_variant(mysql_type, "mysql", "mariadb")


def _blob_type() -> sa.types.TypeEngine[bytes]:
    return sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")


@dataclass(frozen=True)
class Tables:
    sessions: sa.Table
    attributes: sa.Table
    schema: sa.Table
    invalidations: sa.Table
    metadata: sa.MetaData


def make_tables(prefix: str, schema: str | None) -> Tables:
    md = sa.MetaData(schema=schema)
    sessions = sa.Table(
        f"{prefix}sessions",
        md,
        sa.Column("app", _key_type(64), primary_key=True),
        sa.Column("token", _key_type(64), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("last_access_at", sa.Double, nullable=False),
        sa.Column("timeout_s", sa.Double, nullable=False),
        # The absolute deadline (max lifetime, Django's set_expiry(datetime)); NULL for none.
        sa.Column("absolute_expires_at", sa.Double, nullable=True),
        # min(last_access_at + timeout_s, absolute_expires_at) for a live session;
        # tombstone_until for a tombstone, so that one index finds both what to sweep and what
        # to purge.
        sa.Column("expires_at", sa.Double, nullable=False),
        sa.Column("owner", sa.String(255), nullable=True),
        sa.Column("node", sa.String(255), nullable=True),
        sa.Column("tombstone_until", sa.Double, nullable=True),
        sa.Column("data", _blob_type(), nullable=True),  # single_row only
        sa.Index(f"{prefix}sessions_expires_at", "expires_at"),
        # Every session of a principal (logout everywhere) without a scan of the app.
        sa.Index(f"{prefix}sessions_owner", "app", "owner"),
    )
    attributes = sa.Table(
        f"{prefix}attributes",
        md,
        sa.Column("app", _key_type(64), primary_key=True),
        sa.Column("token", _key_type(64), primary_key=True),
        sa.Column("name", _key_type(255), primary_key=True),
        sa.Column("value", _blob_type(), nullable=False),
    )
    schema_table = sa.Table(
        f"{prefix}schema",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("layout", sa.String(16), nullable=False),
    )
    invalidations = sa.Table(
        f"{prefix}invalidations",
        md,
        # The feed's cursor: a sequence, never wall time (nodes' clocks differ). A delete takes
        # the schema row's lock before inserting, so sequence order is commit order and a
        # reader never passes an entry still to commit.
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("app", _key_type(64), nullable=False),
        sa.Column("token", _key_type(64), nullable=False),
        sa.Column("kept_until", sa.Double, nullable=False),  # the tombstone's end: pruned with it
        sa.Index(f"{prefix}invalidations_kept_until", "kept_until"),
    )
    return Tables(sessions, attributes, schema_table, invalidations, md)


# -- creating and checking the schema -------------------------------------------------------------


def create_schema(
    begin: Callable[[], AbstractContextManager[Connection]],
    tables: Tables,
    layout: Layout,
    is_transient: Callable[[BaseException | None], bool],
) -> None:
    """Create the tables and the version row if missing, then check them. Idempotent; safe when
    several processes race: a loser's "already exists" error is retried after a fresh check.
    ``begin`` opens a write transaction."""
    for attempt in range(5):
        try:
            with begin() as conn:
                tables.metadata.create_all(conn, checkfirst=True)
            with begin() as conn:
                row = _read_version_row(conn, tables)
                if row is None:
                    conn.execute(
                        sa.insert(tables.schema).values(
                            id=1, version=SCHEMA_VERSION, layout=layout.value
                        )
                    )
                elif isinstance(row[0], int) and row[0] < SCHEMA_VERSION:
                    _migrate(conn, tables)
            break
        except sa.exc.DBAPIError as exc:
            if attempt == 4 or exc.connection_invalidated or is_transient(exc.orig):
                raise
            time.sleep(0.05 * (attempt + 1))
    with begin() as conn:
        check_schema(conn, tables, layout)


def _migrate(conn: Connection, tables: Tables) -> None:
    """From an older version: ``create_all`` made the tables a later version added, but it
    leaves an existing table's indexes and columns alone, so those are added here."""
    _add_missing_columns(conn, tables.sessions)
    for index in tables.sessions.indexes:
        index.create(conn, checkfirst=True)
    t = tables.schema
    conn.execute(sa.update(t).where(t.c.id == 1).values(version=SCHEMA_VERSION))


def _add_missing_columns(conn: Connection, table: sa.Table) -> None:
    """Add the nullable columns a later version gave ``table`` (4: ``absolute_expires_at``)."""
    have = {c["name"] for c in sa.inspect(conn).get_columns(table.name, schema=table.schema)}
    quote = conn.dialect.identifier_preparer
    for column in table.columns:
        if column.name not in have:
            assert column.nullable, f"{column.name}: only a nullable column can be added"
            kind = column.type.compile(dialect=conn.dialect)
            conn.execute(
                sa.text(
                    f"ALTER TABLE {quote.format_table(table)} "
                    f"ADD COLUMN {quote.format_column(column)} {kind}"
                )
            )


def check_schema(conn: Connection, tables: Tables, layout: Layout) -> None:
    """Refuse a database this code cannot read: missing, newer, or of the other layout."""
    if not sa.inspect(conn).has_table(tables.schema.name, schema=tables.schema.schema):
        raise StoreError(
            f"no sessionkeeper tables (prefix {tables.schema.name.removesuffix('schema')!r}) in "
            "this database: run `sessionkeeper init-db URL` or open the store with "
            "create_schema=True"
        )
    row = _read_version_row(conn, tables)
    if row is None:
        raise StoreError(f"table {tables.schema.name} has no version row: schema not initialized")
    version, stored_layout = row
    if not isinstance(version, int) or not isinstance(stored_layout, str):
        raise StoreError(f"table {tables.schema.name} holds an unreadable version row {row!r}")
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"the session tables were created by a newer sessionkeeper (schema version {version}; "
            f"this one knows up to {SCHEMA_VERSION}): upgrade sessionkeeper"
        )
    if version < SCHEMA_VERSION:
        raise StoreError(
            f"the session tables are at schema version {version}, this sessionkeeper needs "
            f"{SCHEMA_VERSION} (the invalidation feed, the owner index): run `sessionkeeper init-db URL` or open "
            "the store with create_schema=True"
        )
    if stored_layout != layout.value:
        raise StoreError(
            f"the session tables hold the {stored_layout!r} layout but the store was opened with "
            f"layout={layout.value!r}: open it with layout={stored_layout!r} or use another "
            "table_prefix"
        )


def _read_version_row(conn: Connection, tables: Tables) -> tuple[Any, Any] | None:
    t = tables.schema
    row = conn.execute(sa.select(t.c.version, t.c.layout).where(t.c.id == 1)).first()
    return None if row is None else (row[0], row[1])


# -- the single_row blob --------------------------------------------------------------------------

# b"SK" + format byte, then a u32 count, then per attribute a u32 name length, the UTF-8 name,
# a u32 value length and the value. Every length is checked and the blob must be consumed
# exactly, so truncation or trailing garbage is detected, not guessed around.
_MAGIC = b"SK\x01"
_U32 = struct.Struct(">I")


def encode_blob(attributes: Mapping[str, bytes]) -> bytes:
    parts = [_MAGIC, _U32.pack(len(attributes))]
    for name, value in attributes.items():
        raw = name.encode("utf-8")
        parts += [_U32.pack(len(raw)), raw, _U32.pack(len(value)), bytes(value)]
    return b"".join(parts)


def decode_blob(blob: object) -> dict[str, bytes]:
    """The attributes framed in ``blob``; :class:`CorruptSessionData` if it is not such a blob."""
    if blob is None:
        return {}
    if isinstance(blob, memoryview | bytearray):
        blob = bytes(blob)
    if not isinstance(blob, bytes):
        raise CorruptSessionData(f"session data is a {type(blob).__name__}, not bytes")
    if not blob.startswith(_MAGIC):
        raise CorruptSessionData("session data does not start with the sessionkeeper header")
    pos = len(_MAGIC)

    def take(n: int) -> bytes:
        nonlocal pos
        if n > len(blob) - pos:
            raise CorruptSessionData(f"session data truncated at byte {pos} of {len(blob)}")
        chunk = blob[pos : pos + n]
        pos += n
        return chunk

    out: dict[str, bytes] = {}
    (count,) = _U32.unpack(take(4))
    for _ in range(count):
        (name_len,) = _U32.unpack(take(4))
        try:
            name = take(name_len).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorruptSessionData(f"session data holds a name that is not UTF-8: {exc}") from exc
        (value_len,) = _U32.unpack(take(4))
        out[name] = take(value_len)
    if pos != len(blob):
        raise CorruptSessionData(f"session data has {len(blob) - pos} bytes of trailing garbage")
    return out


# -- rows back into values ------------------------------------------------------------------------


def as_float(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise CorruptSessionData(f"stored {what} is {value!r}, not a number")
    return float(value)


def as_opt_float(value: object, what: str) -> float | None:
    return None if value is None else as_float(value, what)


def as_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CorruptSessionData(f"stored {what} is {value!r}, not an integer")
    return value


def as_name(value: object) -> str:
    """An attribute name read back. MySQL/MariaDB return a name that is not UTF-8 with surrogate
    escapes (see ``_MySqlBinaryText``): such a name is unreadable data, not a key to serve or to
    write back (encoding it fails)."""
    if not isinstance(value, str):
        raise CorruptSessionData(f"stored attribute name is {value!r}, not text")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise CorruptSessionData(f"stored attribute name {value!r} is not UTF-8") from None
    return value


def as_opt_str(value: object, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise CorruptSessionData(f"stored {what} is {value!r}, not text")
    return value


def as_bytes(value: object, what: str) -> bytes:
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    if not isinstance(value, bytes):
        raise CorruptSessionData(f"stored {what} is a {type(value).__name__}, not bytes")
    return value


def stored_session(
    app: str, token: str, row: Mapping[Any, Any], attributes: Mapping[str, bytes]
) -> StoredSession:
    """``row`` (a sessions-table row mapping) as a :class:`StoredSession`, or
    :class:`CorruptSessionData` naming the session if a column holds the wrong type."""
    try:
        return StoredSession(
            app=app,
            token=token,
            attributes=dict(attributes),
            version=as_int(row["version"], "version"),
            created_at=as_float(row["created_at"], "created_at"),
            last_access_at=as_float(row["last_access_at"], "last_access_at"),
            timeout_s=as_float(row["timeout_s"], "timeout_s"),
            owner=as_opt_str(row["owner"], "owner"),
            node=as_opt_str(row["node"], "node"),
            absolute_expires_at=as_opt_float(row["absolute_expires_at"], "absolute_expires_at"),
        )
    except CorruptSessionData as exc:
        raise CorruptSessionData(f"session {app}/{session_hash(app, token)}: {exc}") from exc


def is_valid_row(row: Mapping[Any, Any]) -> bool:
    """Whether a sessions row's metadata has the types a write needs (SQLite checks none)."""
    try:
        stored_session(str(row["app"]), str(row["token"]), row, {})
    except CorruptSessionData as exc:
        log.warning("unreadable stored row treated as gone: %s", exc)
        return False
    return True


def lenient_float(value: object) -> float:
    """For a row being deleted anyway: its number, or 0.0."""
    return float(value) if isinstance(value, int | float) else 0.0


def lenient_owner(value: object) -> str | None:
    return value if isinstance(value, str) else None
