"""``RedisStore``: sessions in Redis (a single server, or Redis Cluster through a client you pass).

Layout (see :mod:`.redis_lua` and ``docs/stores-redis.md``): per session, an attributes hash, a
metadata hash and, once invalidated, a tombstone key, all under the hash tag ``{app:token}`` so one
session lives in one cluster slot. Every key of a session carries a Redis TTL of its timeout plus
``grace_s``, refreshed on each write and touch; it is a backstop, the sweep is the normal way out.

Expiry index: per app, a sorted set of ``expires_at`` plus a sidecar hash holding what an
:class:`ExpiredSession` needs, so a session Redis has already dropped is still reported once. A
sweep claims an index entry with ``ZREM`` inside a script; only the caller whose ``ZREM`` removed
it gets the session back, however many nodes sweep at once.

On one server each operation is one script touching the session and its index atomically. On a
cluster the index lives in another slot, so the store runs the session script, then the index
script (one more round trip); the sweep then claims in the index and deletes in the session's slot,
re-indexing a session that turned out alive. See the docs for what that costs.

Owner index (logout everywhere): per app and owner, a set of tokens under the hash tag
``{app:owner}``, kept by the save script on one server; see :mod:`.redis_owners`.

Thread safety: redis-py clients are thread safe (a connection pool); the store keeps no other state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, NoReturn, TypeAlias
from urllib.parse import quote, urlsplit

import redis
import redis.exceptions as rex
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from ..errors import ConfigurationError, CorruptSessionData, StoreError
from . import redis_lua as lua
from . import redis_owners as owners
from .base import (
    AppCounts,
    ExpiredSession,
    RetryPolicy,
    SaveRequest,
    SaveResult,
    SaveStatus,
    Store,
    StoredSession,
    Touch,
)

log = logging.getLogger("sessionkeeper.store.redis")

Client: TypeAlias = "redis.Redis | RedisCluster"
#: (keys, args) of one script call.
Call: TypeAlias = tuple[list[str], list[str | bytes]]


def _esc(part: str) -> str:
    """``app`` and ``token`` inside a key: no ``:`` (separator) and no braces (hash tag)."""
    return quote(part, safe="")


def _flag(value: str | None) -> str:
    return "-" if value is None else "=" + value


def _unflag(raw: str) -> str | None:
    return None if raw.startswith("-") else raw[1:]


class RedisStore(Store):
    """Sessions in Redis.

    ``url_or_client``: a ``redis://``, ``rediss://`` or ``unix://`` URL (user and password in the
    URL), or a ``redis.Redis`` / ``redis.cluster.RedisCluster`` client made with
    ``decode_responses=False``; a client you pass is not closed by :meth:`close`.

    ``timeout_s`` is the connect and the read timeout of a client built from a URL: a server that
    stops answering makes each attempt fail within it (a client you pass keeps its own)."""

    kind = "redis"
    transient_errors: ClassVar[tuple[type[BaseException], ...]] = (
        rex.ConnectionError,  # includes BusyLoadingError (server still loading its data set)
        rex.TimeoutError,
        rex.TryAgainError,
        rex.ClusterDownError,
        rex.ReadOnlyError,  # a replica promoted or demoted under us: retry reaches the primary
    )

    def __init__(
        self,
        url_or_client: str | Client,
        *,
        key_prefix: str = "sk:",
        grace_s: float = 3600.0,
        timeout_s: float = 3.0,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(retry=retry, sleep=sleep)
        if "{" in key_prefix or "}" in key_prefix:
            raise ConfigurationError("key_prefix must not contain braces (they form hash tags)")
        if grace_s < 0:
            raise ConfigurationError("grace_s must not be negative")
        self.key_prefix = key_prefix
        #: Added to every Redis TTL and to every tombstone's life. Raised to each manager's sweep
        #: grace (:meth:`set_grace_s`), so a Redis TTL never ends a session the sweep would keep.
        self.grace_s = grace_s
        self._owns_client = isinstance(url_or_client, str)
        if isinstance(url_or_client, str):
            self._url = url_or_client
            # The base retries; the driver retrying too would multiply the wait in an outage. A
            # command that times out disconnects its connection (redis-py), so no half-read
            # reply is left on a pooled one.
            self.client: Client = redis.Redis.from_url(
                url_or_client,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                retry=Retry(NoBackoff(), 0),
            )
        elif isinstance(url_or_client, redis.Redis | RedisCluster):
            self.client = url_or_client
            self._url = ""
        else:
            raise ConfigurationError(
                f"RedisStore needs a URL or a redis client, got {type(url_or_client).__name__}"
            )
        if self.client.get_encoder().decode_responses:
            raise ConfigurationError("the redis client must use decode_responses=False")
        #: Update the expiry index in separate calls: needed on a cluster, where the index lives in
        #: another slot than the session; on one server everything is one atomic script.
        self.split_index = isinstance(self.client, RedisCluster)
        register = self.client.register_script
        self._load_s, self._save_s, self._touch_s = (
            register(lua.LOAD),
            register(lua.SAVE),
            register(lua.TOUCH),
        )
        self._delete_s, self._index_s, self._sweep_s = (
            register(lua.DELETE),
            register(lua.INDEX),
            register(lua.SWEEP),
        )
        self._owner_s = register(lua.OWNER)

    def set_grace_s(self, grace_s: float) -> None:
        # Only ever raised: a longer TTL keeps a dead key a little longer, a shorter one would
        # end a live session; several managers may share this store.
        self.grace_s = max(self.grace_s, grace_s)

    # -- keys ---------------------------------------------------------------------------------

    def _session_keys(self, app: str, token: str) -> list[str]:
        base = f"{self.key_prefix}{{{_esc(app)}:{_esc(token)}}}"
        return [base + ":a", base + ":m", base + ":x"]

    def _index_keys(self, app: str) -> list[str]:
        base = f"{self.key_prefix}idx:{{{_esc(app)}}}"
        return [base + ":e", base + ":d", base + ":t"]

    def owner_key(self, app: str, owner: str) -> str:
        """The set of ``owner``'s tokens in ``app`` (:mod:`.redis_owners`)."""
        return f"{self.key_prefix}own:{{{_esc(app)}:{_esc(owner)}}}"

    def expiry_index_key(self, app: str) -> str:
        return self._index_keys(app)[0]

    @property
    def _apps_key(self) -> str:
        return f"{self.key_prefix}apps"

    def _ttl_ms(self, timeout_s: float) -> str:
        return str(max(1, int((timeout_s + self.grace_s) * 1000)))

    # -- running scripts ----------------------------------------------------------------------

    def _eval_many(self, script: Any, calls: Sequence[Call]) -> list[Any]:
        """Run ``script`` once per call in one non-transactional pipeline: one round trip.

        EVALSHA only; if the server lost its script cache (restart, failover, SCRIPT FLUSH) the
        calls that failed with NOSCRIPT did nothing, so they are run again after loading it."""
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for attempt in range(2):
            pipe = self.client.pipeline(transaction=False)
            for i in todo:
                keys, args = calls[i]
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            replies = pipe.execute(raise_on_error=False)
            missing = []
            for i, reply in zip(todo, replies, strict=True):
                if isinstance(reply, rex.NoScriptError) and attempt == 0:
                    missing.append(i)
                elif isinstance(reply, Exception):
                    self._raise(reply)
                else:
                    results[i] = reply
            if not missing:
                break
            script.sha = self.client.script_load(script.script)
            todo = missing
        return results

    def _eval(self, script: Any, keys: list[str], args: list[str | bytes]) -> Any:
        try:
            return script(keys=keys, args=args)
        except rex.ResponseError as exc:
            self._raise(exc)

    def _raise(self, exc: Exception) -> NoReturn:
        """A script's error reply as a typed error; transient ones as they are, for the retries."""
        text = str(exc)
        if "SKCORRUPT" in text or "WRONGTYPE" in text:
            raise CorruptSessionData(f"redis: unreadable session data: {text}") from exc
        if isinstance(exc, self.transient_errors):
            raise exc
        raise StoreError(f"redis: {text}") from exc

    # -- decoding -----------------------------------------------------------------------------

    def _snapshot(
        self, app: str, token: str, meta_pairs: list[bytes], attr_pairs: list[bytes]
    ) -> StoredSession:
        meta = dict(zip(meta_pairs[::2], meta_pairs[1::2], strict=True))
        try:
            attributes = {
                attr_pairs[i].decode(): attr_pairs[i + 1] for i in range(0, len(attr_pairs), 2)
            }
            owner, node = meta.get(b"o"), meta.get(b"n")
            return StoredSession(
                app=app,
                token=token,
                attributes=attributes,
                version=int(meta[b"v"]),
                created_at=float(meta[b"c"]),
                last_access_at=float(meta[b"l"]),
                timeout_s=float(meta[b"t"]),
                owner=owner.decode() if owner is not None else None,
                node=node.decode() if node is not None else None,
            )
        except (KeyError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
            raise CorruptSessionData(
                f"redis: session {app}/{token[:8]}... has unreadable metadata: {exc!r}"
            ) from exc

    def _expired(self, app: str, token: str, side: bytes | str) -> ExpiredSession | None:
        raw = side.decode() if isinstance(side, bytes) else side
        try:
            la, timeout, owner = raw.split("|", 2)
            return ExpiredSession(app, token, float(la), float(timeout), _unflag(owner))
        except ValueError:
            log.warning(
                "redis: expired session %s/%s... had no readable index entry; "
                "deleted without an event",
                app,
                token[:8],
            )
            return None

    # -- the hooks ----------------------------------------------------------------------------

    def _load(self, app: str, token: str) -> StoredSession | None:
        reply = self._eval(self._load_s, self._session_keys(app, token), [])
        if reply is None:
            return None
        return self._snapshot(app, token, reply[0], reply[1])

    def _save_call(self, r: SaveRequest) -> Call:
        keys = self._session_keys(r.app, r.token)
        if not self.split_index:
            keys += [*self._index_keys(r.app)[:2], self._apps_key]
            if r.owner is not None:
                keys.append(self.owner_key(r.app, r.owner))
        args: list[str | bytes] = [
            str(r.expected_version),
            repr(r.created_at),
            repr(r.last_access_at),
            repr(r.timeout_s),
            _flag(r.owner),
            _flag(r.node),
            "1" if r.full else "0",
            str(len(r.changed)),
            self._ttl_ms(r.timeout_s),
            r.token,
            r.app,
        ]
        for name, value in r.changed.items():
            args += [name, value]
        args += sorted(r.removed)
        return keys, args

    def _save_batch(self, requests: Sequence[SaveRequest]) -> list[SaveResult]:
        replies = self._eval_many(self._save_s, [self._save_call(r) for r in requests])
        out: list[SaveResult] = []
        index: list[tuple[str, str, bytes, bytes]] = []
        saved: list[tuple[SaveRequest, str | None]] = []
        for r, reply in zip(requests, replies, strict=True):
            status = reply[0]
            if status == b"S":
                out.append(SaveResult(SaveStatus.SAVED, int(reply[1])))
                index.append((r.app, r.token, reply[2], reply[3]))
                saved.append((r, _unflag(reply[4].decode())))
            elif status == b"C":
                current = self._snapshot(r.app, r.token, reply[2], reply[3])
                out.append(SaveResult(SaveStatus.CONFLICT, int(reply[1]), current))
            else:
                out.append(SaveResult(SaveStatus.GONE))
        if self.split_index and index:
            self._index_put(index, add_apps=True)
        owners.put(self, saved)
        return out

    def _index_put(
        self, entries: Sequence[tuple[str, str, bytes, bytes]], *, add_apps: bool = False
    ) -> None:
        """Cluster only: record (app, token, expires, side) in each app's index."""
        self._eval_many(
            self._index_s,
            [
                (self._index_keys(app)[:2], ["put", token, expires, side])
                for app, token, expires, side in entries
            ],
        )
        if add_apps:
            self.client.sadd(self._apps_key, *{app for app, *_ in entries})

    def _touch_batch(self, touches: Sequence[Touch]) -> None:
        grace_ms = str(int(self.grace_s * 1000))
        calls: list[Call] = []
        for t in touches:
            keys = self._session_keys(t.app, t.token)
            if not self.split_index:
                keys += self._index_keys(t.app)[:2]
            calls.append((keys, [repr(t.last_access_at), grace_ms, t.token]))
        replies = self._eval_many(self._touch_s, calls)
        if self.split_index:
            self._index_put(
                [
                    (t.app, t.token, reply[0], reply[1])
                    for t, reply in zip(touches, replies, strict=True)
                    if reply
                ]
            )

    def _delete(self, app: str, token: str, tombstone_until: float) -> bool:
        keys = self._session_keys(app, token)
        index = self._index_keys(app)
        args: list[str | bytes] = [repr(tombstone_until), str(int(self.grace_s * 1000)), token, app]
        if not self.split_index:
            live, owner = self._eval(self._delete_s, [*keys, *index, self._apps_key], args)
        else:
            live, owner = self._eval(self._delete_s, keys, args)
            self._eval(self._index_s, index, ["tomb", token, repr(tombstone_until)])
            self.client.sadd(self._apps_key, app)
        owners.drop(self, [(app, _unflag(owner.decode()), token)])
        return bool(live)

    def _apps(self) -> list[str]:
        members: Any = self.client.smembers(self._apps_key)
        return sorted(m.decode() for m in members)

    def _delete_expired(self, before: float, limit: int) -> list[ExpiredSession]:
        out: list[ExpiredSession] = []
        bound = f"({before!r}"
        for app in self._apps():
            e, _, t = self._index_keys(app)
            self._purge_tombstones(app, t, bound)
            while len(out) < limit:
                # Candidates only: another sweeper may claim some first; the loop then goes on,
                # and it ends because every claimed or re-scored entry leaves the range.
                found: Any = self.client.zrangebyscore(e, "-inf", bound, 0, limit - len(out))
                if not found:
                    break
                tokens = [f.decode() for f in found]
                out += self._claim(app, tokens, before)
            if len(out) >= limit:
                break
        owners.drop(self, [(e.app, e.owner, e.token) for e in out])
        return out

    def _claim(self, app: str, tokens: list[str], before: float) -> list[ExpiredSession]:
        e, d, _ = self._index_keys(app)
        args = [repr(before)]
        claimed: list[ExpiredSession] = []
        if not self.split_index:
            replies = self._eval_many(
                self._sweep_s,
                [([e, d, *self._session_keys(app, tok)], [*args, tok]) for tok in tokens],
            )
            for tok, side in zip(tokens, replies, strict=True):
                if side is not None and (gone := self._expired(app, tok, side)):
                    claimed.append(gone)
            return claimed
        sides = self._eval_many(self._sweep_s, [([e, d], [*args, tok]) for tok in tokens])
        won = [(tok, side) for tok, side in zip(tokens, sides, strict=True) if side is not None]
        finals = self._eval_many(
            self._sweep_s, [(self._session_keys(app, tok), [*args, tok]) for tok, _ in won]
        )
        alive: list[tuple[str, str, bytes, bytes]] = []
        for (tok, side), final in zip(won, finals, strict=True):
            kind = final[0]
            if kind == b"A":
                alive.append((app, tok, final[1], final[2]))
            elif kind in (b"D", b"E"):
                gone = self._expired(app, tok, final[1] if kind == b"D" else side)
                if gone:
                    claimed.append(gone)
        if alive:
            self._index_put(alive)
        return claimed

    def _purge_tombstones(self, app: str, t_key: str, bound: str) -> None:
        old: Any = self.client.zrangebyscore(t_key, "-inf", bound, start=0, num=1000)
        if not old:
            return
        pipe = self.client.pipeline(transaction=False)
        for tok in old:
            pipe.delete(self._session_keys(app, tok.decode())[2])
        pipe.zrem(t_key, *old)
        pipe.execute()

    def _counts(self, now: float) -> dict[str, AppCounts]:
        apps = self._apps()
        pipe = self.client.pipeline(transaction=False)
        for app in apps:
            e = self._index_keys(app)[0]
            pipe.zcount(e, "-inf", f"({now!r}")
            pipe.zcount(e, repr(now), "+inf")
        replies = pipe.execute()
        out: dict[str, AppCounts] = {}
        for i, app in enumerate(apps):
            expired, live = int(replies[2 * i]), int(replies[2 * i + 1])
            if expired or live:
                out[app] = AppCounts(live=live, expired=expired)
        return out

    def load_many(self, app: str, tokens: Sequence[str]) -> dict[str, StoredSession]:
        """The stored sessions among ``tokens``, each loaded in its own slot, one pipeline."""
        calls: list[Call] = [(self._session_keys(app, t), []) for t in tokens]
        found: dict[str, StoredSession] = {}
        for token, reply in zip(tokens, self._eval_many(self._load_s, calls), strict=True):
            if reply is not None:
                found[token] = self._snapshot(app, token, reply[0], reply[1])
        return found

    def eval_owner_script(self, calls: Sequence[Call]) -> None:
        self._eval_many(self._owner_s, calls)

    def _sessions_of(self, app: str, owner: str) -> list[StoredSession]:
        return owners.sessions_of(self, app, owner)

    def _list_sessions(self, app: str, after: str | None, limit: int) -> list[StoredSession]:
        return owners.list_sessions(self, app, after, limit)

    def _close(self) -> None:
        if self._owns_client:
            self.client.close()

    def describe(self) -> str:
        """``redis://[user@]host:port/db`` (or the socket path), never the password."""
        if self._url:
            u = urlsplit(self._url)
            user = f"{u.username}@" if u.username else ""
            where = f"{u.scheme}://{user}{u.hostname or ''}{':' + str(u.port) if u.port else ''}"
            return f"redis {where}{u.path} prefix={self.key_prefix}"
        if isinstance(self.client, RedisCluster):
            return f"redis cluster prefix={self.key_prefix}"
        kw: Mapping[str, Any] = self.client.get_connection_kwargs()
        where = kw.get("path") or f"{kw.get('host')}:{kw.get('port')}/{kw.get('db', 0)}"
        return f"redis {where} prefix={self.key_prefix}"
