"""Real server processes for the end-to-end adapter tests: started on free loopback ports,
every wait bounded, always killed (the whole process group: master and workers)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from sessionkeeper.demo.cluster import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

COMMANDS = {
    "flask": ["gunicorn", "--threads", "4", "examples.flask_app:app"],
    "django": ["gunicorn", "--threads", "4", "examples.django_project.wsgi"],
    "fastapi": ["uvicorn", "examples.fastapi_app:app"],
    "metrics": [
        "gunicorn",
        "-c",
        "deploy/gunicorn_metrics.py",
        "tests.adapters.metrics_app:application",
    ],
    "metrics-asgi": ["uvicorn", "tests.adapters.metrics_app:asgi_application"],
    "metrics-preload": [
        "gunicorn",
        "--preload",
        "-c",
        "deploy/gunicorn_metrics.py",
        "tests.adapters.metrics_app:application",
    ],
}


class Server:
    def __init__(
        self,
        framework: str,
        workers: int,
        store: str,
        log: Path,
        env: dict[str, str],
        args: Sequence[str] = (),
    ) -> None:
        self.port = free_port()
        cmd = [str(BIN / COMMANDS[framework][0]), *COMMANDS[framework][1:], *args]
        if cmd[0].endswith("uvicorn"):
            cmd += ["--workers", str(workers), "--host", "127.0.0.1", "--port", str(self.port)]
        else:
            cmd += ["-w", str(workers), "-b", f"127.0.0.1:{self.port}"]
        # The sources of this checkout first, not those the venv was installed from.
        pythonpath = os.pathsep.join([str(ROOT), str(ROOT / "src")])
        full_env = {**os.environ, "PYTHONPATH": pythonpath, "SESSIONKEEPER_STORE": store, **env}
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if httpx.get(self.url + "/", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not start:\n{self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the master and its workers: no shutdown flush, no goodbye."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group this test started
        self.proc.wait(timeout=10)
        self._log.close()
