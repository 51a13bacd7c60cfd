"""``sessionkeeper.admin``: a web console for live sessions (``pip install sessionkeeper[admin]``).

::

    from sessionkeeper.admin import admin_app
    application = admin_app("postgresql://app@db/app")   # credentials from the environment

or ``sessionkeeper admin STORE_URL --port 8900``. Pages: an overview (live counts per app and a
chart over time), the sessions of an app (paginated, searchable by owner), one session (values
hidden until asked), and the actions to invalidate one session or every session of an owner.
It refuses to start without credentials, the CLI binds to 127.0.0.1 unless told otherwise,
every POST carries a CSRF token, ids appear only as short hashes, responses are never cached and
carry a strict Content-Security-Policy, and every action goes to the audit log. See
``docs/operations.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

try:
    import jinja2  # noqa: F401  # only to say what is missing
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "sessionkeeper.admin needs Jinja2: pip install 'sessionkeeper[admin]'"
    ) from exc

from ..clock import Clock
from ..serialization import Serializer
from ..stores import Store, open_store
from .app import AdminConsole
from .auth import Credentials, load_credentials
from .views import short_hash


def admin_app(
    store_url_or_store: str | Store,
    *,
    password: str | None = None,
    password_file: str | Path | None = None,
    token: str | None = None,
    token_file: str | Path | None = None,
    serializer: str | Serializer = "json",
    pickle_key: bytes | str | None = None,
    metrics_urls: Sequence[str] = (),
    audit_file: str | Path | None = None,
    tombstone_grace_s: float = 3600.0,
    page_size: int = 50,
    sample_interval_s: float = 10.0,
    clock: Clock | None = None,
    environ: Mapping[str, str] | None = None,
) -> AdminConsole:
    """The console as a WSGI application. Credentials: the arguments, else
    ``SESSIONKEEPER_ADMIN_PASSWORD`` / ``SESSIONKEEPER_ADMIN_TOKEN`` (or ``..._FILE``) from
    ``environ`` (default ``os.environ``); none at all is a :class:`ConfigurationError`.
    ``serializer`` and ``pickle_key`` are the apps' own, to show values decoded;
    ``metrics_urls`` the nodes' ``/metrics``, for the chart; ``tombstone_grace_s`` is added to a
    session's timeout for the tombstone an invalidation leaves (at least the nodes' sweep
    grace)."""
    credentials = load_credentials(
        password=password,
        password_file=password_file,
        token=token,
        token_file=token_file,
        environ=environ,
    )
    store = (
        open_store(store_url_or_store)
        if isinstance(store_url_or_store, str)
        else store_url_or_store
    )
    return AdminConsole(
        store,
        credentials,
        serializer=serializer,
        pickle_key=pickle_key,
        metrics_urls=metrics_urls,
        audit_file=audit_file,
        tombstone_grace_s=tombstone_grace_s,
        page_size=page_size,
        sample_interval_s=sample_interval_s,
        clock=clock,
    )


__all__ = ["AdminConsole", "Credentials", "admin_app", "load_credentials", "short_hash"]
