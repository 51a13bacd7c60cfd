"""Placement and fencing as pure functions, and the id's longer suffix."""

from __future__ import annotations

import pytest

from sessionkeeper import ids
from sessionkeeper.replication.placement import (
    Held,
    Member,
    Rank,
    Verdict,
    choose_backups,
    judge_delta,
    judge_snapshot,
    next_epoch,
)

TOKENS = [ids.new_token() for _ in range(400)]
MEMBERS = [Member(n, "h1" if n in "ab" else "h2") for n in "abcdef"]


def test_backups_are_never_the_owner_and_as_many_as_asked() -> None:
    for token in TOKENS[:50]:
        for replicas in (0, 1, 2, 3):
            chosen = choose_backups(token, MEMBERS[0], MEMBERS, replicas)
            assert len(chosen) == replicas and "a" not in chosen and len(set(chosen)) == replicas


def test_another_host_comes_first() -> None:
    owner = MEMBERS[0]  # on h1, like b
    for token in TOKENS:
        chosen = choose_backups(token, owner, MEMBERS, 1)
        assert chosen != ("b",)
    # Only same-host members left: they are used rather than none.
    assert choose_backups(TOKENS[0], owner, MEMBERS[:2], 1) == ("b",)


def test_placement_spreads_and_a_departure_moves_only_the_sessions_it_held() -> None:
    owner = Member("z", "h0")
    before = {t: choose_backups(t, owner, MEMBERS, 1)[0] for t in TOKENS}
    counts = {m.name: list(before.values()).count(m.name) for m in MEMBERS}
    assert all(40 < n < 100 for n in counts.values()), counts  # about 400 / 6 each
    without_c = [m for m in MEMBERS if m.name != "c"]
    after = {t: choose_backups(t, owner, without_c, 1)[0] for t in TOKENS}
    moved = {t for t in TOKENS if before[t] != after[t]}
    assert moved == {t for t in TOKENS if before[t] == "c"}


@pytest.mark.parametrize(
    ("held", "rank", "base", "version", "verdict"),
    [
        (None, (1, "a"), 0, 1, Verdict.SNAPSHOT),  # no copy: ask for the whole
        (((1, "a"), 3), (1, "a"), 3, 4, Verdict.APPLY),
        (((1, "a"), 3), (1, "a"), 2, 3, Verdict.DUPLICATE),  # a resend of what is held
        (((1, "a"), 3), (1, "a"), 4, 5, Verdict.SNAPSHOT),  # a gap: one delta was missed
        (((2, "b"), 1), (1, "a"), 3, 4, Verdict.FENCED),  # from the owner that was superseded
        (((1, "a"), 3), (2, "b"), 3, 4, Verdict.SNAPSHOT),  # a new owner: its snapshot first
        (((2, "c"), 3), (2, "b"), 3, 4, Verdict.FENCED),  # one epoch, two owners: c outranks b
        (((2, "b"), 3), (2, "c"), 3, 4, Verdict.SNAPSHOT),  # ... and takes b's place
    ],
)
def test_judge_delta(
    held: Held | None, rank: Rank, base: int, version: int, verdict: Verdict
) -> None:
    assert judge_delta(held, rank, base, version) is verdict


def test_judge_snapshot_and_next_epoch() -> None:
    a1, b2 = (1, "a"), (2, "b")
    assert judge_snapshot(None, a1, 1) is Verdict.APPLY
    assert judge_snapshot((a1, 5), a1, 5) is Verdict.DUPLICATE
    assert judge_snapshot((a1, 5), a1, 6) is Verdict.APPLY
    assert judge_snapshot((b2, 1), a1, 9) is Verdict.FENCED  # a stale owner's whole copy too
    assert judge_snapshot((a1, 9), b2, 1) is Verdict.APPLY  # a new owner restarts versions
    assert judge_snapshot(((2, "c"), 1), b2, 9) is Verdict.FENCED  # outranked at one epoch
    assert next_epoch([]) == 1 and next_epoch([3, 1]) == 4


def test_ids_carry_owner_and_backups() -> None:
    token = ids.new_token()
    assert ids.parse(f"{token}.a") == (token, "a")
    assert ids.parse(f"{token}.a.b") == (token, "a")
    assert ids.parse_route(f"{token}.a.b-2.c") == (token, ("a", "b-2", "c"))
    assert ids.parse_route(token) == (token, ())
    assert ids.join(token, "a", "b") == f"{token}.a.b"
    for bad in (f"{token}..a", f"{token}.a.", f"{token}.a.b.c.d.e", f"{token}.a/b"):
        assert ids.parse(bad) is None and ids.parse_route(bad) is None
