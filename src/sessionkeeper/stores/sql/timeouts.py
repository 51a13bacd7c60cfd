"""The bounds of a SQL store's waits on its server, from its one option ``timeout_s``.

Each wait for the server (to connect, for a statement's answer) gives up after ``timeout_s``:
the client enforces it, since a frozen or unreachable server enforces nothing. The server is also
asked to stop a statement, or a wait for a lock, a little earlier (``SERVER_SHARE``), so that its
clean error (the connection stays usable) comes before the client's deadline.
"""

from __future__ import annotations

import math
from typing import Any

#: The bound on one wait for a database server, in seconds.
DEFAULT_TIMEOUT_S = 3.0
#: The share of ``timeout_s`` after which the server stops a statement or a lock wait.
SERVER_SHARE = 0.8


def mysql_args(timeout_s: float) -> dict[str, Any]:
    """PyMySQL's connect, read and write socket timeouts, and the server's limits:
    ``max_statement_time`` on MariaDB only (inside ``/*M! */``, which MySQL reads as a comment),
    InnoDB's lock wait (whole seconds) on both. A read that times out closes PyMySQL's connection
    (error 2013), so the pool drops it."""
    server_s = timeout_s * SERVER_SHARE
    lock_wait = max(1, math.floor(server_s))
    return {
        "connect_timeout": timeout_s,
        "read_timeout": timeout_s,
        "write_timeout": timeout_s,
        "init_command": (
            f"SET SESSION innodb_lock_wait_timeout = {lock_wait}"
            f" /*M!, max_statement_time = {server_s:.3f} */"
        ),
    }


def postgres_params(cparams: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """libpq parameters (``cparams``, from the URL) with the connect timeout and the server's
    ``statement_timeout`` and ``lock_timeout`` added; a value the URL sets is kept, and our
    ``-c`` settings are appended to the URL's ``options``."""
    server_ms = max(1, int(timeout_s * SERVER_SHARE * 1000))
    ours = f"-c statement_timeout={server_ms} -c lock_timeout={server_ms}"
    params = dict(cparams)
    # libpq takes whole seconds and treats 1 as 2.
    params.setdefault("connect_timeout", max(2, math.ceil(timeout_s)))
    params["options"] = f"{params.get('options', '')} {ours}".strip()
    return params
