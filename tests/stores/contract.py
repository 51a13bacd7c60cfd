"""The store contract, as one suite every store must pass.

A store's test module makes a ``store`` fixture and subclasses :class:`StoreContract`
(as Django's ``SessionTestsMixin`` and Jetty's ``AbstractSessionDataStoreTest``).
"""

from __future__ import annotations

import dataclasses
import threading

import pytest

from sessionkeeper.stores import Invalidation, SaveRequest, SaveStatus, Store, Touch

T0 = 1_700_000_000.0


def req(
    token: str,
    version: int = 0,
    changed: dict[str, bytes] | None = None,
    removed: frozenset[str] = frozenset(),
    *,
    app: str = "shop",
    full: bool = False,
    last_access_at: float = T0,
    timeout_s: float = 1800.0,
    owner: str | None = None,
) -> SaveRequest:
    return SaveRequest(
        app=app,
        token=token,
        expected_version=version,
        created_at=T0,
        last_access_at=last_access_at,
        timeout_s=timeout_s,
        changed=changed or {},
        removed=removed,
        full=full,
        owner=owner,
        node="n1",
    )


def tok(i: int) -> str:
    return f"tok{i:029d}"


class StoreContract:
    def test_load_absent(self, store: Store) -> None:
        assert store.load("shop", tok(1)) is None

    def test_create_and_load(self, store: Store) -> None:
        [res] = store.save_many([req(tok(1), 0, {"a": b"1", "b": b"\x00\xff"}, owner="alice")])
        assert res.status is SaveStatus.SAVED and res.version == 1
        s = store.load("shop", tok(1))
        assert s is not None
        assert dict(s.attributes) == {"a": b"1", "b": b"\x00\xff"}
        assert s.version == 1 and s.owner == "alice" and s.node == "n1"
        assert s.created_at == T0 and s.last_access_at == T0 and s.timeout_s == 1800.0
        assert s.expires_at == T0 + 1800.0

    def test_empty_session_is_stored(self, store: Store) -> None:
        [res] = store.save_many([req(tok(1), 0, {})])
        assert res.status is SaveStatus.SAVED
        s = store.load("shop", tok(1))
        assert s is not None and dict(s.attributes) == {}

    def test_partial_update_keeps_other_keys(self, store: Store) -> None:
        store.save_many([req(tok(1), 0, {"a": b"1", "b": b"2", "c": b"3"})])
        [res] = store.save_many([req(tok(1), 1, {"a": b"10"}, frozenset({"c"}))])
        assert res.status is SaveStatus.SAVED and res.version == 2
        s = store.load("shop", tok(1))
        assert s is not None and dict(s.attributes) == {"a": b"10", "b": b"2"}

    def test_full_write_replaces_attributes(self, store: Store) -> None:
        store.save_many([req(tok(1), 0, {"a": b"1", "b": b"2"})])
        store.save_many([req(tok(1), 1, {"c": b"3"}, full=True)])
        s = store.load("shop", tok(1))
        assert s is not None and dict(s.attributes) == {"c": b"3"}

    def test_apps_are_separate(self, store: Store) -> None:
        store.save_many(
            [req(tok(1), 0, {"a": b"shop"}, app="shop"), req(tok(1), 0, {"a": b"blog"}, app="blog")]
        )
        shop, blog = store.load("shop", tok(1)), store.load("blog", tok(1))
        assert shop is not None and blog is not None
        assert shop.attributes["a"] == b"shop" and blog.attributes["a"] == b"blog"
        store.delete("shop", tok(1), tombstone_until=T0 + 60)
        assert store.load("shop", tok(1)) is None
        assert store.load("blog", tok(1)) is not None

    def test_batch_of_many(self, store: Store) -> None:
        results = store.save_many([req(tok(i), 0, {"k": str(i).encode()}) for i in range(250)])
        assert all(r.status is SaveStatus.SAVED for r in results)
        assert store.count("shop", now=T0) == 250
        s = store.load("shop", tok(123))
        assert s is not None and s.attributes["k"] == b"123"

    def test_version_conflict_is_merged(self, store: Store) -> None:
        store.save_many([req(tok(1), 0, {"a": b"1", "b": b"1"})])
        # node X writes a at version 1 -> 2
        store.save_many([req(tok(1), 1, {"a": b"x"})])
        # node Y still believes version 1 and writes b: merged, both kept
        [res] = store.save_many([req(tok(1), 1, {"b": b"y"})])
        assert res.status is SaveStatus.SAVED and res.version == 3
        assert res.merged_from is not None and res.merged_from.version == 2
        assert res.merged_from.attributes["a"] == b"x"
        s = store.load("shop", tok(1))
        assert s is not None and dict(s.attributes) == {"a": b"x", "b": b"y"}
        assert store.stats.conflicts_merged == 1

    def test_conflicting_full_write_keeps_other_nodes_keys(self, store: Store) -> None:
        store.save_many([req(tok(1), 0, {"a": b"1"})])
        store.save_many([req(tok(1), 1, {"other": b"o"})])
        store.save_many([req(tok(1), 1, {"a": b"2"}, full=True)])
        s = store.load("shop", tok(1))
        assert s is not None and dict(s.attributes) == {"a": b"2", "other": b"o"}

    def test_same_key_later_write_wins(self, store: Store) -> None:
        store.save_many([req(tok(1), 0, {"a": b"1"})])
        store.save_many([req(tok(1), 1, {"a": b"first"})])
        store.save_many([req(tok(1), 1, {"a": b"second"})])
        s = store.load("shop", tok(1))
        assert s is not None and s.attributes["a"] == b"second"

    def test_tombstone_blocks_resurrection(self, store: Store) -> None:
        store.save_many([req(tok(1), 0, {"a": b"1"})])
        assert store.delete("shop", tok(1), tombstone_until=T0 + 60) is True
        assert store.load("shop", tok(1)) is None
        [late] = store.save_many([req(tok(1), 1, {"a": b"late"})])
        assert late.status is SaveStatus.GONE
        [again] = store.save_many([req(tok(1), 0, {"a": b"new"})])
        assert again.status is SaveStatus.GONE
        assert store.load("shop", tok(1)) is None

    def test_feed_starts_at_its_end_and_names_each_deletion_in_order(self, store: Store) -> None:
        store.save_many([req(tok(1), 0, {"a": b"1"}), req(tok(2), 0, {"a": b"1"}, app="blog")])
        store.delete("shop", tok(9), tombstone_until=T0 + 60)  # before this node started
        none, start = store.invalidations_since(None)
        assert none == []
        assert store.invalidations_since(start) == ([], start)
        store.delete("shop", tok(1), tombstone_until=T0 + 60)
        store.delete("blog", tok(2), tombstone_until=T0 + 60)
        entries, cursor = store.invalidations_since(start)
        assert entries == [Invalidation("shop", tok(1)), Invalidation("blog", tok(2))]
        assert store.invalidations_since(cursor) == ([], cursor)
        store.delete("shop", tok(3), tombstone_until=T0 + 60)  # absent: still ended everywhere
        assert store.invalidations_since(cursor)[0] == [Invalidation("shop", tok(3))]

    def test_feed_pages_by_limit(self, store: Store) -> None:
        _, cursor = store.invalidations_since(None)
        for i in range(5):
            store.delete("shop", tok(i), tombstone_until=T0 + 60)
        seen: list[Invalidation] = []
        for _ in range(3):
            page, cursor = store.invalidations_since(cursor, limit=2)
            assert len(page) <= 2
            seen += page
        assert seen == [Invalidation("shop", tok(i)) for i in range(5)]

    def test_feed_entry_outlives_a_sweep_before_its_tombstone_ends(self, store: Store) -> None:
        _, cursor = store.invalidations_since(None)
        store.delete("shop", tok(1), tombstone_until=T0 + 100)
        store.delete_expired(T0 + 50)
        assert store.invalidations_since(cursor)[0] == [Invalidation("shop", tok(1))]

    def test_delete_absent(self, store: Store) -> None:
        assert store.delete("shop", tok(9), tombstone_until=T0 + 60) is False
        assert store.load("shop", tok(9)) is None

    def test_write_to_absent_session_is_gone(self, store: Store) -> None:
        [res] = store.save_many([req(tok(1), 3, {"a": b"1"})])
        assert res.status is SaveStatus.GONE

    def test_touch_raises_access_time_only(self, store: Store) -> None:
        store.save_many([req(tok(1), 0, {"a": b"1"})])
        store.touch_many([Touch("shop", tok(1), T0 + 100)])
        s = store.load("shop", tok(1))
        assert s is not None and s.last_access_at == T0 + 100 and s.version == 1
        store.touch_many([Touch("shop", tok(1), T0 + 50)])  # never moves back
        s = store.load("shop", tok(1))
        assert s is not None and s.last_access_at == T0 + 100
        store.touch_many([Touch("shop", tok(404), T0)])  # absent: ignored

    def test_delete_expired_returns_each_once(self, store: Store) -> None:
        store.save_many(
            [req(tok(i), 0, {"a": b"1"}, timeout_s=10, last_access_at=T0 + i) for i in range(20)]
        )
        store.save_many([req(tok(100), 0, {}, timeout_s=1000)])
        # expires_at = T0 + i + 10; before T0 + 20 -> i in 0..9
        first = store.delete_expired(T0 + 20, limit=4)
        rest = store.delete_expired(T0 + 20, limit=100)
        assert len(first) == 4 and len(rest) == 6
        tokens = {e.token for e in first + rest}
        assert tokens == {tok(i) for i in range(10)}
        assert store.delete_expired(T0 + 20, limit=100) == []
        assert store.load("shop", tok(3)) is None
        assert store.load("shop", tok(15)) is not None
        assert store.load("shop", tok(100)) is not None

    def test_absolute_deadline_is_stored_and_swept(self, store: Store) -> None:
        deadline = T0 + 50
        r = dataclasses.replace(req(tok(1), 0, {"a": b"1"}), absolute_expires_at=deadline)
        store.save_many([r, req(tok(2), 0, {"a": b"1"})])
        s = store.load("shop", tok(1))
        assert s is not None and s.absolute_expires_at == deadline and s.expires_at == deadline
        other = store.load("shop", tok(2))
        assert other is not None and other.absolute_expires_at is None
        # A later write changes it (metadata), and a partial one keeps nothing stale.
        later = dataclasses.replace(req(tok(1), 1, {"b": b"2"}), absolute_expires_at=T0 + 40)
        [res] = store.save_many([later])
        assert res.status is SaveStatus.SAVED
        s = store.load("shop", tok(1))
        assert s is not None and s.absolute_expires_at == T0 + 40
        # A touch raises the idle expiry, never past the deadline; expires_at = min(idle
        # T0 + 1830, deadline T0 + 40): swept by the deadline.
        store.touch_many([Touch("shop", tok(1), T0 + 30)])
        assert [e.token for e in store.delete_expired(T0 + 41, limit=10)] == [tok(1)]
        assert store.load("shop", tok(2)) is not None

    def test_delete_expired_purges_old_tombstones(self, store: Store) -> None:
        store.save_many([req(tok(1), 0, {})])
        store.delete("shop", tok(1), tombstone_until=T0 + 5)
        assert store.delete_expired(T0 + 1, limit=10) == []
        [res] = store.save_many([req(tok(1), 0, {})])
        assert res.status is SaveStatus.GONE  # tombstone still there
        assert store.delete_expired(T0 + 10, limit=10) == []  # purged, not reported

    def test_concurrent_sweepers_each_session_once(self, store: Store) -> None:
        store.save_many([req(tok(i), 0, {}, timeout_s=1) for i in range(200)])
        found: list[str] = []
        errors: list[BaseException] = []
        lock = threading.Lock()

        def sweep() -> None:
            try:
                while batch := store.delete_expired(T0 + 100, limit=7):
                    with lock:
                        found.extend(e.token for e in batch)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=sweep) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        missing = {tok(i) for i in range(200)} - set(found)
        left = [e.token for e in store.delete_expired(T0 + 100)]
        got = (len(found), sorted(missing), left)
        assert got == (200, [], []), f"each session once: (found, missing, left) = {got}"

    def test_counts(self, store: Store) -> None:
        store.save_many(
            [
                req(tok(1), 0, {}, timeout_s=10),
                req(tok(2), 0, {}, timeout_s=1000),
                req(tok(3), 0, {}, app="blog", timeout_s=1000),
            ]
        )
        counts = store.counts_by_app(T0 + 100)
        assert counts["shop"].live == 1 and counts["shop"].expired == 1
        assert counts["blog"].live == 1 and counts["blog"].expired == 0
        assert store.count(now=T0 + 100) == 2

    def test_concurrent_writers_different_keys(self, store: Store) -> None:
        store.save_many([req(tok(1), 0, {})])
        errors: list[BaseException] = []

        def writer(name: str) -> None:
            try:
                version = 1
                for i in range(25):
                    [res] = store.save_many([req(tok(1), version, {f"{name}{i}": b"v"})])
                    assert res.status is SaveStatus.SAVED
                    version = res.version
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(n,)) for n in "abc"]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        s = store.load("shop", tok(1))
        assert s is not None
        assert set(s.attributes) == {f"{n}{i}" for n in "abc" for i in range(25)}
        assert s.version == 76

    def test_bytes_written_after_a_merge_count_what_the_rebased_write_wrote(
        self, store: Store
    ) -> None:
        """A stale full write of two keys, one changed here: the merge writes only that key,
        so only its bytes are counted (not the whole stale copy's as well)."""
        store.save_many([req(tok(1), 0, {"a": b"x" * 100, "b": b"y" * 100})])
        store.save_many([req(tok(1), 1, {"a": b"z" * 100})])  # another node: version 2
        before = store.stats.bytes_written
        stale = dataclasses.replace(
            req(tok(1), 1, {"a": b"x" * 100, "b": b"w" * 10}, full=True), own=frozenset({"b"})
        )
        [res] = store.save_many([stale])
        assert res.status is SaveStatus.SAVED and res.merged_from is not None
        s = store.load("shop", tok(1))
        assert s is not None and s.attributes == {"a": b"z" * 100, "b": b"w" * 10}
        assert store.stats.bytes_written - before == 10

    def test_binary_and_unicode_names(self, store: Store) -> None:
        value = bytes(range(256)) * 4
        store.save_many([req(tok(1), 0, {"naïve ключ ✓": value})])
        s = store.load("shop", tok(1))
        assert s is not None and s.attributes["naïve ключ ✓"] == value

    def test_stats_count_reads_and_writes(self, store: Store) -> None:
        store.save_many([req(tok(1), 0, {"a": b"12345"}), req(tok(2), 0, {"a": b"1"})])
        store.load("shop", tok(1))
        assert store.stats.sessions_written == 2
        assert store.stats.write_batches == 1
        assert store.stats.bytes_written == 6
        assert store.stats.reads == 1


@pytest.fixture
def t0() -> float:
    return T0


class OwnerContract:
    """The owner index (logout everywhere) and the console's paginated listing."""

    def test_sessions_of_finds_only_that_owners(self, store: Store) -> None:
        store.save_many(
            [
                req(tok(3), 0, {"a": b"1"}, owner="alice"),
                req(tok(1), 0, {}, owner="alice"),
                req(tok(2), 0, {}, owner="bob"),
                req(tok(4), 0, {}),
                req(tok(5), 0, {}, owner="alice", app="blog"),
            ]
        )
        found = store.sessions_of("shop", "alice")
        assert [s.token for s in found] == [tok(1), tok(3)]
        assert dict(found[1].attributes) == {"a": b"1"} and found[1].owner == "alice"
        assert [s.token for s in store.sessions_of("blog", "alice")] == [tok(5)]
        assert store.sessions_of("shop", "carol") == []

    def test_owner_change_moves_the_session_in_the_index(self, store: Store) -> None:
        store.save_many([req(tok(1), 0, {}, owner="alice")])
        store.save_many([req(tok(1), 1, {"k": b"v"}, owner="bob")])
        assert store.sessions_of("shop", "alice") == []
        assert [s.token for s in store.sessions_of("shop", "bob")] == [tok(1)]

    def test_delete_owner_tombstones_every_session_of_the_owner(self, store: Store) -> None:
        store.save_many(
            [req(tok(i), 0, {"a": b"1"}, owner="alice") for i in range(3)]
            + [req(tok(9), 0, {}, owner="bob"), req(tok(8), 0, {}, owner="alice", app="blog")]
        )
        ended = store.delete_owner("shop", "alice", grace_s=60.0)
        assert sorted(s.token for s in ended) == [tok(0), tok(1), tok(2)]
        assert all(store.load("shop", tok(i)) is None for i in range(3))
        [late] = store.save_many([req(tok(1), 1, {"a": b"late"}, owner="alice")])
        assert late.status is SaveStatus.GONE  # tombstoned: an in-flight write cannot return
        assert store.sessions_of("shop", "alice") == []
        assert store.delete_owner("shop", "alice", grace_s=60.0) == []
        assert store.load("shop", tok(9)) is not None
        assert store.load("blog", tok(8)) is not None

    def test_delete_and_sweep_clean_the_index(self, store: Store) -> None:
        store.save_many(
            [
                req(tok(1), 0, {}, owner="alice"),
                req(tok(2), 0, {}, owner="alice", timeout_s=10.0),
                req(tok(3), 0, {}, owner="alice", timeout_s=1000.0),
            ]
        )
        store.delete("shop", tok(1), tombstone_until=T0 + 60)
        assert [e.token for e in store.delete_expired(T0 + 100)] == [tok(2)]
        assert [s.token for s in store.sessions_of("shop", "alice")] == [tok(3)]

    def test_list_sessions_pages_in_token_order(self, store: Store) -> None:
        store.save_many([req(tok(i), 0, {"n": str(i).encode()}) for i in (5, 1, 4, 2, 3, 7, 6)])
        store.save_many([req(tok(0), 0, {}, app="blog")])
        store.delete("shop", tok(4), tombstone_until=T0 + 60)
        first = store.list_sessions("shop", limit=3)
        assert [s.token for s in first] == [tok(1), tok(2), tok(3)]
        assert first[2].attributes["n"] == b"3"
        second = store.list_sessions("shop", after=first[-1].token, limit=3)
        assert [s.token for s in second] == [tok(5), tok(6), tok(7)]
        assert store.list_sessions("shop", after=tok(7), limit=3) == []
        assert [s.token for s in store.list_sessions("blog")] == [tok(0)]
        with pytest.raises(ValueError):
            store.list_sessions("shop", limit=0)
