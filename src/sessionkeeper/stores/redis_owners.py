"""The owner index of :class:`~sessionkeeper.stores.redis.RedisStore` (logout everywhere), and the
console's listing of an app's sessions.

Per bucket of the expiry index and owner, a set of the owner's tokens in that bucket,
``{app:b}:own:<owner>:o``: the session's own hash tag, so the scripts that write a session keep
its owner's set in the same call and the same slot (Cluster-safe, no extra round trip). The save
script adds the token to its owner's set and removes it from a previous owner's; the delete
script and the sweep remove it; a touch adds it again (a session written before the index existed
joins it). A set's Redis TTL is never shorter than that of any session in it: each script that
refreshes a session's TTL raises its set's to match.

A session Redis expires by itself leaves a stale member: :func:`sessions_of` reads the owner's
set in every bucket (one pipeline), loads each member in its own slot, keeps those still bound to
the owner and removes the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import redis_lua as lua
from .base import StoredSession
from .redis_keys import owner_set

if TYPE_CHECKING:
    from .redis import RedisStore


def found(app: str, tokens: Sequence[str], replies: Sequence[Any]) -> dict[str, StoredSession]:
    """The sessions among LOAD's replies for ``tokens`` (None: not stored, or tombstoned)."""
    out: dict[str, StoredSession] = {}
    for token, reply in zip(tokens, replies, strict=True):
        if reply is not None:
            out[token] = lua.snapshot(app, token, reply)
    return out


def sessions_of(store: RedisStore, app: str, owner: str) -> list[StoredSession]:
    """Every stored session bound to ``owner`` in ``app``, in token order. Reads 64 sets in one
    pipeline, loads the members in another, then removes the stale ones in a third."""
    found_sets = store._each_bucket(app, lambda p, k: p.smembers(owner_set(k[0], owner)))
    by_bucket = [(k, sorted(m.decode() for m in members)) for k, members in enumerate(found_sets)]
    tokens = sorted(t for _, members in by_bucket for t in members)
    found = store.load_many(app, tokens)
    stale = [
        (b, [t for t in members if t not in found or found[t].owner != owner])
        for b, members in by_bucket
    ]
    if any(old for _, old in stale):
        pipe = store.client.pipeline(transaction=False)
        for b, old in stale:
            if old:
                pipe.srem(store.owner_key(app, owner, b), *old)
        pipe.execute()
    return [found[t] for t in tokens if t in found and found[t].owner == owner]


def list_sessions(
    store: RedisStore, app: str, after: str | None, limit: int
) -> list[StoredSession]:
    """A page of the app's sessions in token order. The expiry index's buckets name every stored
    session of the app; they are read whole (one pipeline) and sorted here (a sorted set orders
    by score): a console's cost, never a node's."""
    buckets: Any = store._each_bucket(app, lambda p, k: p.zrange(k[0], 0, -1))
    members = (m.decode() for bucket in buckets for m in bucket)
    tokens = sorted(t for t in members if after is None or t > after)
    out: list[StoredSession] = []
    while tokens and len(out) < limit:
        chunk, tokens = tokens[: limit - len(out)], tokens[limit - len(out) :]
        found = store.load_many(app, chunk)
        out += [found[t] for t in chunk if t in found]  # Redis may have expired some
    return out
