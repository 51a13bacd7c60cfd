"""Server instances of our own: a PostgreSQL, MariaDB or Redis that a test may stop and start.

The machine's shared servers are never stopped; each instance here has its own data directory
under a temporary folder and a free loopback port, and is stopped by :meth:`Instance.close`
(call it in ``finally``). Running as root, PostgreSQL and MariaDB run as their system users.

:func:`own_instance` builds and starts one, or skips the test with the reason (a failure when
``SESSIONKEEPER_REQUIRE_SERVICES=1``) when this machine cannot run it.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from sessionkeeper.demo.cluster import free_port
from tests.services import REQUIRE_ENV, services_required

START_TIMEOUT_S = 30.0


def _as_user(user: str) -> list[str]:
    """Run a command as ``user`` when we are root (the servers refuse to run as root)."""
    return ["runuser", "-u", user, "--"] if os.geteuid() == 0 else []


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from ``/proc``)."""
    found = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            # "pid (comm) state ppid ...": comm may hold spaces, so split after its ")".
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.split("/")[2]))
    return found


def _alive(proc: subprocess.Popen[bytes] | None) -> list[int]:
    """``[proc.pid]``; a clear error if it exited (e.g. its port was taken meanwhile by another
    server, which then answered in its place)."""
    if proc is None or proc.poll() is not None:
        raise RuntimeError(
            f"the server process is not running (exit status {proc and proc.poll()})"
        )
    return [proc.pid]


def _wait_until(answers: object, what: str, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            answers()  # type: ignore[operator]
            return
        except Exception as exc:
            last = exc
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not answer within {timeout_s:g} s: {last!r}")


class Instance:
    """One server of our own. ``start()`` waits until it answers; ``stop()`` until it is gone."""

    kind = "server"

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"sk-{self.kind}-"))
        os.chmod(self.dir, 0o755)
        self.running = False
        self.frozen: list[int] = []

    @property
    def url(self) -> str:
        raise NotImplementedError

    def pids(self) -> list[int]:
        """The server's processes, the main one first."""
        raise NotImplementedError

    def freeze(self) -> None:
        """SIGSTOP every process of the server: it keeps its sockets and answers nothing, like a
        hung host or a network cut (its kernel still accepts connections and acknowledges data).
        The main process first, so that it forks no new one meanwhile."""
        main, *_ = self.pids()
        os.kill(main, signal.SIGSTOP)
        self.frozen = [main, *_children(main)]
        for pid in self.frozen[1:]:
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT what :meth:`freeze` stopped."""
        for pid in reversed(self.frozen):
            os.kill(pid, signal.SIGCONT)
        self.frozen = []

    def setup(self) -> None:
        """Create the data directory (once)."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def log_tail(self) -> str:
        return ""

    def close(self) -> None:
        try:
            if self.frozen:
                self.thaw()
            if self.running:
                self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class PostgresInstance(Instance):
    kind = "postgresql"

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found and shutil.which("initdb") is None:
            raise RuntimeError("initdb not found (/usr/lib/postgresql/*/bin, PATH)")
        self.bin = Path(found[-1]).parent if found else Path(shutil.which("initdb") or "").parent
        super().__init__()
        self.data = self.dir / "data"
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        out = subprocess.run(
            [*_as_user("postgres"), *args], capture_output=True, text=True, timeout=60
        )
        if out.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {out.stderr.strip()} {self.log_tail()}")

    def setup(self) -> None:
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
            "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=50"
        )
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options,
            "-l", str(self.dir / "log"), "-w", "-t", str(int(START_TIMEOUT_S)), "start",
        )  # fmt: skip
        self.running = True

    def pids(self) -> list[int]:
        main = int((self.data / "postmaster.pid").read_text().split()[0])
        return [main, *_children(main)]

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        self.running = False

    def log_tail(self) -> str:
        try:
            return (self.dir / "log").read_text()[-1500:]
        except OSError:
            return ""


class MariaDbInstance(Instance):
    kind = "mysql"

    def __init__(self) -> None:
        self.install = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
        self.server = shutil.which("mariadbd") or shutil.which("mysqld")
        for name in ("/usr/sbin/mariadbd", "/usr/sbin/mysqld"):
            if self.server is None and os.path.exists(name):
                self.server = name
        if self.install is None or self.server is None:
            raise RuntimeError("mariadb-install-db / mariadbd not found")
        super().__init__()
        self.data = self.dir / "data"
        self.proc: subprocess.Popen[bytes] | None = None
        if os.geteuid() == 0:
            shutil.chown(self.dir, "mysql")

    @property
    def url(self) -> str:
        return f"mysql://root@127.0.0.1:{self.port}/test"

    def setup(self) -> None:
        args = [self.install or "", "--no-defaults", f"--datadir={self.data}", "--skip-test-db"]
        if os.geteuid() == 0:
            args.append("--user=mysql")
        out = subprocess.run(args, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed: {out.stdout[-800:]} {out.stderr}")

    def _connect(self) -> None:
        import pymysql

        conn = pymysql.connect(host="127.0.0.1", port=self.port, user="root", connect_timeout=1)
        try:
            with conn.cursor() as cur:
                cur.execute("CREATE DATABASE IF NOT EXISTS test")
        finally:
            conn.close()

    def start(self) -> None:
        args = [
            self.server or "",
            "--no-defaults",
            f"--datadir={self.data}",
            f"--port={self.port}",
            f"--socket={self.dir / 'sock'}",
            f"--pid-file={self.dir / 'pid'}",
            f"--log-error={self.dir / 'err.log'}",
            "--bind-address=127.0.0.1",
            "--skip-grant-tables",
            "--innodb-flush-log-at-trx-commit=2",
            "--innodb-buffer-pool-size=64M",
        ]
        if os.geteuid() == 0:
            args.append("--user=mysql")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.running = True
        try:
            _wait_until(self._connect, "mariadbd")
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"{exc} {self.log_tail()}") from None

    def pids(self) -> list[int]:
        return _alive(self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None
        self.running = False

    def log_tail(self) -> str:
        try:
            return (self.dir / "err.log").read_text()[-1500:]
        except OSError:
            return ""


class RedisInstance(Instance):
    """Append-only file on, so that sessions written before a stop are there after a start."""

    kind = "redis"

    def __init__(self) -> None:
        self.server = shutil.which("redis-server")
        if self.server is None:
            raise RuntimeError("redis-server not found")
        super().__init__()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _ping(self) -> None:
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        try:
            client.ping()
        finally:
            client.close()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.server or "",
                "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.running = True
        _wait_until(self._ping, "redis-server")

    def pids(self) -> list[int]:
        return _alive(self.proc)

    def stop(self) -> None:
        """SIGKILL: a crash, not a shutdown (the append-only file is fsynced on every write)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None
        self.running = False


KINDS: dict[str, type[Instance]] = {
    "postgresql": PostgresInstance,
    "mysql": MariaDbInstance,
    "redis": RedisInstance,
}


def own_instance(kind: str) -> Instance:
    """A started instance of ``kind``; the caller closes it. Skips (or fails, under
    ``SESSIONKEEPER_REQUIRE_SERVICES=1``) with the reason when it cannot start here."""
    instance: Instance | None = None
    try:
        instance = KINDS[kind]()
        instance.setup()
        instance.start()
        return instance
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        if instance is not None:
            instance.close()
        reason = f"cannot run an own {kind} server here: {exc}"
        if services_required():
            pytest.fail(f"{reason} ({REQUIRE_ENV}=1)", pytrace=False)
        pytest.skip(reason)
