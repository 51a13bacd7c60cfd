"""Placement and fencing: pure functions, no I/O, no clock.

Placement is rendezvous (highest random weight) hashing of a session's token over the live
members: each member's score is a hash of (token, member), the highest scores win. A member
leaving moves only the sessions it held; sessions keep the backups frozen in their id anyway, so
membership churn never reshuffles live sessions. Backups on another host than the owner come
first, so one machine's loss does not take a session's every copy.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    host: str


def score(token: str, member: str) -> int:
    digest = hashlib.blake2b(f"{token}\x00{member}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def choose_backups(
    token: str, owner: Member, members: Iterable[Member], replicas: int
) -> tuple[str, ...]:
    """The ``replicas`` members (never ``owner``) that hold ``token``'s copies, best first:
    members on another host than the owner's before those on its host, each group by score."""
    others = {m.name: m for m in members if m.name != owner.name}
    ranked = sorted(
        others.values(),
        key=lambda m: (m.host == owner.host, -score(token, m.name), m.name),
    )
    return tuple(m.name for m in ranked[:replicas])


class Verdict(enum.Enum):
    APPLY = "apply"  # the delta goes on top of the copy held
    DUPLICATE = "duplicate"  # already applied (a resend): acknowledge, change nothing
    SNAPSHOT = "snapshot"  # a gap: the copy held is not the delta's base; ask for the whole
    FENCED = "fenced"  # from an owner of a lower rank than the copy's (superseded): refuse


#: An owner's rank: its epoch, then its node name. Two nodes that take a session over at once,
#: each before the other's announcement reached it, own it at the same epoch; the name breaks the
#: tie, the same way on every node, so that one of them is refused everywhere.
Rank = tuple[int, str]
#: What a backup holds of a session: its owner's rank and the replication version.
Held = tuple[Rank, int]


def judge_delta(held: Held | None, rank: Rank, base_version: int, version: int) -> Verdict:
    """Whether a backup holding ``held`` (``None``: no copy) applies a delta from
    ``base_version`` to ``version`` sent by an owner of ``rank``. A higher rank than held means
    a new owner took over: its delta needs its snapshot first."""
    if held is None:
        return Verdict.SNAPSHOT
    held_rank, held_version = held
    if rank < held_rank:
        return Verdict.FENCED
    if rank > held_rank:
        return Verdict.SNAPSHOT
    if version <= held_version:
        return Verdict.DUPLICATE
    if base_version == held_version:
        return Verdict.APPLY
    return Verdict.SNAPSHOT


def judge_snapshot(held: Held | None, rank: Rank, version: int) -> Verdict:
    """Whether a whole copy at ``version`` from an owner of ``rank`` replaces ``held``: refused
    from a superseded (or outranked) owner, a duplicate when not newer."""
    if held is None:
        return Verdict.APPLY
    held_rank, held_version = held
    if rank < held_rank:
        return Verdict.FENCED
    if rank == held_rank and version <= held_version:
        return Verdict.DUPLICATE
    return Verdict.APPLY


def next_epoch(epochs: Iterable[int]) -> int:
    """The epoch a node taking a session over owns it at: above every epoch it has seen."""
    return max(epochs, default=0) + 1
