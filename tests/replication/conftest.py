"""A private nats-server per test (on a free loopback port), and managers replicating over it.

Each manager has its own ``MemoryStore``, so only replication can carry a session from one to
another. Managers run on one ``FakeClock``: membership's "dead after three missed beats" is
judged on it, so a member dies only when a test advances the clock. The nats-server binary is
``/usr/sbin/nats-server`` (Debian's package) or ``$SESSIONKEEPER_NATS_SERVER``; without it the
tests skip with the reason, or fail under ``SESSIONKEEPER_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import sessionkeeper as sk
from tests import services

NATS_BINARY = os.environ.get("SESSIONKEEPER_NATS_SERVER") or shutil.which(
    "nats-server", path="/usr/sbin:/usr/bin:/usr/local/bin"
)
KEY = b"test cluster key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    """One nats-server process; ``stop`` and ``start`` again keep its port (a restart)."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = _free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "-a", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)  # waiting for a process to listen, not for time to pass
        raise RuntimeError("nats-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def nats() -> Iterator[NatsServer]:
    if NATS_BINARY is None:
        reason = "nats-server not installed (apt-get install nats-server)"
        if services.services_required():
            pytest.fail(f"{reason}; {services.REQUIRE_ENV}=1 so this is an error", pytrace=False)
        pytest.skip(reason)
    server = NatsServer(NATS_BINARY)
    server.start()
    yield server
    server.stop()


MakeNode = Callable[..., sk.SessionManager]


@pytest.fixture
def clock() -> sk.FakeClock:
    return sk.FakeClock()


@pytest.fixture
def make_node(nats: NatsServer, clock: sk.FakeClock) -> Iterator[MakeNode]:
    made: list[sk.SessionManager] = []

    def make(name: str, **options: Any) -> sk.SessionManager:
        replication = sk.Replication(
            nats.url,
            cluster="t",
            key=KEY,
            heartbeat_s=0.05,
            ack_timeout_s=options.pop("ack_timeout_s", 1.0),
            replicas=options.pop("replicas", 1),
            ack=options.pop("ack", "sync"),
            max_message_bytes=65536,  # below NATS's own 1 MiB, so that an oversized one arrives
        )
        m = sk.SessionManager(
            options.pop("store", "memory://"),
            node=name,
            clock=clock,
            housekeeping=False,
            replication=replication,
            **options,
        )
        m.start()
        made.append(m)
        return m

    yield make
    for m in made:
        m.close(deadline_s=1)


def wait_members(nodes: list[sk.SessionManager], count: int, timeout_s: float = 10) -> None:
    """Wait until every node sees ``count`` live members (itself included)."""
    for m in nodes:
        members = m._replicator.members if m._replicator else None
        assert members is not None
        assert members.wait_for(lambda live: len(live) == count, timeout_s), m.replication_health()


def wait_until(predicate: Callable[[], bool], timeout_s: float = 5) -> bool:
    """Poll for something another thread does (a delivery), with a deadline."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        threading.Event().wait(0.01)
    return True
