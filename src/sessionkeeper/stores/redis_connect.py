"""Redis URLs turned into redis-py clients: one server, Sentinel, or Cluster.

| URL | client |
|---|---|
| ``redis://[user:password@]host:port/db``, ``rediss://``, ``unix:///path?db=0`` | ``redis.Redis`` |
| ``redis+sentinel://[:password@]host:port[,host:port...]/service[/db]`` | the master of ``service``, as ``Sentinel(...).master_for(service)`` gives it |
| ``redis+cluster://[:password@]host:port[,host:port...]`` | ``redis.cluster.RedisCluster`` |

The password is the data servers' (master, replicas, cluster nodes); sentinels get only the
timeouts. Every client has the store's socket connect and read timeout, and no retries of
its own beyond what failover needs: the store base retries, and two layers retrying would multiply
the wait in an outage.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeAlias
from urllib.parse import unquote, urlsplit

import redis
import redis.exceptions as rex
from redis._parsers.encoders import Encoder
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import ConnectionPool, PythonRespSerializer
from redis.retry import Retry
from redis.sentinel import Sentinel

from ..errors import ConfigurationError, StoreUnavailable
from .redis_held import HeldConnections

log = logging.getLogger("sessionkeeper.store.redis")

Client: TypeAlias = "redis.Redis | RedisCluster"
#: (keys, args) of one script call; str is sent in the client's encoding, bytes as they are.
Call: TypeAlias = tuple[Sequence[str | bytes], Sequence[str | bytes]]


class Topology(enum.Enum):
    SINGLE = "single"  # one server (it may have replicas the store does not know of)
    SENTINEL = "sentinel"  # a master found through sentinels, with replicas
    CLUSTER = "cluster"


@dataclass(frozen=True)
class Connection:
    client: Client
    topology: Topology
    #: Where the data is, without credentials (for ``describe()``).
    where: str


def _hosts(netloc: str, url: str) -> tuple[str | None, list[tuple[str, int]]]:
    """``[:password@]host:port,host:port`` as (password, [(host, port)...])."""
    password = None
    if "@" in netloc:
        auth, netloc = netloc.rsplit("@", 1)
        password = unquote(auth.split(":", 1)[1]) if ":" in auth else unquote(auth)
    hosts = []
    for part in netloc.split(","):
        host, _, port = part.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigurationError(f"redis URL {url!r}: each host needs host:port, got {part!r}")
        hosts.append((host.strip("[]"), int(port)))
    return password or None, hosts


class BytesPacker:
    """A redis-py command packer (the ``command_packer`` of a connection) that packs a command
    whose arguments are all bytes (its name may be a one-word str) in one join, and any other
    as redis-py's own packer does. The store's scripts get bytes only (``save_call``): redis-py's
    packer spends some 1.5 µs of Python per argument on type tests and buffer joins, a write's
    20 µs. Stateless: one is shared by every connection of a pool, in every thread."""

    def __init__(self, fallback: Any) -> None:
        self._fallback = fallback

    def pack(self, *args: Any) -> list[bytes]:
        name = args[0]
        if type(name) is str and " " not in name:
            name = name.encode()
        elif type(name) is not bytes or b" " in name:
            return list(self._fallback.pack(*args))
        parts = [b"*%d\r\n$%d\r\n" % (len(args), len(name)), name, b"\r\n"]
        for arg in args[1:]:
            if type(arg) is not bytes:
                return list(self._fallback.pack(*args))
            parts += (b"$%d\r\n" % len(arg), arg, b"\r\n")
        return [b"".join(parts)]


def _pack_bytes_quickly(pool: ConnectionPool) -> None:
    """Give the connections ``pool`` will make a :class:`BytesPacker`, its fallback the packer
    redis-py would have built (without hiredis) from the pool's encoding. Before the pool's first
    connection: a connection takes its packer when it is made."""
    kw = pool.connection_kwargs
    if "command_packer" in kw:
        return
    from redis.utils import HIREDIS_AVAILABLE

    if HIREDIS_AVAILABLE:  # hiredis packs in C already
        return
    encoding, errors = kw.get("encoding", "utf-8"), kw.get("encoding_errors", "strict")
    encoder = Encoder(encoding, errors, False)  # type: ignore[no-untyped-call]
    kw["command_packer"] = BytesPacker(PythonRespSerializer(6000, encoder.encode))


def _sentinel(url: str, timeout_s: float) -> Connection:
    rest = url.split("://", 1)[1]
    netloc, _, path = rest.partition("/")
    password, hosts = _hosts(netloc, url)
    parts = [p for p in path.split("?")[0].split("/") if p]
    if not parts or len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise ConfigurationError(f"redis+sentinel URL {url!r} must end in /service_name[/db]")
    service, db = parts[0], int(parts[1]) if len(parts) == 2 else 0
    timeouts = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
    # Any: redis-py types Sentinel from 8.2 on and not before; this reads the same under both.
    make_sentinel: Any = Sentinel
    sentinel = make_sentinel(hosts, sentinel_kwargs=dict(timeouts))
    client = sentinel.master_for(
        service, db=db, password=password, retry=Retry(NoBackoff(), 0), **timeouts
    )
    _pack_bytes_quickly(client.connection_pool)
    where = f"redis+sentinel://{','.join(f'{h}:{p}' for h, p in hosts)}/{service}/{db}"
    return Connection(client, Topology.SENTINEL, where)


def _cluster(url: str, timeout_s: float) -> Connection:
    netloc = url.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0]
    password, hosts = _hosts(netloc, url)
    client = RedisCluster(
        startup_nodes=[ClusterNode(h, p) for h, p in hosts],  # type: ignore[no-untyped-call]
        password=password,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        # A failover needs a few tries within one command to find the new primary; the store
        # base adds its own retries around that.
        retry=Retry(NoBackoff(), 1),
    )
    return Connection(
        client, Topology.CLUSTER, f"redis+cluster://{','.join(f'{h}:{p}' for h, p in hosts)}"
    )


def _single(url: str, timeout_s: float) -> Connection:
    # A command that times out disconnects its connection (redis-py), so no half-read reply is
    # left on a pooled one.
    client = redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )
    _pack_bytes_quickly(client.connection_pool)
    u = urlsplit(url)
    user = f"{u.username}@" if u.username else ""
    where = f"{u.scheme}://{user}{u.hostname or ''}{':' + str(u.port) if u.port else ''}{u.path}"
    return Connection(client, Topology.SINGLE, where)


def connect(url: str, timeout_s: float) -> Connection:
    """A client for ``url`` (see the module docstring). Connects lazily: nothing is sent yet,
    except for a cluster, whose client reads the slot map from a startup node at once."""
    scheme = url.split("://", 1)[0].lower()
    if scheme == "redis+sentinel":
        return _sentinel(url, timeout_s)
    if scheme == "redis+cluster":
        return _cluster(url, timeout_s)
    return _single(url, timeout_s)


def topology_of(client: Client) -> Topology:
    """What a client passed in talks to: a cluster, a Sentinel-managed master, or one server."""
    if isinstance(client, RedisCluster):
        return Topology.CLUSTER
    from redis.sentinel import SentinelConnectionPool

    if isinstance(client.connection_pool, SentinelConnectionPool):
        return Topology.SENTINEL
    return Topology.SINGLE


class ScriptRunner:
    """Runs a store's scripts in pipelines, with ``WAIT`` for replicas where asked.

    ``raise_`` turns an error reply into the store's typed error. Thread safe: the client is;
    :attr:`wait_misses` is only ever incremented."""

    def __init__(
        self, client: Client, wait_timeout_s: float, raise_: Callable[[Exception], NoReturn]
    ) -> None:
        self.client, self.raise_ = client, raise_
        #: Asked once: ``isinstance`` against redis-py's cluster class costs some 2 µs a call.
        self.cluster = isinstance(client, RedisCluster)
        #: One-command calls on connections kept out of the pool (not on a cluster, whose
        #: client routes each command itself).
        self.held = None if self.cluster else HeldConnections(client)
        self._wait_ms = max(1, int(wait_timeout_s * 1000))
        #: WAITs that reached fewer replicas than asked.
        self.wait_misses = 0

    def eval_many(
        self, script: Any, calls: Sequence[Call], *, wait: int = 0, durable: bool = False
    ) -> list[Any]:
        """Run ``script`` once per call in non-transactional pipelines: one round trip (one per
        node on a cluster when waiting), then ``WAIT wait`` on the same connection if ``wait``.

        EVALSHA only; if the server lost its script cache (restart, failover, SCRIPT FLUSH) the
        calls that failed with NOSCRIPT did nothing, so they are run again after loading it."""
        if len(calls) == 1 and not wait and not self.cluster:
            return [self._eval_one(script, *calls[0])]
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for attempt in range(2):
            missing = []
            for pipe, group in self.pipelines(calls, todo):
                for i in group:
                    keys, args = calls[i]
                    pipe.evalsha(script.sha, len(keys), *keys, *args)
                if wait:
                    pipe.execute_command("WAIT", wait, self._wait_ms)
                replies = self.execute(pipe)
                if wait:
                    self.check_wait(replies.pop(), wait, durable=durable)
                for i, reply in zip(group, replies, strict=True):
                    if isinstance(reply, rex.NoScriptError) and attempt == 0:
                        missing.append(i)
                    elif isinstance(reply, Exception):
                        self.raise_(reply)
                    else:
                        results[i] = reply
            if not missing:
                break
            script.sha = self.client.script_load(script.script)
            todo = missing
        return results

    def _eval_one(self, script: Any, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """One call (a request's write, a load) as a plain EVALSHA: a pipeline's bookkeeping
        cost about 20 µs of client time. The same answers as :meth:`eval_many`'s."""
        for attempt in range(2):
            try:
                # bytes, so that a BytesPacker packs the whole call at once
                sha, nkeys = script.sha.encode(), b"%d" % len(keys)
                assert self.held is not None  # not on a cluster (eval_many)
                return self.held.execute("EVALSHA", sha, nkeys, *keys, *args)
            except rex.NoScriptError:
                if attempt == 1:
                    raise
                script.sha = self.client.script_load(script.script)
            except rex.ResponseError as exc:
                self.raise_(exc)
        raise AssertionError("unreachable")  # pragma: no cover

    def release(self) -> None:
        """Give the kept connections back to the client's pool (the store is closing)."""
        if self.held is not None:
            self.held.release_all()

    def pipelines(self, calls: Sequence[Call], todo: list[int]) -> list[Any]:
        """(pipeline, call indexes) to send. On a cluster, one pipeline per node on that node's
        own client: redis-py's cluster pipeline refuses EVALSHA, and a WAIT counts the writes
        of its own connection, so it must follow them on the node that took them."""
        if not isinstance(self.client, RedisCluster):
            return [(self.client.pipeline(transaction=False), todo)]
        by_node: dict[str, tuple[Any, list[int]]] = {}
        for i in todo:
            node = self.client.get_node_from_key(calls[i][0][0])  # type: ignore[no-untyped-call]
            if node.name not in by_node:
                pipe = self.client.get_redis_connection(node).pipeline(transaction=False)
                by_node[node.name] = (pipe, [])
            by_node[node.name][1].append(i)
        return list(by_node.values())

    def execute(self, pipe: Any) -> list[Any]:
        try:
            replies: list[Any] = pipe.execute(raise_on_error=False)
        except (rex.ConnectionError, rex.TimeoutError):
            self.refresh_slots()
            raise
        if any(isinstance(r, rex.MovedError) for r in replies):
            self.refresh_slots()
        return replies

    def refresh_slots(self) -> None:
        """After a node failed or a slot moved: read the slot map again, so the base's retry goes
        to the new primary (the cluster client does this for the commands it routes itself)."""
        if isinstance(self.client, RedisCluster):
            try:
                self.client.nodes_manager.initialize()
            except rex.RedisError as exc:
                log.info("redis: cannot read the cluster's slot map yet: %s", exc)

    def check_wait(self, acked: Any, wanted: int, *, durable: bool) -> None:
        if isinstance(acked, Exception):
            self.raise_(acked)
        if int(acked) >= wanted:
            return
        self.wait_misses += 1
        what = "write" if durable else "invalidation"
        log.warning(
            "redis: a %s reached %d of %d replicas within %d ms", what, acked, wanted, self._wait_ms
        )
        if durable:
            raise StoreUnavailable(
                f"redis: a write reached {acked} of {wanted} replicas: not durable"
            )
