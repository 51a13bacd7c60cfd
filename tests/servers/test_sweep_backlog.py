"""A sweep through a large backlog of expired sessions stays linear: tombstones are searched for
only once the expired sessions are done (regression: each batch walked the ``expires_at`` index
past every expired session to find tombstones, making a 1,000,000-row sweep quadratic)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from sessionkeeper.stores.sql import SqlStore
from tests.services import unique_name
from tests.stores.contract import T0, req, tok

from .conftest import FIXTURE_OF

LIMIT = 50


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mysql"])
def test_tombstones_are_searched_once_the_backlog_is_done(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> None:
    url = (
        f"sqlite:///{tmp_path / 's.db'}"
        if kind == "sqlite"
        else request.getfixturevalue(FIXTURE_OF[kind])
    )
    store = SqlStore(url, table_prefix=unique_name("skswp"))
    try:
        store.save_many([req(tok(i), 0, {"a": b"1"}) for i in range(3 * LIMIT + 7)])
        store.delete("shop", tok(0), tombstone_until=T0 + 5)  # one tombstone, due at T0 + 5
        statements: list[str] = []

        def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            statements.append(statement)

        event.listen(store.engine, "before_cursor_execute", record)
        before = T0 + 1800 + 10  # every session expired, the tombstone past its time
        sizes = []
        while True:
            statements.clear()
            sizes.append(len(store.delete_expired(before, limit=LIMIT)))
            searched = any("tombstone_until IS NOT NULL" in s for s in statements)
            assert searched == (sizes[-1] < LIMIT), statements
            if sizes[-1] < LIMIT:
                break
        assert sizes == [LIMIT, LIMIT, LIMIT, 6]
        with store.engine.connect() as conn:
            s = store.tables.sessions
            assert conn.execute(sa.select(sa.func.count()).select_from(s)).scalar() == 0
    finally:
        store.tables.metadata.drop_all(store.engine)
        store.close()
