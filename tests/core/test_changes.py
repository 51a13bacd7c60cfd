"""The Session's change tracking (sessionkeeper.changes): take and restore."""

from __future__ import annotations

from sessionkeeper import changes
from sessionkeeper.changes import Changes


def test_restore_puts_back_without_overriding_newer_changes() -> None:
    c = Changes(track_reads=True)
    c.record_set("a")
    c.record_set("b")
    c.record_delete("gone")
    c.record_read("r")
    c.record_meta()
    c.record_request()
    taken = c.take()
    assert not c.any() and c.updates == c.requests == 0
    c.record_delete("a")  # after the take: the newer state wins
    c.record_set("gone")
    c.restore(taken)
    assert set(c.set_keys) == {"b", "gone"}
    assert set(c.deleted_keys) == {"a"}
    assert set(c.read_keys) == {"r"} and c.meta_changed
    assert c.updates == 5 and c.requests == 1


def test_empty_tracking_reads_as_empty_sets() -> None:
    c = Changes()
    assert not c.any() and c.set_keys == c.deleted_keys == c.read_keys == frozenset()
    assert c.take().set_keys == frozenset()


def test_key_tuples_are_shared_between_sessions_and_the_table_stays_bounded() -> None:
    a, b = Changes(), Changes()
    for c in (a, b):
        c.record_set("user")
        c.record_set("cart")
    assert a._set is b._set == ("user", "cart")  # one tuple for both
    for i in range(changes._SHARED_MAX + 10):
        Changes().record_set(f"k{i}")
    assert len(changes._SHARED) <= changes._SHARED_MAX
    a.record_delete("cart")
    assert set(a.set_keys) == {"user"} and set(b.set_keys) == {"user", "cart"}


def test_a_read_counts_as_a_change_only_when_reads_are_tracked() -> None:
    tracked, untracked = Changes(track_reads=True), Changes()
    for c in (tracked, untracked):
        c.record_read("cart")
    assert tracked.any() and not untracked.any()
    assert set(untracked.read_keys) == {"cart"}  # still recorded (mark_modified uses them)
    with tracked, tracked:  # also the session's lock, re-entrant
        tracked.take()
    assert not tracked.any()
