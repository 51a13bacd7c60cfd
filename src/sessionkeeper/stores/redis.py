"""``RedisStore``: sessions in Redis: one server, a Sentinel-managed master, or Redis Cluster.

Layout (see :mod:`.redis_keys`, :mod:`.redis_lua` and ``docs/stores-redis.md``): per session, an
attributes hash, a metadata hash and, once invalidated, a tombstone key. Every key of a session carries a Redis TTL
of its timeout (or the time left to its absolute deadline, if shorter) plus ``grace_s``, refreshed
on each write and touch; it is a backstop, the sweep is the normal way out.

Expiry index: per app, :data:`INDEX_BUCKETS` buckets, each a sorted set of ``expires_at`` plus a
sidecar hash holding what an :class:`ExpiredSession` needs (so a session Redis has already dropped
is still reported once). A session's bucket is chosen by a hash of its token, and the hash tag of
its keys is its bucket's, ``{app:bucket}``: a session and its index entry share one slot, so every
save, touch, delete and sweep step is one script in one slot, one call also on a cluster, and one
app's index is spread over many slots (no hot key). A sweep claims an index entry with ``ZREM``
inside a script; only the caller whose ``ZREM`` removed it gets the session back
(:mod:`.redis_sweep`).

Replicas: an invalidation is followed by ``WAIT`` on the same connection, so a failover cannot
promote a replica that never saw the tombstone; ``wait_replicas`` does the same for every write.

Thread safety: redis-py clients are thread safe (a connection pool); the store's own state is a
set of the apps it has registered and a counter, each changed under the GIL in one step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, NoReturn

import redis
import redis.exceptions as rex
from redis.cluster import RedisCluster

from ..errors import ConfigurationError, CorruptSessionData, StoreError
from . import redis_keys as layout
from . import redis_lua as lua
from . import redis_migrate
from . import redis_owners as owners
from . import redis_sweep as sweep
from .base import (
    AppCounts,
    ExpiredSession,
    Invalidation,
    RetryPolicy,
    SaveRequest,
    SaveResult,
    Store,
    StoredSession,
    Touch,
)
from .fence import MARGIN_SHARE, ServerClock
from .redis_connect import Call, Client, ScriptRunner, Topology, connect, topology_of

#: About how many entries the invalidation feed keeps (``XADD MAXLEN ~``): nodes read it every
#: poll, so only a node that stopped reading for that many logouts misses any, and a node that
#: stopped reading verifies its cached copies against the store meanwhile (docs/security.md).
FEED_MAXLEN = 100_000
INDEX_BUCKETS = layout.INDEX_BUCKETS
bucket_of = layout.bucket_of


def _client_of(url_or_client: str | Client, timeout_s: float) -> tuple[Client, Topology, str]:
    """(client, topology, where) for a URL or a client of ours to use."""
    if isinstance(url_or_client, str):
        conn = connect(url_or_client, timeout_s)
        client, topology, where = conn.client, conn.topology, conn.where
    elif isinstance(url_or_client, redis.Redis | RedisCluster):
        client, topology, where = url_or_client, topology_of(url_or_client), ""
    else:
        raise ConfigurationError(
            f"RedisStore needs a URL or a redis client, got {type(url_or_client).__name__}"
        )
    if client.get_encoder().decode_responses:
        raise ConfigurationError("the redis client must use decode_responses=False")
    return client, topology, where


class RedisStore(Store):
    """Sessions in Redis.

    ``url_or_client``: a ``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://`` or
    ``redis+cluster://`` URL (see :mod:`.redis_connect`), or a ``redis.Redis`` (also one from
    ``Sentinel.master_for``) / ``redis.cluster.RedisCluster`` client made with
    ``decode_responses=False``; a client you pass is not closed by :meth:`close`.

    ``timeout_s`` is the connect and the read timeout of a client built from a URL: a server that
    stops answering makes each attempt fail within it (a client you pass keeps its own).

    ``wait_replicas``: every write waits (``WAIT``, up to ``wait_timeout_s``) until that many
    replicas have it, and a write that reached fewer raises :class:`StoreUnavailable` (it is on
    the master, but not durable). ``replicated``: whether invalidations wait for
    ``max(1, wait_replicas)`` replicas; by default yes on Sentinel, on a cluster whose slot map
    lists replicas, and whenever ``wait_replicas`` is set. An invalidation that reached no replica
    is still done; it is counted (:attr:`replica_wait_misses`) and logged."""

    kind = "redis"
    transient_errors: ClassVar[tuple[type[BaseException], ...]] = (
        rex.ConnectionError,  # includes BusyLoadingError (server still loading its data set)
        rex.TimeoutError,
        rex.TryAgainError,
        rex.ClusterDownError,
        rex.ReadOnlyError,  # a replica promoted or demoted under us: retry reaches the primary
        rex.MovedError,  # a slot moved (failover): the slot map is read again before the retry
    )

    def __init__(
        self,
        url_or_client: str | Client,
        *,
        key_prefix: str = "sk:",
        grace_s: float = 3600.0,
        timeout_s: float = 3.0,
        wait_replicas: int = 0,
        wait_timeout_s: float = 1.0,
        replicated: bool | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(retry=retry, sleep=sleep)
        if "{" in key_prefix or "}" in key_prefix:
            raise ConfigurationError("key_prefix must not contain braces (they form hash tags)")
        if grace_s < 0:
            raise ConfigurationError("grace_s must not be negative")
        if wait_replicas < 0 or wait_timeout_s <= 0:
            raise ConfigurationError("wait_replicas must be >= 0 and wait_timeout_s positive")
        self.key_prefix = key_prefix
        self.timeout_s = timeout_s
        #: Added to every Redis TTL and to every tombstone's life. Raised to each manager's sweep
        #: grace (:meth:`set_grace_s`), so a Redis TTL never ends a session the sweep would keep.
        self.grace_s = grace_s
        self._owns_client = isinstance(url_or_client, str)
        self.client, self.topology, self._where = _client_of(url_or_client, timeout_s)
        self.wait_replicas = wait_replicas
        if replicated is None:
            replicated = wait_replicas > 0 or self.topology is Topology.SENTINEL
            if isinstance(self.client, RedisCluster):
                replicated = replicated or bool(self.client.get_replicas())  # type: ignore[no-untyped-call]
        #: Replicas an invalidation waits for (0: none).
        self.tombstone_replicas = max(1, wait_replicas) if replicated else 0
        #: The server's clock, for the writes' deadline fences (:mod:`.fence`). On a cluster
        #: it is read on one node: the masters' clocks must agree within the margin (NTP), or
        #: the writes of one whose clock is ahead are refused until it comes back.
        self.server_clock = ServerClock(timeout_s * MARGIN_SHARE)
        self._runner = ScriptRunner(self.client, wait_timeout_s, self._raise)
        encoder = self.client.get_encoder()
        #: How the client turns str into bytes; the write path encodes so itself (``save_call``).
        self._codec: tuple[str, str] = (encoder.encoding, encoder.encoding_errors)
        #: Apps this process has added to the apps set (a cache: re-added by every sweep).
        self._apps_known: set[str] = set()
        register = self.client.register_script
        self._load_s, self._save_s, self._touch_s = (
            register(lua.LOAD),
            register(lua.SAVE),
            register(lua.TOUCH),
        )
        self._delete_s, self._sweep_s = register(lua.DELETE), register(lua.SWEEP)

    def set_grace_s(self, grace_s: float) -> None:
        # Only ever raised: a longer TTL keeps a dead key a little longer, a shorter one would
        # end a live session; several managers may share this store.
        self.grace_s = max(self.grace_s, grace_s)

    # -- keys ---------------------------------------------------------------------------------

    def _session_keys(self, app: str, token: str) -> list[str]:
        return layout.session_keys(self.key_prefix, app, token)

    def _bucket_keys(self, app: str, bucket: int) -> list[str]:
        """``e``, ``d``, ``t`` of one bucket of an app's expiry index."""
        return layout.bucket_keys(self.key_prefix, app, bucket)

    def _index_keys(self, app: str, token: str) -> list[str]:
        """The index keys of the bucket holding ``token``: in the session's slot."""
        return self._bucket_keys(app, bucket_of(token))

    def owner_key(self, app: str, owner: str, bucket: int) -> str:
        """The set of ``owner``'s tokens in one bucket of ``app`` (:mod:`.redis_owners`); the
        scripts name it the same way (``own_key`` in :mod:`.redis_lua`)."""
        return layout.owner_set(self._bucket_keys(app, bucket)[0], owner)

    @property
    def _apps_key(self) -> str:
        return f"{self.key_prefix}apps"

    @property
    def _feed_key(self) -> str:
        """The invalidation feed: a stream of ``a`` (app), ``t`` (token) entries. Its ids are the
        cursor (the server's sequence; never a node's clock)."""
        return f"{self.key_prefix}feed"

    # -- running scripts ----------------------------------------------------------------------

    def _eval_many(
        self, script: Any, calls: Sequence[Call], *, wait: int = 0, durable: bool = False
    ) -> list[Any]:
        """Run ``script`` once per call: one round trip (see :meth:`ScriptRunner.eval_many`)."""
        return self._runner.eval_many(script, calls, wait=wait, durable=durable)

    @property
    def replica_wait_misses(self) -> int:
        """WAITs that reached fewer replicas than asked."""
        return self._runner.wait_misses

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

    # -- the hooks ----------------------------------------------------------------------------

    def _load(self, app: str, token: str) -> StoredSession | None:
        codec, errors = self._codec
        keys = [k.encode(codec, errors) for k in self._session_keys(app, token)]
        [reply] = self._eval_many(self._load_s, [(keys, [])])
        return None if reply is None else lua.snapshot(app, token, reply)

    def _server_time(self) -> float:
        reply: Any = self.client.time()
        if isinstance(reply, dict):  # a cluster asked one node: {node: reply}
            [reply] = reply.values()
        seconds, micros = reply
        return float(seconds) + float(micros) / 1e6

    def _fenced(self) -> None:
        self.server_clock.forget()

    def _save_batch(self, requests: Sequence[SaveRequest]) -> list[SaveResult]:
        self._register_apps({r.app for r in requests})
        fence = self.server_clock.fence(self._server_time)
        prefix, grace_s, codec = self.key_prefix, self.grace_s, self._codec
        calls = [
            lua.save_call(
                layout.write_keys(prefix, r.app, r.token, codec), r, fence, grace_s, codec
            )
            for r in requests
        ]
        replies = self._eval_many(self._save_s, calls, wait=self.wait_replicas, durable=True)
        return [lua.save_result(r, reply) for r, reply in zip(requests, replies, strict=True)]

    def _register_apps(self, apps: set[str]) -> None:
        """Add apps to the apps set (its own slot) once per process, so that a write of a known
        app is one script call. A sweep adds them again, should a failover have lost the set."""
        new = apps - self._apps_known
        if new:
            self.client.sadd(self._apps_key, *sorted(new))
            self._apps_known |= new

    def _touch_batch(self, touches: Sequence[Touch]) -> None:
        self._register_apps({t.app for t in touches})
        grace_ms = str(int(self.grace_s * 1000))
        calls: list[Call] = [
            (
                layout.write_keys(self.key_prefix, t.app, t.token, self._codec),
                [repr(t.last_access_at), grace_ms, t.token],
            )
            for t in touches
        ]
        self._eval_many(self._touch_s, calls)

    def _delete(self, app: str, token: str, tombstone_until: float) -> bool:
        self._register_apps({app})
        keys = [*self._session_keys(app, token), *self._index_keys(app, token)]
        args: list[str | bytes] = [repr(tombstone_until), str(int(self.grace_s * 1000)), token]
        [live] = self._eval_many(self._delete_s, [(keys, args)], wait=self.tombstone_replicas)
        # After the tombstone (one slot), in the feed's own key: a node reading the entry finds
        # the tombstone there too. Invalidations are rare: one more round trip each.
        self.client.xadd(self._feed_key, {"a": app, "t": token}, maxlen=FEED_MAXLEN)
        return bool(live)

    def _invalidations_since(
        self, cursor: str | None, limit: int
    ) -> tuple[list[Invalidation], str]:
        if cursor is None:
            last: Any = self.client.xrevrange(self._feed_key, count=1)
            return [], last[0][0].decode() if last else "0-0"
        reply: Any = self.client.xread({self._feed_key: cursor}, count=limit)
        rows = reply[0][1] if reply else []
        entries = [Invalidation(f[b"a"].decode(), f[b"t"].decode()) for _, f in rows]
        return entries, rows[-1][0].decode() if rows else cursor

    def _apps(self) -> list[str]:
        members: Any = self.client.smembers(self._apps_key)
        found = {m.decode() for m in members}
        if self._apps_known - found:
            self.client.sadd(self._apps_key, *sorted(self._apps_known - found))
        return sorted(found | self._apps_known)

    def migrate_layout(self) -> redis_migrate.Moved:
        """Move sessions stored in the previous key layout to this one (:mod:`.redis_migrate`;
        ``sessionkeeper init-db``): idempotent, safe while nodes run."""
        return redis_migrate.migrate(self)

    def _each_bucket(self, app: str, command: Callable[[Any, list[str]], object]) -> list[Any]:
        """``command(pipe, bucket keys)`` for every bucket of ``app``, in one pipeline; the
        replies in bucket order."""
        pipe = self.client.pipeline(transaction=False)
        for b in range(INDEX_BUCKETS):
            command(pipe, self._bucket_keys(app, b))
        return list(pipe.execute())

    def _delete_expired(self, before: float, limit: int) -> list[ExpiredSession]:
        return sweep.delete_expired(self, before, limit)

    def _counts(self, now: float) -> dict[str, AppCounts]:
        return sweep.counts(self, now)

    def load_many(self, app: str, tokens: Sequence[str]) -> dict[str, StoredSession]:
        """The stored sessions among ``tokens``, each loaded in its own slot, one pipeline."""
        calls: list[Call] = [(self._session_keys(app, t), []) for t in tokens]
        replies = self._eval_many(self._load_s, calls)
        return owners.found(app, tokens, replies)

    def _sessions_of(self, app: str, owner: str) -> list[StoredSession]:
        return owners.sessions_of(self, app, owner)

    def _list_sessions(self, app: str, after: str | None, limit: int) -> list[StoredSession]:
        return owners.list_sessions(self, app, after, limit)

    def _close(self) -> None:
        self._runner.release()
        if self._owns_client:
            self.client.close()

    def describe(self) -> str:
        """Where the data is (``redis://[user@]host:port/db``, the sentinels and service, or the
        cluster's startup nodes), never the password."""
        if self._where:
            return f"redis {self._where} prefix={self.key_prefix}"
        if isinstance(self.client, RedisCluster):
            return f"redis cluster prefix={self.key_prefix}"
        kw: Mapping[str, Any] = self.client.get_connection_kwargs()
        where = kw.get("path") or f"{kw.get('host')}:{kw.get('port')}/{kw.get('db', 0)}"
        return f"redis {where} prefix={self.key_prefix}"
