"""Who may use the console: credentials, the console's own login sessions, CSRF tokens, and the
audit log of every action.

Credentials come from the caller, the environment or a file, never from a default: a password
(``SESSIONKEEPER_ADMIN_PASSWORD`` or ``SESSIONKEEPER_ADMIN_PASSWORD_FILE``) for the login form,
a token (``SESSIONKEEPER_ADMIN_TOKEN`` or ``..._TOKEN_FILE``) for ``Authorization: Bearer``, or
both. A browser logs in with the password (or the token) and a name for the audit log, and gets
a console session: a random id in an HttpOnly, SameSite=Strict cookie, held in this process's
memory only, with its own CSRF token. Thread safe (one lock).
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import os
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..clock import Clock
from ..errors import ConfigurationError

audit_log = logging.getLogger("sessionkeeper.admin.audit")

ENV_PASSWORD = "SESSIONKEEPER_ADMIN_PASSWORD"
ENV_TOKEN = "SESSIONKEEPER_ADMIN_TOKEN"
#: Shortest password or token accepted: a console that ends sessions deserves more than a PIN.
MIN_SECRET_CHARS = 12


@dataclass(frozen=True)
class Credentials:
    password: str | None = None
    token: str | None = None

    def check_password(self, given: str) -> bool:
        """Whether ``given`` is the password or the token (compared in constant time)."""
        ok = False
        for secret in (self.password, self.token):
            if secret is not None:
                ok |= hmac.compare_digest(given.encode(), secret.encode())
        return ok

    def check_bearer(self, header: str) -> bool:
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or self.token is None:
            return False
        return hmac.compare_digest(given.strip().encode(), self.token.encode())


def _read_secret(value: str | None, file: str | Path | None, what: str) -> str | None:
    if value is None and file is not None:
        try:
            value = Path(file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read the console's {what} file {file}: {exc}"
            ) from exc
    if value is not None and len(value) < MIN_SECRET_CHARS:
        raise ConfigurationError(f"the console's {what} must be at least {MIN_SECRET_CHARS} chars")
    return value or None


def load_credentials(
    *,
    password: str | None = None,
    password_file: str | Path | None = None,
    token: str | None = None,
    token_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Credentials:
    """The console's credentials: the arguments, else the environment (``..._FILE`` names a file
    holding the secret). Refuses to go on without any: there is no default password."""
    env = os.environ if environ is None else environ
    creds = Credentials(
        password=_read_secret(
            password or env.get(ENV_PASSWORD),
            password_file or env.get(ENV_PASSWORD + "_FILE"),
            "password",
        ),
        token=_read_secret(
            token or env.get(ENV_TOKEN), token_file or env.get(ENV_TOKEN + "_FILE"), "token"
        ),
    )
    if creds.password is None and creds.token is None:
        raise ConfigurationError(
            "the session console needs credentials and has no default: set "
            f"{ENV_PASSWORD} (or {ENV_PASSWORD}_FILE) or {ENV_TOKEN} (or {ENV_TOKEN}_FILE)"
        )
    return creds


@dataclass
class Login:
    """One browser's console session. ``user`` is ``None`` until it logs in."""

    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    user: str | None = None
    last_seen: float = 0.0
    #: What the last action did, shown once by the next page (never carried in a URL, where a
    #: crafted link could make the console say anything).
    flash: str = ""

    def take_flash(self) -> str:
        message, self.flash = self.flash, ""
        return message


class Logins:
    """The console's sessions, by cookie value. Idle ones end after ``idle_s``."""

    def __init__(self, clock: Clock, idle_s: float = 1800.0, capacity: int = 10_000) -> None:
        self._clock = clock
        self.idle_s = idle_s
        self._capacity = capacity
        self._by_id: dict[str, Login] = {}
        self._lock = threading.Lock()

    def get(self, sid: str | None) -> Login | None:
        now = self._clock.monotonic()
        with self._lock:
            login = self._by_id.get(sid) if sid else None
            if login is None:
                return None
            if now - login.last_seen > self.idle_s:
                del self._by_id[sid]  # type: ignore[arg-type]  # sid is set when found
                return None
            login.last_seen = now
            return login

    def start(self, user: str | None = None) -> tuple[str, Login]:
        """A new console session; a login starts a new one (a new id and CSRF token), so an id
        planted before the login is worth nothing after it."""
        login = Login(user=user, last_seen=self._clock.monotonic())
        sid = secrets.token_urlsafe(32)
        with self._lock:
            if len(self._by_id) >= self._capacity:
                self._expire()
            self._by_id[sid] = login
        return sid, login

    def end(self, sid: str | None) -> None:
        with self._lock:
            self._by_id.pop(sid or "", None)

    def _expire(self) -> None:
        now = self._clock.monotonic()
        for sid, login in list(self._by_id.items()):
            if now - login.last_seen > self.idle_s or login.user is None:
                del self._by_id[sid]


class Throttle:
    """Failed logins per client address: after ``limit`` within ``window_s`` that address is
    refused until the oldest of them leaves the window, so a password cannot be guessed at
    the speed of the network."""

    def __init__(self, clock: Clock, limit: int = 10, window_s: float = 900.0) -> None:
        self._clock = clock
        self.limit = limit
        self.window_s = window_s
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, remote: str, now: float) -> list[float]:
        kept = [t for t in self._failures.get(remote, []) if now - t < self.window_s]
        if kept:
            self._failures[remote] = kept
        else:
            self._failures.pop(remote, None)
        return kept

    def allowed(self, remote: str) -> bool:
        with self._lock:
            return len(self._recent(remote, self._clock.monotonic())) < self.limit

    def failed(self, remote: str) -> None:
        now = self._clock.monotonic()
        with self._lock:
            self._failures[remote] = [*self._recent(remote, now), now]


class Audit:
    """Every action the console takes, one line each: who, what, which session (its short
    hash), from where. To the ``sessionkeeper.admin.audit`` logger and, if given, a file."""

    def __init__(self, clock: Clock, path: str | Path | None = None) -> None:
        self._clock = clock
        self._path = Path(path) if path is not None else None
        self._lock = threading.Lock()

    def record(self, who: str, action: str, remote: str, **details: str) -> None:
        extra = " ".join(f"{k}={v!r}" for k, v in details.items())
        line = f"who={who!r} action={action} remote={remote} {extra}".rstrip()
        audit_log.info("%s", line)
        if self._path is not None:
            when = dt.datetime.fromtimestamp(self._clock.time(), dt.UTC).isoformat("T", "seconds")
            line = f"{when} {line}"
            with self._lock, self._path.open("a", encoding="utf-8") as f:
                f.write(line + "\n")
