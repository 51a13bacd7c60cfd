"""A private nats-server for the chaos run's replication scenario, so that restarting it never
touches the machine's shared one (``127.0.0.1:4222``). Same port across restarts; every wait is
bounded; use it as a context manager: it is stopped on every path out.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from sessionkeeper.demo.cluster import free_port

START_TIMEOUT_S = 10.0


def find_nats() -> str | None:
    """``$SESSIONKEEPER_NATS_SERVER``, or Debian's ``nats-server`` (``scripts/ensure-nats.sh``)."""
    return os.environ.get("SESSIONKEEPER_NATS_SERVER") or shutil.which(
        "nats-server", path="/usr/sbin:/usr/bin:/usr/local/bin"
    )


class PrivateNats:
    """One nats-server on a free loopback port: :attr:`url` is ``nats://127.0.0.1:PORT``."""

    def __init__(self, log: Path) -> None:
        binary = find_nats()
        if binary is None:
            raise RuntimeError("nats-server is not installed: run scripts/ensure-nats.sh")
        self.binary = binary
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PrivateNats:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-a", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and self.running:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            time.sleep(0.02)  # waiting for a process to listen, not for time to pass
        self.stop()
        raise RuntimeError(f"nats-server did not start on :{self.port}; see {self.log}")

    def stop(self) -> None:
        """SIGTERM (every client is disconnected at once), SIGKILL after 10 s."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
