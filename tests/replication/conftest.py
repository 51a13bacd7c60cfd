"""A private nats-server per test (on a free loopback port), and managers replicating over it.

Each manager has its own ``MemoryStore``, so only replication can carry a session from one to
another. Managers run on one ``FakeClock``: membership's "dead after three missed beats" is
judged on it, so a member dies only when a test advances the clock. The nats-server binary is
``/usr/sbin/nats-server`` (Debian's package) or ``$SESSIONKEEPER_NATS_SERVER``; without it the
tests skip with the reason, or fail under ``SESSIONKEEPER_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import sessionkeeper as sk
from tests import services

NATS_BINARY = os.environ.get("SESSIONKEEPER_NATS_SERVER") or shutil.which(
    "nats-server", path="/usr/sbin:/usr/bin:/usr/local/bin"
)
KEY = b"test cluster key"


class NatsServer:
    """One nats-server process; ``stop`` and ``start`` again keep its port (a restart).

    The first start lets the server pick its own port (``-p -1``) and reads it from the ports
    file the server writes once it listens: a port found free beforehand can be taken by
    another process before the server binds it, and a client would then reach that process."""

    def __init__(self, binary: str, ports_dir: Path) -> None:
        self.binary = binary
        self.ports_dir = ports_dir
        self.port = -1
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "--ports_file_dir",
                str(self.ports_dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        ports_file = self.ports_dir / f"{Path(self.binary).name}_{self.proc.pid}.ports"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"nats-server exited ({self.proc.returncode}) on port {self.port}"
                )
            try:
                [url] = json.loads(ports_file.read_text())["nats"]
                self.port = int(url.rsplit(":", 1)[1])
                return
            except (OSError, ValueError, KeyError):
                time.sleep(0.02)  # waiting for a process to listen, not for time to pass
        raise RuntimeError("nats-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    if NATS_BINARY is None:
        reason = "nats-server not installed (apt-get install nats-server)"
        if services.services_required():
            pytest.fail(f"{reason}; {services.REQUIRE_ENV}=1 so this is an error", pytrace=False)
        pytest.skip(reason)
    server = NatsServer(NATS_BINARY, tmp_path_factory.mktemp("nats"))
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


class SlowConnects:
    """A loopback TCP proxy to ``upstream`` (host, port) that holds each new connection for
    ``delay_s`` before it connects it through: a NATS server slow to accept, as on a loaded
    machine. ``url`` is the proxy's ``nats://`` address."""

    def __init__(self, upstream: tuple[str, int], delay_s: float) -> None:
        import asyncio

        self._upstream, self._delay_s = upstream, delay_s
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        assert self._ready.wait(10)
        self.url = f"nats://127.0.0.1:{self._port}"

    def _serve(self) -> None:
        import asyncio

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except OSError:
                pass
            finally:
                writer.close()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await asyncio.sleep(self._delay_s)
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        async def main() -> None:
            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            self._port = server.sockets[0].getsockname()[1]
            self._stopped = asyncio.Event()
            self._ready.set()
            await self._stopped.wait()
            server.close()
            pipes = asyncio.all_tasks() - {asyncio.current_task()}
            for task in pipes:  # ended here, on a loop still open
                task.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            await server.wait_closed()

        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(main())
        self._loop.close()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(10)


@pytest.fixture
def slow_nats(nats: NatsServer) -> Iterator[SlowConnects]:
    """The private nats-server behind :class:`SlowConnects`, 0.8 s per connection: longer
    than ``ack_timeout_s`` (0.5 s), shorter than nats-py's ``connect_timeout`` (2 s)."""
    host, port = nats.url.removeprefix("nats://").rsplit(":", 1)
    proxy = SlowConnects((host, int(port)), 0.8)
    yield proxy
    proxy.close()
