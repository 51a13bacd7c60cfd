"""``Resolver``: which ``Session`` object serves a presented id, loading it when needed.

The cached copy is trusted only when the id's node suffix names this node and the invalidation
feed is fresh (read lately, or read now: feed.py); otherwise the session
is loaded from the store (a failover) and merged into the cached copy, if any. An absent, invalid,
expired or foreign-owned id gets a new, not yet created session (a request that never writes to
it creates nothing). ``resolve`` may be called from any thread at once; only with ``allow_io``
does it read or write the store (``Lifecycle.begin_cached`` calls it without, on an event loop).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from . import ids
from .errors import AccessTimeout, CorruptSessionData, StoreError, StoreUnavailable
from .events import call_hook
from .logs import fields, session_hash
from .runtime import Runtime
from .serialization import place
from .session import Session, SessionHost
from .stores import StoredSession

log = logging.getLogger("sessionkeeper")

#: The keys set and removed in a replicated copy that the store does not have yet, and whether
#: its owner differs from the store's.
_Unwritten = tuple[set[str], set[str], bool] | None


class Resolver:
    def __init__(self, rt: Runtime, host: SessionHost) -> None:
        self._rt = rt
        self._host = host  # what every Session it makes calls back
        self._warned_affinity = False

    def resolve(
        self, app: str, session_id: str | None, owner: str | None, allow_io: bool, now: float
    ) -> Session | None:
        """The session serving ``session_id`` for a request that started at wall time ``now``
        (``Lifecycle`` reads the clock once per request)."""
        rt = self._rt
        parsed = ids.parse(session_id)
        if session_id and parsed is None:
            rt.stats.add("invalid_ids")
        if allow_io and not rt.feed.started:
            rt.start_feed()
        if parsed is None:
            return self._new(app, None, owner, now)
        token, node = parsed
        key = (app, token)
        here = node == rt.node
        cached = rt.cache.get(key)
        live = here and cached is not None and not cached.expired(now)
        if live and not rt.feed.fresh():
            if not self._feed_trusted(allow_io):
                return None
            cached = rt.cache.get(key)  # a catch-up may have dropped it
            live = cached is not None and not cached.expired(now)
        if live:
            assert cached is not None
            if owner is None or self._owner_ok(owner, cached.owner):
                rt.stats.add("cache_hits")
                return cached
        elif not allow_io:
            return None
        elif cached is None or not here:
            found = self._failover(app, token, cached, now, session_id, here)
            if found is not None and self._owner_ok(owner, found.owner):
                rt.stats.add("failovers")
                return found
        if cached is not None and cached.expired(now) and not cached.in_use:
            rt.cache.remove(key, cached)
        return self._new(app, token, owner, now)

    def _failover(
        self,
        app: str,
        token: str,
        cached: Session | None,
        now: float,
        session_id: str | None,
        here: bool,
    ) -> Session | None:
        """A miss, or an id naming another node: the store's copy (merged into ``cached``)."""
        self._rt.stats.add("cache_misses")
        if not here:
            self._affinity_break()
        return self._load(app, token, cached, now, session_id)

    def _new(self, app: str, token: str | None, owner: str | None, now: float) -> Session:
        """A new, not yet created session; under ``token`` (the presented one) only when apps
        share ids and another app's session uses it here."""
        rt = self._rt
        # Only when sharing is chosen does a new session take the id another app's session uses
        # here (one cookie for every app). Otherwise an attacker who plants the id of their own
        # session of one app would share the victim's new session of another (fixation).
        shared = (
            token is not None
            and rt.settings.share_ids_across_apps
            and rt.cache.other_app_holds(app, token)
        )
        s = Session(
            self._host,
            app,
            token if token is not None and shared else ids.new_token(),
            created_at=now,
            timeout_s=rt.settings.timeout_for(app),
            owner=owner,
            track_reads=rt.settings.contents == "accessed",
        )
        s.last_write_at = rt.clock.monotonic()  # an interval starts at creation
        return s

    def find(self, app: str, token: str) -> Session | None:
        """The live, created session of ``app`` under ``token``: this node's cached copy, else
        the store's (loaded into the cache), else ``None``. Reads the store; raises its errors."""
        now = self._rt.clock.time()
        cached = self._rt.cache.get((app, token))
        if cached is not None:
            return cached if cached.created and not cached.expired(now) else None
        found = self._load(app, token, None, now, None)
        return found if found is not None and found.created else None

    def _feed_trusted(self, allow_io: bool) -> bool:
        """Whether a cached copy may serve a cache hit: the feed was read lately (then it would
        have dropped a copy another node ended), or it could be read now. ``False`` only without
        ``allow_io`` (read it from a worker thread). If the store cannot be read at all, the
        outage rules serve the copy (counted as ``unverified_hits``; docs/security.md)."""
        feed = self._rt.feed
        if feed.fresh():
            return True
        if not allow_io:
            return False
        self._rt.stats.add("feed_catch_ups")
        if not self._rt.store_failing_quietly() and feed.catch_up():
            return True
        self._rt.stats.add("unverified_hits")
        return True

    def _owner_ok(self, presented: str | None, bound: str | None) -> bool:
        if presented is None or bound is None or presented == bound:
            return True
        self._rt.stats.add("owner_mismatches")
        return False

    def _affinity_break(self) -> None:
        self._rt.stats.add("affinity_breaks")
        # With replication the previous node hands its unwritten changes over: nothing to warn.
        deferred = self._rt.settings.policy.deferred and self._rt.replicator is None
        if deferred and not self._warned_affinity:
            self._warned_affinity = True
            log.warning(
                "a session moved between nodes under the deferred policy %s: the previous "
                "node's unwritten changes are not in the store yet. Route sessions back to "
                "their node (sticky load balancing) or use EndOfRequest.",
                self._rt.settings.policy.spec(),
            )

    def _load(
        self, app: str, token: str, cached: Session | None, now: float, session_id: str | None
    ) -> Session | None:
        if cached is None or not self._rt.settings.serialize_access:
            return self._load_unheld(app, token, cached, now, session_id)
        # A request holding the session must not see its copy replaced under it: the refresh
        # waits for the access lock, as a request would.
        if not cached.access_lock.acquire(timeout=self._rt.settings.access_wait_s):
            self._rt.stats.add("access_timeouts")
            raise AccessTimeout(
                f"session busy for more than access_wait_s={self._rt.settings.access_wait_s:g}"
            )
        try:
            return self._load_unheld(app, token, cached, now, session_id)
        finally:
            cached.access_lock.release()

    def _load_unheld(
        self, app: str, token: str, cached: Session | None, now: float, session_id: str | None
    ) -> Session | None:
        if cached is not None and cached.has_changes():
            self._rt.write([cached], immediate=True)  # ours first, so the load merges it
        try:
            # The store may find its row unreadable.
            stored, unwritten = self._stored(app, token, session_id)
            if stored is None or stored.expired(now):
                if cached is not None:
                    self._rt.cache.remove((app, token), cached)
                return None
            data = {
                k: self._rt.serializer.loads(v, place=place(app, token, k))
                for k, v in stored.attributes.items()
            }
        except CorruptSessionData as exc:
            self._rt.stats.add("corrupt_sessions")
            log.error(
                "session %s of app %r has unreadable data (%s): replaced by a new session",
                session_hash(app, token),
                app,
                exc,
                extra=fields(app, token, exc.code),
            )
            return None
        except StoreError as exc:
            if not isinstance(exc, StoreUnavailable):  # the store logs its own outages
                log.error(
                    "session %s of app %r could not be read: %s",
                    session_hash(app, token),
                    app,
                    exc,
                    extra=fields(app, token, exc.code),
                )
            raise
        if cached is not None:
            self._refresh(cached, stored, data)
            self._mark_unwritten(cached, unwritten)
            return cached
        s = Session(
            self._host,
            app,
            token,
            created_at=stored.created_at,
            timeout_s=stored.timeout_s,
            absolute_expires_at=stored.absolute_expires_at,
            last_access_at=stored.last_access_at,
            version=stored.version,
            owner=stored.owner,
            data=data,
            track_reads=self._rt.settings.contents == "accessed",
        )
        s.last_write_at = self._rt.clock.monotonic()  # the stored copy is as of now
        self._remember_stored(s, stored)
        self._mark_unwritten(s, unwritten)
        shared = self._rt.cache.add((app, token), s)
        if shared is s:
            for value in data.values():
                call_hook(value, "session_did_activate", s)
            self._rt.evict_over_capacity()
        return shared

    def _stored(
        self, app: str, token: str, session_id: str | None
    ) -> tuple[StoredSession | None, _Unwritten]:
        """With replication, the copy in the memory of a node the id names (this node then owns
        the session), at the store's version of it (0: not in the store), and the keys in which
        the store is behind it; else the store's row."""
        repl = self._rt.replicator
        route = ids.parse_route(session_id)
        copy = repl.recover(app, token, route[1]) if repl is not None and route else None
        row = self._rt.store.load(app, token)
        if copy is None:
            return row, None
        behind = row.attributes if row is not None else {}
        unwritten = (
            {k for k, v in copy.attributes.items() if behind.get(k) != v},
            {k for k in behind if k not in copy.attributes},
            row is not None and row.owner != copy.principal,  # SaveRequest.owner_changed
        )
        return dataclasses.replace(copy.as_stored(), version=row.version if row else 0), unwritten

    def _mark_unwritten(self, s: Session, unwritten: _Unwritten) -> None:
        """A copy taken over from another node's memory is dirty where the store is behind it
        (a deferred policy had not written it yet): the policy writes it from here."""
        if unwritten is None or not any(unwritten):
            return
        with s.lock:
            if unwritten[2]:
                s.changes.record_meta()
            for key in unwritten[0]:
                s.changes.record_set(key)
            for key in unwritten[1]:
                s.changes.record_delete(key)

    def _refresh(self, s: Session, stored: StoredSession, data: dict[str, Any]) -> None:
        """Take the stored copy into the cached one, unless the cached one is as new or newer
        (this node wrote it since the store was read): an older copy never replaces it."""
        with s.lock:
            if stored.version <= s.version and s.in_store:
                s.last_access_at = max(s.last_access_at, stored.last_access_at)
                return
            s.replace_data(data)
            s.version = stored.version
            s.last_access_at = max(s.last_access_at, stored.last_access_at)
            s.timeout_s = stored.timeout_s
            s.absolute_expires_at = stored.absolute_expires_at
            s.changes.forget_keys()
            self._remember_stored(s, stored)

    def _remember_stored(self, s: Session, stored: StoredSession) -> None:
        s.last_store_access_at = stored.last_access_at
        s.created = True
        s.in_store = stored.version > 0  # a replicated copy that the store never had is not
        if self._rt.settings.contents != "updated":  # what this copy changed: writer._blobs
            s.stored_hashes = {k: hash(v) for k, v in stored.attributes.items()}
