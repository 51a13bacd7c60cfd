"""Replicated Redis deployments of our own on loopback: a Sentinel set and a Redis Cluster.

- :class:`SentinelSet`: a master, one replica and one sentinel (quorum 1, so it promotes alone),
  ``down-after-milliseconds`` 1000: a SIGKILLed master is replaced within a few seconds.
- :class:`ClusterSet`: three masters with one replica each (``redis-cli --cluster create
  --cluster-replicas 1``), ``cluster-node-timeout`` 1000, and ``cluster-require-full-coverage no``
  so that the other shards keep serving while one fails over.

No persistence: durability comes from the replicas (``WAIT``). Each node has its own directory
and free port; :meth:`close` kills every process and removes the directories. :func:`start`
builds and starts one, or skips the test with the reason (a failure under
``SESSIONKEEPER_REQUIRE_SERVICES=1``) when redis-server cannot be found or started.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from sessionkeeper.demo.cluster import free_port
from tests.services import REQUIRE_ENV, services_required

READY_TIMEOUT_S = 30.0
SERVICE = "skmaster"


def _client(port: int) -> Any:
    import redis

    return redis.Redis(port=port, socket_connect_timeout=0.5, socket_timeout=2)


def _until(check: Any, what: str, timeout_s: float = READY_TIMEOUT_S) -> Any:
    """Poll ``check()`` until it returns a true value (errors count as not yet)."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
            last = value
        except Exception as exc:
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"{what}: not within {timeout_s:g} s (last: {last!r})")


def _bus_safe_port() -> int:
    """A free port whose cluster bus port (+10000) is a valid port and free too."""
    import socket

    for _ in range(200):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class Node:
    """One redis-server process (data node or sentinel)."""

    def __init__(self, root: Path, *args: str, sentinel: bool = False) -> None:
        self.port = _bus_safe_port() if "--cluster-enabled" in args else free_port()
        self.dir = root / str(self.port)
        self.dir.mkdir()
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError("redis-server not found")
        base = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        if sentinel:
            conf = self.dir / "sentinel.conf"
            conf.write_text("\n".join(args) + "\n")
            cmd = [server, str(conf), "--sentinel", *base]
        else:
            cmd = [server, *base, "--save", "", "--appendonly", "no", *args]
        self.cmd = cmd
        self.proc: subprocess.Popen[bytes] | None = None
        self.restart()

    def restart(self) -> None:
        """Start the process (again, after :meth:`kill`: same port, directory and options)."""
        with open(self.dir / "log", "ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT)
        _until(lambda: _client(self.port).ping(), f"redis-server on {self.port}")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed or handed over."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


class Deployment:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="sk-redis-ha-"))
        self.nodes: list[Node] = []

    def setup(self) -> None:
        raise NotImplementedError

    def node(self, *args: str, sentinel: bool = False) -> Node:
        n = Node(self.root, *args, sentinel=sentinel)
        self.nodes.append(n)
        return n

    @property
    def url(self) -> str:
        raise NotImplementedError

    def close(self) -> None:
        for n in self.nodes:
            n.kill()
        shutil.rmtree(self.root, ignore_errors=True)


def _replicas_online(port: int) -> int:
    info = _client(port).info("replication")
    return sum(1 for k, v in info.items() if k.startswith("slave") and v.get("state") == "online")


class SentinelSet(Deployment):
    def __init__(self, replicas: int = 1) -> None:
        super().__init__()
        self.replica_count = replicas

    def setup(self) -> None:
        self.master = self.node()
        follow = ("--replicaof", "127.0.0.1", str(self.master.port))
        self.replicas = [self.node(*follow) for _ in range(self.replica_count)]
        self.replica = self.replicas[0]
        _until(lambda: _replicas_online(self.master.port) == self.replica_count, "replicas in sync")
        self.sentinel = self.node(
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.master.port} 1",
            f"sentinel down-after-milliseconds {SERVICE} 1000",
            f"sentinel failover-timeout {SERVICE} 5000",
            f"sentinel parallel-syncs {SERVICE} 1",
            sentinel=True,
        )
        s = _client(self.sentinel.port)
        _until(
            lambda: len(s.execute_command("SENTINEL", "REPLICAS", SERVICE)) == self.replica_count,
            "sentinel sees the replicas",
        )

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/{SERVICE}/0"

    def master_port(self) -> int:
        s = _client(self.sentinel.port)
        _host, port = s.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        return int(port)

    def kill_master_of(self, key: str) -> Node:
        """SIGKILL the master (every key's)."""
        del key
        port = self.master_port()
        node = next(n for n in self.nodes if n.port == port)
        node.kill()
        return node

    def recover(self, dead: Node) -> None:
        """Until the sentinel has promoted a replica and the other replica follows it."""
        new = _until(lambda: self.master_port() != dead.port and self.master_port(), "failover")
        _until(lambda: _replicas_online(new) >= 1, "a replica of the new master")
        self._failover_finished()

    def switch(self) -> None:
        """``SENTINEL FAILOVER``: the master handed over while it lives, until it is demoted.
        Refused (NOGOODSLAVE) until the sentinel has fresh replica info: asked until accepted."""
        old, s = self.master, _client(self.sentinel.port)
        _until(lambda: s.execute_command("SENTINEL", "FAILOVER", SERVICE), "SENTINEL FAILOVER")
        _until(lambda: _client(old.port).info()["role"] == "slave", "the old master demoted")
        self._failover_finished()

    def _failover_finished(self) -> None:
        # Clients (redis-py) ask SENTINEL MASTERS, which names the new master only once the
        # failover has reconfigured the replicas; until then it reports the old one as down.
        s = _client(self.sentinel.port)
        _until(
            lambda: s.execute_command("SENTINEL", "MASTER", SERVICE)[b"flags"] == b"master",
            "the sentinel's failover finished",
        )


class ClusterSet(Deployment):
    def setup(self) -> None:
        args = (
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", "1000", "--cluster-require-full-coverage", "no",
        )  # fmt: skip
        for _ in range(6):
            self.node(*args)
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli not found")
        out = subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
             "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {out.stdout[-800:]}")
        for n in self.nodes:
            _until(lambda n=n: self._state_ok(n.port), f"cluster state ok on {n.port}")
        _until(lambda: len(self.masters()) == 3 and self._replicas_synced(), "replicas in sync")

    @staticmethod
    def _state_ok(port: int) -> bool:
        return b"cluster_state:ok" in _client(port).execute_command("CLUSTER", "INFO")

    def masters(self) -> list[Node]:
        return [n for n in self.nodes if n.alive and _client(n.port).info()["role"] == "master"]

    def _replicas_synced(self) -> bool:
        return all(_replicas_online(m.port) == 1 for m in self.masters())

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def _slots(self) -> list[tuple[int, int, int]]:
        """(first slot, last slot, master port) as a live node sees them."""
        live = next(n for n in self.nodes if n.alive)
        ranges = _client(live.port).execute_command("CLUSTER", "SLOTS")
        return [(int(r[0]), int(r[1]), int(r[2][1])) for r in ranges]

    def master_of(self, key: str) -> Node:
        from redis.crc import key_slot

        slot = key_slot(key.encode())
        port = next(p for first, last, p in self._slots() if first <= slot <= last)
        return next(n for n in self.nodes if n.port == port)

    def kill_master_of(self, key: str) -> Node:
        node = self.master_of(key)
        node.kill()
        return node

    def recover(self, dead: Node) -> None:
        """Until no slot is served by the dead master (its replica took over); then start the
        dead node again, as the box coming back, until it is the new master's replica."""
        live = next(n for n in self.nodes if n.alive)
        _until(
            lambda: all(p != dead.port for *_, p in self._slots()) and self._state_ok(live.port),
            "cluster failover",
        )
        dead.restart()
        _until(lambda: len(self.masters()) == 3 and self._replicas_synced(), "replicas in sync")


D = TypeVar("D", bound=Deployment)


def start(kind: Callable[[], D]) -> D:
    """A started deployment; the caller closes it. Skips (or fails, under
    ``SESSIONKEEPER_REQUIRE_SERVICES=1``) with the reason when it cannot start here."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        reason = "redis-server / redis-cli not found"
    else:
        try:
            deployment = kind()
            try:
                deployment.setup()
            except BaseException:
                deployment.close()
                raise
            return deployment
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            reason = f"cannot start {getattr(kind, '__name__', kind)}: {exc}"
    if services_required():
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1)", pytrace=False)
    pytest.skip(reason)
