"""``SessionManager``: the application's API to server-side sessions.

``request()`` serves one session, ``flush``/``flush_due``/``sweep``/``housekeep`` run what the
housekeeping thread runs, ``stats`` and ``close`` observe and stop. The adapters' protocol is
``manager.lifecycle`` (lifecycle.py); the options are ``manager.settings`` (config.py).

Thread safety: every public method may be called from any thread. One manager serves one process;
a forked child (gunicorn ``--preload``) starts with an empty cache, its own housekeeping thread
and its own store connections (:mod:`.forks`).
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import forks, logout, logs
from .cache import SessionCache
from .clock import Clock
from .config import OnWriteFailure, Settings, SettingsView
from .errors import CorruptSessionData, StoreError
from .events import EventBus, SessionListener
from .feed import InvalidationFeed
from .host import Host
from .housekeeping import Housekeeper, within_hours
from .lifecycle import ActiveRequest, Lifecycle
from .logs import session_hash
from .persistence import Persistence
from .policies import WritePolicy, WriteRules
from .replication import Replication
from .resolve import Resolver
from .runtime import Runtime
from .serialization import Serializer
from .session import Session
from .stats import Stats
from .stores import MemoryStore, Store, StoredSession, open_store
from .tracking import Tracking
from .writer import Contents, Writer

if TYPE_CHECKING:
    from .replication.node import Replicator

log = logging.getLogger("sessionkeeper")

_live_managers: weakref.WeakSet[SessionManager] = weakref.WeakSet()


class SessionManager(SettingsView):
    """Server-side sessions for one process. See the README for every option."""

    def __init__(
        self,
        store: str | Store = "sqlite:///sessions.db",
        *,
        write: WritePolicy | str | None = None,
        contents: Contents = "updated",
        timeout_s: float = 1800.0,
        app_timeouts_s: Mapping[str, float] | None = None,
        max_lifetime_s: float | None = None,
        app_max_lifetimes_s: Mapping[str, float] | None = None,
        node: str | None = None,
        serialize_access: bool = False,
        access_wait_s: float = 10.0,
        cache_size: int = 1000,
        overflow: bool = True,
        save_on_create: bool = True,
        save_period_s: float = 60.0,
        flush_poll_s: float = 1.0,
        sweep_interval_s: float = 300.0,
        sweep_hours: tuple[int, int] | None = None,
        sweep_grace_s: float = 0.0,
        sweep_batch: int = 1000,
        serializer: str | Serializer = "json",
        pickle_key: bytes | str | None = None,
        tracking: Tracking | None = None,
        retry_after_s: int = 5,
        outage_backoff_s: float = 1.0,
        on_write_failure: OnWriteFailure | None = None,
        shutdown_deadline_s: float = 10.0,
        clock: Clock | None = None,
        store_options: Mapping[str, Any] | None = None,
        housekeeping: bool = True,
        share_ids_across_apps: bool = False,
        replication: str | Replication | None = None,
    ) -> None:
        # First, while locals() holds exactly the keywords: Settings has a field for each
        # (a test checks that the two lists agree).
        self.settings = Settings(**{k: v for k, v in locals().items() if k != "self"})
        self.store = open_store(store, **dict(self.settings.store_options or {}))
        self.store.clock = self.clock
        self.store.set_grace_s(self.settings.grace_s)
        self.stats_counters = Stats()
        self.events = EventBus()
        self._cache = SessionCache(cache_size)
        self._feed = InvalidationFeed(
            self.store,
            self._cache,
            self.clock,
            self.stats_counters,
            poll_s=flush_poll_s,
            retention_s=min([timeout_s, *(t for t in (app_timeouts_s or {}).values() if t)]),
            write=lambda sessions: self._persistence.write(sessions, immediate=False),
            backoff_s=outage_backoff_s,
        )
        self._writer = Writer(
            self.store,
            self.serializer,
            self.stats_counters,
            contents,
            lambda: self._rt.node,
            may_recreate=self._feed.may_recreate,
        )
        rules = WriteRules(self.policy, save_on_create, save_period_s, outage_backoff_s)
        self._persistence = Persistence(
            store=self.store,
            cache=self._cache,
            writer=self._writer,
            rules=rules,
            stats=self.stats_counters,
            events=self.events,
            clock=self.clock,
        )
        self._rt = Runtime(
            self.settings,
            self.store,
            self._cache,
            self.stats_counters,
            self.events,
            self._writer,
            self._persistence,
            rules,
            self._feed,
        )
        # Joins the cluster at start() or the first request, in the process that serves (not
        # in a gunicorn --preload master, which would be a member that serves nothing).
        self._replicator = self._rt.replicator = self._make_replicator()
        self._host = Host(self._rt)
        self._resolver = Resolver(self._rt, self._host)
        self._host.find = self._resolver.find  # rotate_id() of a shared id finds the other apps'
        #: The adapters' protocol (see lifecycle.py).
        self.lifecycle = Lifecycle(self._rt, self._resolver.resolve, self._ensure_started)
        self._housekeeper = Housekeeper(self.housekeep, flush_poll_s, "housekeeping")
        # Monotonic: a step of the wall clock must neither stall the sweep nor rush it.
        self._next_sweep_mono = self.clock.monotonic() + sweep_interval_s
        self._closed = False
        self._close_lock = threading.Lock()
        _live_managers.add(self)
        forks.at_fork_in_child(self, SessionManager._after_fork)

    def _make_replicator(self) -> Replicator | None:
        config = self.settings.replication
        if not isinstance(config, Replication):
            return None
        from .replication.node import Replicator  # loads nats-py only where replication runs

        return Replicator(self._rt, config, durable_store=not isinstance(self.store, MemoryStore))

    def _after_fork(self) -> None:
        """In a forked child: the parent's cached sessions (and their locks) stay the parent's;
        the child serves from the store, and the parent writes what it left dirty. The
        housekeeping thread, the counters and the store's connections reset themselves."""
        self._cache.forget_all()
        self._close_lock = threading.Lock()

    # -- identity -----------------------------------------------------------------------------

    @property
    def node(self) -> str:
        """This process's node name: the one given, or host and pid (computed per process)."""
        return self._rt.node

    def timeout_for(self, app: str) -> float:
        return self.settings.timeout_for(app)

    def add_listener(self, listener: SessionListener) -> None:
        self.events.add(listener)

    def check_value(self, session: Session, key: str, value: Any) -> None:
        """Raise :class:`SerializationError` if ``value`` cannot be stored as ``session[key]``:
        what setting it checks (an adapter's private copy of a session checks it so)."""
        self._host.check_value(session, key, value)

    # -- the application's request ----------------------------------------------------------------

    def request(
        self, app: str = "default", session_id: str | None = None, *, owner: str | None = None
    ) -> RequestScope:
        """The session for one request, as a context manager (``with manager.request(...) as
        session``). Changes are written per the policy when the block exits normally; an
        exception rolls back the request's changes and writes nothing."""
        return RequestScope(self.lifecycle, app, session_id, owner)

    # -- logout everywhere (see logout.py) -----------------------------------------------------

    def sessions_of(self, app: str, owner: str) -> list[StoredSession]:
        """The sessions of ``app`` bound to ``owner`` (``request(owner=...)``), as the store holds
        them, in token order: a session a deferred policy has not written yet is not there."""
        return logout.sessions_of(self._rt, app, owner)

    def invalidate_owner(self, app: str, owner: str) -> int:
        """End every session of ``owner`` in ``app``, on every node: each is deleted from the
        store and tombstoned, as ``session.invalidate()`` does; this node drops its cached copies
        now, other nodes within their housekeeping's next poll (the tombstone feed). Fires each
        session's destroyed event once. Returns how many sessions it ended. Store I/O: call it
        from a worker thread in an async app."""
        return logout.invalidate_owner(self._rt, self._host, app, owner)

    # -- flushing (see persistence.py) ---------------------------------------------------------

    @logs.acting_node
    def flush(self) -> int:
        """Write every dirty session now, in one batch, and the access time of every session
        whose store copy is behind. Returns how many sessions were written."""
        return self._persistence.flush()

    @logs.acting_node
    def flush_due(self) -> int:
        """What the housekeeping thread does each poll: write the sessions the policy says are
        due, and the access time of those whose store copy is older than ``save_period_s``."""
        return self._persistence.flush_due()

    # -- housekeeping --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the housekeeping thread in this process now (an ASGI lifespan startup); the
        first request of a process starts it anyway."""
        self._ensure_started()

    def _ensure_started(self) -> None:
        if self._closed:
            return
        if self.settings.housekeeping:
            self._housekeeper.ensure_started()
        if self._replicator is not None:
            self._replicator.start()  # joins the cluster in the process that serves

    @logs.acting_node
    def housekeep(self) -> None:
        """One tick of the housekeeping thread: read the invalidation feed (dropping the copies
        it names, before they could be flushed), flush what is due, sweep when it is time.
        Tests with a fake clock call it directly."""
        if self._replicator is not None:
            self._replicator.housekeep()
        try:
            self._feed.poll()
        except StoreError as exc:
            log.warning("reading the invalidation feed failed: %s", exc)
        try:
            self.flush_due()
        except (StoreError, CorruptSessionData) as exc:
            log.warning("flush failed, dirty sessions kept: %s", exc)
        mono = self.clock.monotonic()
        if mono >= self._next_sweep_mono:
            self._next_sweep_mono = mono + self.settings.sweep_interval_s
            if within_hours(self.settings.sweep_hours, self.clock.time()):
                try:
                    self.sweep()
                except (StoreError, CorruptSessionData) as exc:
                    log.warning("sweep failed: %s", exc)

    @logs.acting_node
    def sweep(self) -> int:
        """End expired sessions: drop them from this cache, and delete from the store those that
        expired more than ``sweep_grace_s`` ago, firing their destroyed events (exactly one node
        gets each). Returns how many store sessions were deleted."""
        return self._persistence.sweep(self.sweep_grace_s, self.settings.sweep_batch)

    # -- observation and shutdown ------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters of this manager and of its store (``store_*``), plus gauges (``live``, ``dirty``,
        ``unwritten_age_s``; ``crash_window_s``, the most of it the policy allows, or with replication
        what a crash of this node may lose now: :meth:`Replication.crash_window_s`)."""
        out: dict[str, Any] = dict(self.stats_counters.snapshot())
        sessions = self._cache.snapshot()
        out["live"] = len(sessions)
        out["dirty"] = sum(1 for s in sessions if s.created and s.has_changes())
        # An upper bound of the oldest unwritten change's age: it was made after the last write.
        behind = [s.last_write_at for s in sessions if s.unwritten]
        out["unwritten_age_s"] = max(0.0, self.clock.monotonic() - min(behind)) if behind else 0.0
        out["crash_window_s"] = self.policy.max_loss(self.settings.flush_poll_s).seconds
        out["node"] = self.node
        out["policy"] = self.policy.spec()
        for key, value in self.store.stats.as_dict().items():
            out[f"store_{key}"] = value
        if self._replicator is not None:
            out.update(self._replicator.stats_view(out["crash_window_s"]))
        return out

    def replication_health(self) -> dict[str, Any]:
        """Whether every session this node owns has its ``replicas`` live copies (``healthy``),
        with the counts behind the answer; ``{"healthy": True, "enabled": False}`` without
        replication. A rolling restart waits for ``healthy`` before stopping the next node."""
        if self._replicator is None:
            return {"healthy": True, "enabled": False}
        return {"enabled": True, **self._replicator.health()}

    @logs.acting_node
    def close(self, deadline_s: float | None = None) -> list[str]:
        """Stop housekeeping, write every dirty session (retrying until ``deadline_s``, default
        ``shutdown_deadline_s``), and close the store. Returns the ids that could not be
        written, which are also logged. Idempotent. From its start, new requests raise
        :class:`ManagerClosed`; once the store is closed nothing is written through it (a request
        still in flight keeps its change in memory, dirty, and it is logged)."""
        with self._close_lock:
            if self._closed:
                return []
            self._closed = True
        self._rt.closed = True  # no new request from here on; those in flight may finish
        self._housekeeper.stop()
        if self._replicator is not None:
            try:
                self._replicator.close()  # owned sessions go to their backups first
            except Exception:
                log.exception("replication: the handoff at shutdown failed")
        # Real time, not self.clock: this bounds how long a process really waits to exit.
        deadline = time.monotonic() + (
            self.settings.shutdown_deadline_s if deadline_s is None else deadline_s
        )
        wait = threading.Event()
        while True:
            try:
                self.flush()
            except (StoreError, CorruptSessionData) as exc:
                log.warning("flush at shutdown failed: %s", exc)
            left = self._persistence.dirty()
            if not left or time.monotonic() >= deadline:
                break
            wait.wait(0.2)
        unwritten = [f"{s.app}:{s.token}" for s in left]
        if unwritten:
            log.error(
                "shutdown: %d sessions could not be written: %s",
                len(unwritten),
                ", ".join(f"{s.app}:{session_hash(s.app, s.token)}" for s in left),
            )
        self._persistence.store_closed = True  # what changes from now on stays in memory
        self.store.close()
        return unwritten

    def __enter__(self) -> SessionManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RequestScope:
    """What :meth:`SessionManager.request` returns: ``begin_request`` on entry, ``end_request``
    on exit (``ok`` unless the block raised). A class, not ``@contextmanager``: its generator
    costs every request about a microsecond. One use only, as a generator's would be."""

    __slots__ = ("_active", "_app", "_lifecycle", "_owner", "_session_id")

    def __init__(
        self, lifecycle: Lifecycle, app: str, session_id: str | None, owner: str | None
    ) -> None:
        self._lifecycle = lifecycle
        self._app = app
        self._session_id = session_id
        self._owner = owner
        self._active: ActiveRequest | None = None

    def __enter__(self) -> Session:
        if self._active is not None:
            raise RuntimeError("a request scope is entered once")
        self._active = self._lifecycle.begin_request(self._app, self._session_id, owner=self._owner)
        return self._active.session

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        active = self._active
        assert active is not None  # __enter__ returned
        self._lifecycle.end_request(active, ok=exc_type is None)


def close_all() -> None:
    """Close every manager of this process: for gunicorn's ``worker_exit`` hook and atexit."""
    for manager in list(_live_managers):
        try:
            manager.close()
        except Exception:
            log.exception("closing a session manager failed")


atexit.register(close_all)
