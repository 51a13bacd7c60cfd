"""nginx in front of the nodes, routing each session to the node named in its id.

A session id is ``<token>.<node>``. :func:`routing` renders the ``map`` and ``upstream`` blocks
that send a request to the node its cookie names; :data:`PROXY_DIRECTIVES` send it on to
``@sk_fallback`` (all nodes, :data:`FALLBACK_DIRECTIVES`) when that node does not answer. A
request with no cookie, or naming a node nginx does not know, goes to all nodes in turn. ``deploy/nginx.conf`` ships exactly this block
(a test compares them). :class:`Nginx` runs a private nginx master with a generated configuration
in a temporary folder, never the system service.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sessionkeeper.demo.cluster import get_json

ROUTING_BEGIN = "# --- sessionkeeper routing: begin (rendered by tools.chaos.nginx.routing) ---"
ROUTING_END = "# --- sessionkeeper routing: end ---"
READY_TIMEOUT_S = 10.0
_QUOTED = re.compile(r'"([^"]*)"')

#: Directives for the ``location`` that proxies to the nodes (shared with deploy/nginx.conf).
PROXY_DIRECTIVES = """\
proxy_pass http://$sk_upstream;
# The node's own upstream has one server, so nginx never marks it down: every request tries
# the node its session id names first. When that node does not answer (refused, reset,
# timeout), the request goes to @sk_fallback, i.e. to any node, which loads the session from
# the store. A 503 from a node is NOT sent elsewhere: it means the store is down (no other
# node can do better) or the session is busy (serialize_access), and another node would take
# the session off the node that has its newest changes.
proxy_next_upstream off;
error_page 502 504 = @sk_fallback;
proxy_connect_timeout 2s;
# Longer than gunicorn's graceful_timeout: a node that is stopping finishes its requests and
# flushes before it exits.
proxy_read_timeout 60s;
proxy_http_version 1.1;
proxy_set_header Connection "";
proxy_set_header Host $host;
proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
proxy_set_header X-Forwarded-Proto $scheme;"""

#: The named location a request falls back to when its node is down.
FALLBACK_DIRECTIVES = """\
proxy_pass http://sk_all;
# A down node is skipped for 2 s (max_fails=1 fail_timeout=2s in sk_all); a request
# that fails on one node is tried on the next. Caution: a request whose node died while
# handling it is sent again here, POSTs included (the node may or may not have applied it).
proxy_next_upstream error timeout http_502 non_idempotent;
proxy_next_upstream_tries 0;
proxy_connect_timeout 2s;
proxy_read_timeout 60s;
proxy_http_version 1.1;
proxy_set_header Connection "";
proxy_set_header Host $host;
proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
proxy_set_header X-Forwarded-Proto $scheme;"""


@dataclass(frozen=True)
class Backend:
    """One node as nginx sees it: its sessionkeeper node name and its ``host:port``."""

    name: str
    address: str


def upstream_name(node: str) -> str:
    return f"sk_node_{node}"


def routing(backends: Sequence[Backend], cookie: str = "sessionid") -> str:
    """The ``http``-level blocks: two maps (cookie -> node name -> upstream), one upstream per
    node, and ``sk_all`` with every node."""
    if not backends:
        raise ValueError("at least one backend")
    for b in backends:
        if not b.name or not all(c.isalnum() or c in "_-" for c in b.name):
            raise ValueError(f"node names are letters, digits, '_' and '-': {b.name!r}")
    width = max(len(b.name) for b in backends)
    lines = [
        ROUTING_BEGIN,
        "# The node is the field after the token: <token>.<node>, or <token>.<owner>.<backup>",
        "# with replication (any node can take over, asking the backup the id names).",
        f"map $cookie_{cookie} $sk_node {{",
        '    "~^[A-Za-z0-9_-]+\\.(?<sk_suffix>[A-Za-z0-9_-]+)" $sk_suffix;',
        '    default "";',
        "}",
        "# A known node -> its own upstream; no cookie or an unknown node -> all of them.",
        "map $sk_node $sk_upstream {",
        "    default sk_all;",
        *(f"    {b.name:<{width}} {upstream_name(b.name)};" for b in backends),
        "}",
    ]
    for b in backends:
        lines.append(f"upstream {upstream_name(b.name)} {{")
        lines.append(f"    server {b.address};")
        lines.append("}")
    lines.append(
        "# A node that failed is skipped for 2 s, then tried again (a restart is seen quickly)."
    )
    lines.append("upstream sk_all {")
    lines.extend(f"    server {b.address} max_fails=1 fail_timeout=2s;" for b in backends)
    lines.append("}")
    lines.append(ROUTING_END)
    return "\n".join(lines) + "\n"


def _indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "\n".join(pad + line if line else line for line in text.splitlines())


def config(backends: Sequence[Backend], listen_port: int, prefix: Path) -> str:
    """A whole nginx.conf for a private master: pid, logs and temporary files under ``prefix``,
    listening on ``127.0.0.1:listen_port`` only."""
    tmp = prefix / "tmp"
    return f"""\
worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;
events {{
    worker_connections 1024;
}}
http {{
    log_format sk '$msec $status "$request" "$upstream_addr" "$upstream_status"';
    access_log {prefix / "access.log"} sk;
    client_body_temp_path {tmp / "body"};
    proxy_temp_path {tmp / "proxy"};
    fastcgi_temp_path {tmp / "fastcgi"};
    uwsgi_temp_path {tmp / "uwsgi"};
    scgi_temp_path {tmp / "scgi"};

{_indent(routing(backends), 4)}

    server {{
        listen 127.0.0.1:{listen_port};
        location = /_nginx {{
            return 200 '{{"nginx": true}}';
        }}
        location / {{
{_indent(PROXY_DIRECTIVES, 12)}
        }}
        location @sk_fallback {{
{_indent(FALLBACK_DIRECTIVES, 12)}
        }}
    }}
}}
"""


def find_nginx() -> str | None:
    found = shutil.which("nginx")
    if found is None and os.access("/usr/sbin/nginx", os.X_OK):
        found = "/usr/sbin/nginx"
    return found


class Nginx:
    """A private nginx master (``nginx -p DIR -c nginx.conf -g 'daemon off;'``). Use it as a
    context manager: it is stopped on every path out."""

    def __init__(self, backends: Sequence[Backend], port: int, prefix: Path) -> None:
        binary = find_nginx()
        if binary is None:
            raise RuntimeError("nginx is not installed: run scripts/ensure-nginx.sh")
        self.binary = binary
        self.port = port
        self.prefix = prefix
        self.backends = list(backends)
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Nginx:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _write_config(self) -> Path:
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.prefix / "tmp" / sub).mkdir(parents=True, exist_ok=True)
        # A root master runs its worker as nobody: it must reach the temporary folders.
        self.prefix.chmod(0o755)
        for path in (self.prefix / "tmp", *(self.prefix / "tmp").iterdir()):
            path.chmod(0o1777)
        conf = self.prefix / "nginx.conf"
        conf.write_text(config(self.backends, self.port, self.prefix))
        return conf

    def command(self, *extra: str) -> list[str]:
        return [self.binary, "-p", str(self.prefix), "-c", str(self.prefix / "nginx.conf"), *extra]

    def check(self) -> None:
        """``nginx -t`` on the generated configuration; raises with nginx's output."""
        self._write_config()
        done = subprocess.run(
            self.command("-t", "-q", "-g", "daemon off;"),
            capture_output=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"nginx -t failed:\n{done.stderr.decode(errors='replace')}")

    def start(self) -> None:
        self.check()
        log = open(self.prefix / "master.log", "ab")  # noqa: SIM115 - the process owns it
        try:
            self.proc = subprocess.Popen(
                self.command("-g", "daemon off;"),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if get_json(self.port, "/_nginx", timeout_s=1.0).get("nginx"):
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not start; its error log ends:\n{self.error_log()}")

    def error_log(self, lines: int = 15) -> str:
        try:
            text = (self.prefix / "error.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def access_log(self) -> list[str]:
        try:
            return (self.prefix / "access.log").read_text(errors="replace").splitlines()
        except OSError:
            return []

    def stop(self) -> None:
        """SIGQUIT (graceful), then SIGKILL the process group if it is still there after 5 s."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGQUIT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


def fallbacks(access_log: Sequence[str]) -> int:
    """Requests nginx sent to more than one node: ``$upstream_addr`` lists each one it tried."""
    count = 0
    for line in access_log:
        quoted = _QUOTED.findall(line)
        if len(quoted) >= 2 and "," in quoted[1]:
            count += 1
    return count
