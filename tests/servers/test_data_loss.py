"""A store that loses its data (Redis restarted without persistence, a database restored from an
older backup) must not make a node drop the sessions it still holds: they are written again."""

from __future__ import annotations

from typing import Any

import sessionkeeper as sk

from .conftest import Target


def lose_everything(target: Target) -> None:
    if target.kind == "redis":
        import redis

        client = redis.Redis.from_url(target.url)
        try:
            for key in client.scan_iter(match=f"{target.options['key_prefix']}*", count=1000):
                client.delete(key)
        finally:
            client.close()
        return
    from sessionkeeper.stores.sql import SqlStore

    store = SqlStore(target.url, table_prefix=target.options["table_prefix"])
    try:
        with store.engine.begin() as conn:
            for table in reversed(store.tables.metadata.sorted_tables):
                if not table.name.endswith("schema"):
                    conn.execute(table.delete())
    finally:
        store.close()


def test_sessions_the_store_lost_are_written_again(target: Target, make: Any) -> None:
    m = make(write=sk.TimeBased(10))
    ids = []
    for i in range(5):
        with m.request(app="shop") as s:
            s["n"] = i
            ids.append(s.id)
    lose_everything(target)
    for sid in ids:
        with m.request(app="shop", session_id=sid) as s:
            s["n"] = s["n"] + 100
    m.flush()
    assert m.stats()["recreated"] == 5
    reader = target.open()
    for i, sid in enumerate(ids):
        stored = reader.load("shop", sid.split(".")[0])
        assert stored is not None, sid
        assert stored.attributes["n"] == str(i + 100).encode()
