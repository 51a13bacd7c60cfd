"""The owner index of :class:`~sessionkeeper.stores.redis.RedisStore` (logout everywhere), and the
console's listing of an app's sessions.

Per app and owner, a set of tokens under the hash tag ``{app:owner}``, with a Redis TTL at least
its longest session's. The save script keeps it on one server; on a cluster, where the set lives
in another slot than the session, :func:`put` adds to it in a second call after the save. A delete
and the sweep remove what they end (:func:`drop`). A session Redis expires by itself, or one bound
to another owner since, leaves a stale member: :func:`sessions_of` loads every member, each in its
own session's slot, keeps those still bound to the owner and removes the others. So every call
here touches one slot at a time: Cluster-safe.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .base import SaveRequest, StoredSession

if TYPE_CHECKING:
    from .redis import RedisStore


def key(store: RedisStore, app: str, owner: str) -> str:
    return store.owner_key(app, owner)


def put(store: RedisStore, saved: Sequence[tuple[SaveRequest, str | None]]) -> None:
    """After saves, each with the owner the session had before: on a cluster, add each to its
    owner's set (the script did on one server); everywhere, drop it from a previous owner's."""
    if store.split_index:
        calls: list[tuple[list[str], list[str | bytes]]] = [
            ([key(store, r.app, r.owner)], [r.token, store._ttl_ms(r.timeout_s)])
            for r, _ in saved
            if r.owner is not None
        ]
        store.eval_owner_script(calls)
    drop(store, [(r.app, old, r.token) for r, old in saved if old is not None and old != r.owner])


def drop(store: RedisStore, entries: Sequence[tuple[str, str | None, str]]) -> None:
    """Remove each (app, owner, token) from its owner's set: one pipeline, one SREM each, in
    that set's slot. Entries without an owner are skipped."""
    entries = [e for e in entries if e[1] is not None]
    if not entries:
        return
    pipe = store.client.pipeline(transaction=False)
    for app, owner, token in entries:
        assert owner is not None
        pipe.srem(key(store, app, owner), token)
    pipe.execute()


def sessions_of(store: RedisStore, app: str, owner: str) -> list[StoredSession]:
    members: Any = store.client.smembers(key(store, app, owner))
    tokens = sorted(m.decode() for m in members)
    found = store.load_many(app, tokens)
    stale = [t for t in tokens if t not in found or found[t].owner != owner]
    if stale:
        store.client.srem(key(store, app, owner), *stale)
    return [s for s in found.values() if s.owner == owner]


def list_sessions(
    store: RedisStore, app: str, after: str | None, limit: int
) -> list[StoredSession]:
    """A page of the app's sessions in token order. The expiry index names every stored session
    of the app; it is read whole and sorted here (a sorted set orders by score): a console's
    cost, never a node's."""
    members: Any = store.client.zrange(store.expiry_index_key(app), 0, -1)
    tokens = sorted(t for t in (m.decode() for m in members) if after is None or t > after)
    out: list[StoredSession] = []
    while tokens and len(out) < limit:
        chunk, tokens = tokens[: limit - len(out)], tokens[limit - len(out) :]
        found = store.load_many(app, chunk)
        out += [found[t] for t in chunk if t in found]  # Redis may have expired some
    return out
