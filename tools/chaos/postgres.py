"""A private PostgreSQL instance for the chaos run, so that restarting it or cutting it off never
touches the machine's shared server.

``initdb`` into a temporary folder, then ``pg_ctl start`` on a free loopback port with its socket
in that folder. Run as root, every command runs as the ``postgres`` user (PostgreSQL refuses
root), and the folder is handed to that user. Every wait is bounded; use it as a context manager:
the server is stopped and its folder removed on every path out.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from sessionkeeper.demo.cluster import free_port

START_TIMEOUT_S = 60


def find_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/*/bin`` with ``initdb`` and ``pg_ctl`` (or ``PATH``)."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: [int(x) for x in Path(p).parent.name.split(".") if x.isdigit()],
    )
    for path in reversed(candidates):
        if os.access(Path(path) / "initdb", os.X_OK) and os.access(Path(path) / "pg_ctl", os.X_OK):
            return Path(path)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PrivatePostgres:
    """One PostgreSQL server: :attr:`url` is ``postgresql://postgres@127.0.0.1:PORT/postgres``."""

    def __init__(self, workdir: Path | None = None) -> None:
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL's initdb/pg_ctl are not installed")
        self.bin_dir = bin_dir
        self._own_dir = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="sessionkeeper-chaos-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as_postgres = os.geteuid() == 0
        self.running = False

    def __enter__(self) -> PrivatePostgres:
        try:
            self.init()
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, *args: str, timeout_s: float = START_TIMEOUT_S) -> None:
        user: str | None = "postgres" if self._as_postgres else None
        done = subprocess.run(
            [str(self.bin_dir / args[0]), *args[1:]],
            capture_output=True,
            timeout=timeout_s,
            check=False,
            user=user,
            cwd=self.dir,
        )
        if done.returncode != 0:
            out = (done.stdout + done.stderr).decode(errors="replace").strip()
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {out}\n{self.log_tail()}")

    def init(self) -> None:
        self.data.mkdir(parents=True)
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            for path in (self.dir, self.data):
                os.chown(path, pw.pw_uid, pw.pw_gid)
            self.dir.chmod(0o755)
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "--no-instructions", "-E", "UTF8", "--locale=C",
        )  # fmt: skip

    def _options(self) -> str:
        # fsync off: this server only ever stops cleanly (pg_ctl), never with the machine.
        return f"-p {self.port} -k {self.dir} -h 127.0.0.1 -c fsync=off -c max_connections=100"

    def start(self) -> None:
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", self._options(), "-l", str(self.log),
            "-w", "-t", str(START_TIMEOUT_S), "start",
        )  # fmt: skip
        self.running = True

    def stop(self) -> None:
        """``pg_ctl stop -m fast``: open connections are ended, new ones refused."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        self.running = False

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every connection is cut, the server is back at once."""
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", self._options(), "-l", str(self.log),
            "-m", "fast", "-w", "-t", str(START_TIMEOUT_S), "restart",
        )  # fmt: skip
        self.running = True

    def log_tail(self, lines: int = 10) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def close(self) -> None:
        if self.data.joinpath("postmaster.pid").exists():
            with contextlib.suppress(Exception):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        self.running = False
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
