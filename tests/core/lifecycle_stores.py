"""The store plumbing of the lifecycle state machine (``lifecycle_model.py``): one store that
every node of a run shares, an outage switch, and a way to read what is stored without the switch.

Any store class gets the outage switch through :func:`with_outages`: a subclass whose backend
hooks raise :class:`Outage` (one of its ``transient_errors``) while ``switch.down`` is set, so the
shared rules of ``Store`` (retries, ``StoreUnavailable``, ``failing()``) run as in a real outage.
MemoryStore is one object shared by every node; SQL and Redis stores are opened once per node,
as separate processes would, on one table or key prefix.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sessionkeeper.stores import (
    ExpiredSession,
    MemoryStore,
    RetryPolicy,
    SaveRequest,
    SaveResult,
    Store,
    StoredSession,
    Touch,
)


class Outage(ConnectionError):
    """What a driver raises while the store is down."""


@dataclass
class Switch:
    down: bool = False

    def check(self, op: str) -> None:
        if self.down:
            raise Outage(f"store down during {op}")


class _Outages(Store):
    """Mixin: every backend hook raises :class:`Outage` while ``switch.down``."""

    switch: Switch

    def _load(self, app: str, token: str) -> StoredSession | None:
        self.switch.check("load")
        return super()._load(app, token)  # type: ignore[safe-super]

    def _save_batch(self, requests: Sequence[SaveRequest]) -> list[SaveResult]:
        self.switch.check("save")
        return super()._save_batch(requests)  # type: ignore[safe-super]

    def _touch_batch(self, touches: Sequence[Touch]) -> None:
        self.switch.check("touch")
        super()._touch_batch(touches)  # type: ignore[safe-super]

    def _delete(self, app: str, token: str, tombstone_until: float) -> bool:
        self.switch.check("delete")
        return super()._delete(app, token, tombstone_until)  # type: ignore[safe-super]

    def _delete_expired(self, before: float, limit: int) -> list[ExpiredSession]:
        self.switch.check("delete_expired")
        return super()._delete_expired(before, limit)  # type: ignore[safe-super]

    def peek(self, app: str, token: str) -> StoredSession | None:
        """The stored session, read past the outage switch (the server itself is up)."""
        return super()._load(app, token)  # type: ignore[safe-super]


def with_outages(cls: type[Store]) -> type[Any]:
    return type(
        f"Outages{cls.__name__}",
        (_Outages, cls),
        {"transient_errors": (*cls.transient_errors, Outage)},
    )


#: Two attempts, no sleeping: an outage costs no real time.
FAST_RETRY = RetryPolicy(attempts=2, backoff_s=0.0)


@dataclass
class Plumbing:
    """How one run of the machine gets its stores. ``open_store()`` is called once per node
    incarnation; ``observer`` reads what is stored (``peek``); ``cleanup()`` drops everything."""

    open_store: Callable[[], Any]
    observer: Any
    switch: Switch
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def cleanup(self) -> None:
        for fn in reversed(self.cleanups):
            fn()


def memory_plumbing() -> Plumbing:
    switch = Switch()
    store = with_outages(MemoryStore)(retry=FAST_RETRY, sleep=lambda _s: None)
    store.switch = switch
    return Plumbing(open_store=lambda: store, observer=store, switch=switch)


def url_plumbing(
    cls: type[Store], url: str, cleanup: Callable[[], None] | None = None, **options: Any
) -> Plumbing:
    """Stores of ``cls`` opened from ``url`` with ``options`` (a table or key prefix), one per
    node; every one of them is closed, then ``cleanup`` runs."""
    switch = Switch()
    faulty = with_outages(cls)
    opened: list[Store] = []

    def open_store() -> Any:
        store = faulty(url, retry=FAST_RETRY, sleep=lambda _s: None, **options)
        store.switch = switch
        opened.append(store)
        return store

    observer = open_store()
    plumbing = Plumbing(open_store=open_store, observer=observer, switch=switch)

    def close_all() -> None:
        for store in opened:
            store.close()

    if cleanup is not None:
        plumbing.cleanups.append(cleanup)
    plumbing.cleanups.append(close_all)
    return plumbing


def sqlite_plumbing() -> Plumbing:
    from sessionkeeper.stores.sql import SqlStore

    tmp = tempfile.mkdtemp(prefix="sk-model-")
    return url_plumbing(
        SqlStore, f"sqlite:///{tmp}/sessions.db", lambda: shutil.rmtree(tmp, ignore_errors=True)
    )
