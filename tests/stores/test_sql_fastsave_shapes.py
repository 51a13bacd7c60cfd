"""The one-session write path (``stores/sql/fastsave*.py``) builds its statement from the write's
shape: how many attributes it changes and removes, whether it is a full write. Each shape,
on both sides of the limits where the text changes form (PostgreSQL: scalar parameters up to
``SCALARS`` names, arrays beyond; MariaDB: one statement per attribute up to eight, a derived
table beyond), stores exactly what the general path would."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sessionkeeper.stores import SaveStatus
from sessionkeeper.stores.sql import SqlStore
from sessionkeeper.stores.sql.fastsave_postgres import SCALARS
from tests.services import unique_name

from .contract import req, tok

#: Counts of attributes that cross every limit of a text's form.
COUNTS = [0, 1, SCALARS, SCALARS + 1, 20]


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def store(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[SqlStore]:
    if request.param == "sqlite":
        s = SqlStore(f"sqlite:///{tmp_path}/s.db")
    else:
        url = request.getfixturevalue(
            "postgres_url" if request.param == "postgresql" else "mysql_url"
        )
        s = SqlStore(url, table_prefix=unique_name())
    assert s._fast is not None  # the path under test
    try:
        yield s
    finally:
        s.tables.metadata.drop_all(s.engine)
        s.close()


def _values(prefix: str, n: int, value: bytes) -> dict[str, bytes]:
    return {f"{prefix}{i}": value + b"%d" % i for i in range(n)}


@pytest.mark.parametrize("removed", [0, 1, SCALARS + 1])
@pytest.mark.parametrize("changed", COUNTS)
def test_update_of_each_shape_stores_what_it_says(
    store: SqlStore, changed: int, removed: int
) -> None:
    kept = _values("keep", 2, b"k")
    gone = _values("gone", removed, b"g")
    store.save_many([req(tok(1), 0, {**kept, **gone, **_values("c", changed, b"old")})])
    new = _values("c", changed, b"new")
    [res] = store.save_many([req(tok(1), 1, new, frozenset(gone) | {"never-stored"})])
    assert res.status is SaveStatus.SAVED and res.version == 2 and res.merged_from is None
    s = store.load("shop", tok(1))
    assert s is not None and s.version == 2
    assert dict(s.attributes) == {**kept, **new}


@pytest.mark.parametrize("changed", COUNTS)
def test_full_write_of_each_shape_keeps_only_what_it_wrote(store: SqlStore, changed: int) -> None:
    store.save_many([req(tok(1), 0, {**_values("old", SCALARS + 2, b"o"), "c0": b"x"})])
    new = _values("c", changed, b"new")
    [res] = store.save_many([req(tok(1), 1, new, full=True)])
    assert res.status is SaveStatus.SAVED and res.version == 2
    s = store.load("shop", tok(1))
    assert s is not None and dict(s.attributes) == new


@pytest.mark.parametrize("changed", COUNTS)
def test_creation_of_each_shape_stores_its_attributes(store: SqlStore, changed: int) -> None:
    new = _values("c", changed, b"v")
    [res] = store.save_many([req(tok(1), 0, new)])
    assert res.status is SaveStatus.SAVED and res.version == 1
    s = store.load("shop", tok(1))
    assert s is not None and dict(s.attributes) == new


@pytest.mark.parametrize("changed", [1, SCALARS + 1])
def test_stale_write_of_each_shape_writes_nothing_then_merges(
    store: SqlStore, changed: int
) -> None:
    store.save_many([req(tok(1), 0, {"a": b"1"})])
    store.save_many([req(tok(1), 1, {"b": b"2"})])
    new = _values("c", changed, b"v")
    [res] = store.save_many([req(tok(1), 1, new, frozenset({"a"}))])  # read at version 1
    assert res.status is SaveStatus.SAVED and res.version == 3 and res.merged_from is not None
    s = store.load("shop", tok(1))
    assert s is not None and dict(s.attributes) == {"b": b"2", **new}


#: Values of every type a MariaDB write binds, and the edges of each: bytes of every byte value,
#: floats that print with and without an exponent, strings with quotes, backslashes and NULs.
BOUND = [
    b"",
    bytes(range(256)),
    0,
    -7,
    2**62,
    0.0,
    -0.5,
    1796349169.6859791,
    1e20,
    5e-324,
    None,
    "",
    "node-1",
    "o'brien\\\"\x00\n\r\x1a%s%(x)s",
    "日本語",
]


@pytest.mark.parametrize("sql_mode", ["", "NO_BACKSLASH_ESCAPES"])
def test_mariadb_binds_every_value_as_pymysql_mogrify_does(mysql_url: str, sql_mode: str) -> None:
    # The write binds its values itself (fastsave_mysql._bind), without PyMySQL's encoders
    # map: each one must read back as PyMySQL would have written it, on the server too.
    from sessionkeeper.stores.sql.fastsave_mysql import _bind

    store = SqlStore(mysql_url, table_prefix=unique_name())
    fairy = store.engine.raw_connection()
    try:
        raw = fairy.driver_connection
        with raw.cursor() as cur:
            cur.execute("SET SESSION sql_mode = %s", (sql_mode,))
            cur.execute("SELECT 1")  # the server's status (its escaping mode) is read
            for value in BOUND:
                assert _bind(raw, "SELECT %s", (value,)) == cur.mogrify("SELECT %s", (value,))
                assert _bind(raw, "SELECT %(v)s", {"v": value}) == cur.mogrify(
                    "SELECT %(v)s", {"v": value}
                )
            text = _bind(raw, "SELECT " + ", ".join(["%s"] * len(BOUND)), BOUND)
            cur.execute(text)
            row = cur.fetchone()
        expected = [
            v.encode() if isinstance(v, str) else float(v) if isinstance(v, float) else v
            for v in BOUND
        ]
        assert [r.encode() if isinstance(r, str) else r for r in row] == expected
    finally:
        fairy.close()
        store.close()


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_mariadb_refuses_a_float_it_has_no_literal_for(mysql_url: str, value: float) -> None:
    import pymysql

    from sessionkeeper.stores.sql.fastsave_mysql import _bind

    store = SqlStore(mysql_url, table_prefix=unique_name())
    fairy = store.engine.raw_connection()
    try:
        with pytest.raises(pymysql.err.ProgrammingError, match="can not be used with MySQL"):
            _bind(fairy.driver_connection, "SELECT %s", (value,))
    finally:
        fairy.close()
        store.close()
