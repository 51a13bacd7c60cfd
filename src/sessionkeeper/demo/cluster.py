"""Demo nodes as real gunicorn processes on loopback ports.

Each node runs in its own process group, so a SIGKILL reaches the master and its worker at once
(a real crash: nothing is flushed), while a SIGTERM goes to the master, which stops its worker
gracefully (``worker_exit`` flushes). :meth:`Cluster.close` kills whatever is still running;
use the cluster as a context manager so that happens on every path out.
"""

from __future__ import annotations

import contextlib
import enum
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError

HTTP_TIMEOUT_S = 5.0
READY_TIMEOUT_S = 20.0


def _ephemeral_low() -> int:
    """The lowest port the kernel gives outgoing connections (Linux; IANA's 49152 elsewhere)."""
    with contextlib.suppress(OSError, ValueError):
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    return 49152


def free_port() -> int:
    """A loopback port nobody listens on now, below the kernel's ephemeral range: a port the OS
    picks from that range may be handed to an outgoing connection before the caller's server
    binds it (a node of a CI run failed so, "Address already in use"). Only another caller
    that binds a port itself can still take it first."""
    low = _ephemeral_low()
    for _ in range(50):
        port = random.randrange(max(1024, low - 12_000), low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening_socket() -> socket.socket:
    """A loopback socket already bound and listening, on a port the kernel chose: hand it to
    gunicorn as ``-b fd://N`` (``pass_fds``) and no other process can take the port between the
    choice and the bind, as it can with :func:`free_port`. Keep it open to restart a server on
    the same port."""
    return socket.create_server(("127.0.0.1", 0), backlog=128)


def check_gunicorn() -> None:
    try:
        import gunicorn  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            "the demo runs its nodes with gunicorn: pip install 'sessionkeeper[server]'"
        ) from None


def get_json(port: int, path: str, timeout_s: float = HTTP_TIMEOUT_S) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise OSError(f"GET {path} answered {resp.status}")
        return json.loads(body)
    finally:
        conn.close()


class State(enum.Enum):
    STARTING = "starting"
    UP = "up"
    STOPPING = "stopping"  # SIGTERM sent: draining and flushing
    DOWN = "down"


class Node:
    """One gunicorn process (master + one worker) serving the demo shop as node ``name``."""

    def __init__(
        self,
        name: str,
        port: int,
        store_url: str,
        write: str,
        log_dir: Path,
        replication: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.port = port
        self.store_url = store_url
        self.write = write
        self.replication = replication or {}  # SESSIONKEEPER_REPLICATION* variables
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.state = State.DOWN
        self.starts = 0

    def start(self) -> None:
        env = {
            **os.environ,
            "SESSIONKEEPER_STORE": self.store_url,
            "SESSIONKEEPER_NODE": self.name,
            "SESSIONKEEPER_WRITE": self.write,
            **self.replication,
        }
        cmd = [
            sys.executable, "-m", "gunicorn",
            "-c", "python:sessionkeeper.demo.gunicorn_conf",
            "-w", "1", "-b", f"127.0.0.1:{self.port}",
            "--name", f"sessionkeeper-demo-{self.name}",
            "sessionkeeper.demo.app:application",
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.state = State.STARTING
        self.starts += 1

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until ``/healthz`` answers with this node's name; raises when the process dies or
        the time is up, with the end of its log."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                break
            try:
                if get_json(self.port, "/healthz", timeout_s=1.0).get("node") == self.name:
                    self.state = State.UP
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"node {self.name} did not start; its log ends:\n{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = get_json(self.port, "/_stats")
        return result

    def replication_health(self) -> dict[str, Any]:
        result: dict[str, Any] = get_json(self.port, "/_replication")
        return result

    def kill(self) -> None:
        """SIGKILL the whole process group: master and worker die at once, flushing nothing."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._reap_group()
        self.state = State.DOWN

    def terminate(self) -> None:
        """SIGTERM the master: it stops the worker gracefully, and the worker flushes."""
        if self.proc is not None and self.proc.poll() is None:
            self.state = State.STOPPING
            self.proc.send_signal(signal.SIGTERM)

    def wait_stopped(self, timeout_s: float = 30.0) -> bool:
        """After :meth:`terminate`: wait for the process to end; kill it if it does not.
        Returns whether it ended by itself."""
        clean = True
        if self.proc is not None:
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                clean = False
        self.kill()  # reaps a worker the master may have left behind
        return clean

    def _reap_group(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


class Cluster:
    """``n`` nodes named ``node-1``..``node-n`` on free loopback ports, one store. With
    ``replication`` (a ``nats://`` URL) the nodes copy their sessions to each other, in a NATS
    cluster of their own (``cluster``)."""

    def __init__(
        self,
        n: int,
        store_url: str,
        write: str,
        log_dir: Path,
        replication: str | None = None,
        cluster: str = "sessionkeeper-demo",
    ) -> None:
        env = (
            {"SESSIONKEEPER_REPLICATION": replication, "SESSIONKEEPER_CLUSTER": cluster}
            if replication
            else None
        )
        self.nodes = [
            Node(f"node-{i}", free_port(), store_url, write, log_dir, env) for i in range(1, n + 1)
        ]
        self.by_name = {node.name: node for node in self.nodes}

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            node.wait_ready()

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop every node gracefully (they flush); returns whether all ended by themselves."""
        running = [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]
        for node in running:
            node.terminate()
        return all([node.wait_stopped(timeout_s) for node in running])

    def close(self) -> None:
        for node in self.nodes:
            node.kill()

    def live(self) -> list[Node]:
        return [n for n in self.nodes if n.state is State.UP]
