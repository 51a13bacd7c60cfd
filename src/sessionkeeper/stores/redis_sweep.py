"""The sweep and the counts of :class:`~sessionkeeper.stores.redis.RedisStore`'s expiry index.

A sweep reads, per app, each bucket's sessions expired before ``before`` (one pipeline over the
64 buckets), and claims them with the SWEEP script (:mod:`.redis_lua`), one call per session in
its own slot: only the caller whose ``ZREM`` removed an index entry gets the session back, so
several sweepers at once report each expired session once. Tombstones past ``before`` are
purged first. Counts are two ``ZCOUNT``s per bucket: expired and live.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import redis_lua as lua
from .base import AppCounts, ExpiredSession
from .redis_connect import Call

if TYPE_CHECKING:
    from .redis import RedisStore


def delete_expired(store: RedisStore, before: float, limit: int) -> list[ExpiredSession]:
    out: list[ExpiredSession] = []
    bound = f"({before!r}"
    for app in store._apps():
        _purge_tombstones(store, app, bound)
        while len(out) < limit:
            # Candidates only: another sweeper may claim some first; the loop then goes on,
            # and it ends because every claimed or re-scored entry leaves the range.
            tokens = _candidates(store, app, bound, limit - len(out))
            if not tokens:
                break
            out += _claim(store, app, tokens, before)
        if len(out) >= limit:
            break
    return out


def _candidates(store: RedisStore, app: str, bound: str, n: int) -> list[str]:
    def first_expired(pipe: Any, keys: list[str]) -> None:
        pipe.zrangebyscore(keys[0], "-inf", bound, 0, n)

    found = store._each_bucket(app, first_expired)
    return [t.decode() for bucket in found for t in bucket][:n]


def _claim(store: RedisStore, app: str, tokens: list[str], before: float) -> list[ExpiredSession]:
    calls: list[Call] = [
        (
            [*store._index_keys(app, tok)[:2], *store._session_keys(app, tok)],
            [repr(before), tok],
        )
        for tok in tokens
    ]
    claimed: list[ExpiredSession] = []
    for tok, side in zip(tokens, store._eval_many(store._sweep_s, calls), strict=True):
        if side is not None and (gone := lua.expired(app, tok, side)):
            claimed.append(gone)
    return claimed


def _purge_tombstones(store: RedisStore, app: str, bound: str) -> None:
    found = store._each_bucket(
        app, lambda p, k: p.zrangebyscore(k[2], "-inf", bound, start=0, num=1000)
    )
    if not any(found):
        return
    pipe = store.client.pipeline(transaction=False)
    for b, old in enumerate(found):
        if old:  # one bucket's keys share a slot: one DEL and one ZREM each
            pipe.delete(*(store._session_keys(app, t.decode())[2] for t in old))
            pipe.zrem(store._bucket_keys(app, b)[2], *old)
    pipe.execute()


def counts(store: RedisStore, now: float) -> dict[str, AppCounts]:
    out: dict[str, AppCounts] = {}
    for app in store._apps():
        replies = store._each_bucket(
            app,
            lambda p, k: (
                p.zcount(k[0], "-inf", f"({now!r}"),
                p.zcount(k[0], repr(now), "+inf"),
            ),
        )
        expired, live = sum(map(int, replies[::2])), sum(map(int, replies[1::2]))
        if expired or live:
            out[app] = AppCounts(live=live, expired=expired)
    return out
