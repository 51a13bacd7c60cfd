"""``Host``: what the manager layer does when a ``Session`` reports a change (session.SessionHost).

A ``Session`` records its own changes and calls these hooks, from the thread that changed it,
outside its own lock: a value is checked when set (``_validate_value``, which also creates
the session on its first write), listeners hear of changes (``_attribute_changed``), and
``sync()``, ``invalidate()`` and ``rotate_id()`` write to or delete from the store here. Any hook
may do store I/O: an inline write (OnAttribute, AfterUpdates), or, creating a session with
``overflow=False``, the eviction that writes a dirty session to make room. On an async adapter's
event loop (``offloop.on_event_loop``) the inline write is not made: the end of the request
writes the session (the policy says so, the change being there), in a worker thread, before the
response is sent; the store work of ``sync()``, ``invalidate()`` and ``rotate_id()`` is deferred
to the response start (``offloop.defer``), their in-memory part done at once. Nothing outside the manager layer calls a host.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import ids, offloop
from .errors import CacheFull, ManagerClosed, SerializationError, StoreError
from .events import _PLAIN_TYPES, AttributeEvent, DestroyReason, SessionEvent, call_hook
from .policies import WritePolicy
from .runtime import Runtime
from .serialization import JsonSerializer, json_cannot_fail, place
from .session import _MISSING, Session, current_request
from .stores.records import tombstone_until

#: ``(app, token) -> the live session of app under token, cached or loaded`` (``Resolver.find``).
Find = Callable[[str, str], "Session | None"]


class Host:
    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self._json = type(rt.serializer) is JsonSerializer  # plain scalars need no check
        # A policy that never writes inside a set or delete (it keeps the base class's
        # ``at_attribute_change``) is not asked on every one.
        policy = rt.settings.policy
        self._inline_writes = (
            type(policy).at_attribute_change is not WritePolicy.at_attribute_change
        )
        #: Set by the manager once its resolver exists (the resolver is built with this host).
        self.find: Find | None = None

    @property
    def _node(self) -> str:
        return self._rt.node

    def _suffix(self, session: Session) -> str:
        rt = self._rt
        repl = rt.replicator
        return rt.node if repl is None else repl.suffix(session)

    def _validate_value(self, session: Session, key: str, value: Any) -> None:
        # check_value's first test inline: every set of a plain scalar ends there.
        if not (self._json and json_cannot_fail(value, self._rt.store.max_value_bytes)):
            self.check_value(session, key, value)
        if not session.created:
            self._create(session)

    def check_value(self, session: Session, key: str, value: Any) -> None:
        """Raise :class:`SerializationError` if ``value`` cannot be stored as ``session[key]``
        (unserializable, or over the store's size limit)."""
        limit = self._rt.store.max_value_bytes  # known once the store has connected
        if not (self._json and json_cannot_fail(value, limit)):
            try:
                blob = self._rt.serializer.dumps(
                    value, place=place(session.app, session.token, key)
                )
            except (TypeError, ValueError, RecursionError) as exc:
                raise SerializationError(key, value, str(exc)) from exc
            if limit is not None and len(blob) > limit:
                raise SerializationError(key, value, f"{len(blob)} bytes, over the store's {limit}")

    def _now(self) -> float:
        return self._rt.clock.time()

    def _metadata_changed(self, session: Session) -> None:
        if not session.created:
            self._create(session)
        session.changes.record_meta()

    def _create(self, s: Session) -> None:
        if not self._rt.settings.overflow and self._rt.cache.over_capacity() >= 0:
            self._rt.evict_over_capacity(room=1)  # idle sessions make room before a refusal
        if not self._rt.settings.overflow and self._rt.cache.over_capacity() >= 0:
            self._rt.stats.add("refusals")
            raise CacheFull(
                f"the session cache is full ({self._rt.cache.capacity} sessions) and overflow=False"
            )
        lifetime = self._rt.settings.max_lifetime_for(s.app)
        with s.lock:
            s.created = True
            s.created_by = current_request.get()
            if lifetime is not None and s.absolute_expires_at is None:  # unless set per session
                s.absolute_expires_at = s.created_at + lifetime
        self._rt.cache.add((s.app, s.token), s)
        self._rt.stats.add("created")
        if self._rt.events:
            self._rt.events.emit("session_created", SessionEvent(s.app, s.token, s))

    def _attribute_changed(self, session: Session, key: str, old: Any, new: Any) -> None:
        # call_hook returns at once for plain types; checked here first, it is not even called.
        if old is not new:
            if old is not _MISSING and type(old) not in _PLAIN_TYPES:
                call_hook(old, "value_unbound", session, key)
            if new is not _MISSING and type(new) not in _PLAIN_TYPES:
                call_hook(new, "value_bound", session, key)
        if self._rt.events:
            if new is _MISSING:
                self._rt.events.emit("attribute_removed", AttributeEvent(session, key, old))
            elif old is _MISSING:
                self._rt.events.emit("attribute_added", AttributeEvent(session, key, new))
            else:
                self._rt.events.emit("attribute_replaced", AttributeEvent(session, key, new, old))
        if (
            self._inline_writes
            and self._rt.settings.policy.at_attribute_change(session)
            and not offloop.on_event_loop()  # no store call on the loop: the request's end writes it
            and not self._rt.store_failing()
        ):
            self._rt.write([session], immediate=True)

    def _sync(self, session: Session) -> None:
        if not session.created:
            self._create(session)
        if not offloop.defer(lambda: self._write_created(session)):
            self._rt.write([session], immediate=True, raise_errors=True)

    def _write_created(self, s: Session) -> None:
        """A deferred ``sync()``: unless a later operation of the request ended ``s`` meanwhile."""
        if s.created:
            self._rt.write([s], immediate=True, raise_errors=True)

    def _invalidate(self, s: Session) -> None:
        if offloop.on_event_loop() and s.created:
            # The loop takes no lock a store call may hold: the delete is deferred (a write of
            # the old id in flight is then met by its tombstone), the session ends now.
            app, token, timeout_s, dl = s.app, s.token, s.timeout_s, s.absolute_expires_at
            if offloop.defer(lambda: self._retire_after_writes(s, app, token, timeout_s, dl)):
                self._rt.cache.remove((s.app, s.token), s)
                self._ended(s)
                return
        with s.write_lock:
            if s.in_store:
                self._retire(s.app, s.token, s.timeout_s, s.absolute_expires_at)
            self._rt.cache.remove((s.app, s.token), s)
        self._ended(s)

    def _retire_after_writes(
        self, s: Session, app: str, token: str, timeout_s: float, deadline: float | None
    ) -> None:
        with s.write_lock:  # a write of the old id in flight ends first
            self._retire(app, token, timeout_s, deadline)

    def end_cached(self, s: Session) -> None:
        """``s``'s store copy was deleted by this node (``invalidate_owner``): drop the cached
        copy and end it as :meth:`_invalidate` does, without a second delete."""
        with s.write_lock:  # a write of it in flight ends first, then meets the tombstone
            self._rt.cache.remove((s.app, s.token), s)
        self._ended(s)

    def _ended(self, s: Session) -> None:
        was_created = s.created
        old_token = s.token
        if self._rt.replicator is not None:
            self._rt.replicator.forget(s.app, old_token)  # the tombstone replicates
        values = s.reset_as_new(ids.new_token(), self._rt.clock.time())
        if not was_created:
            return
        self._rt.stats.add("invalidated")
        for key, value in values.items():
            call_hook(value, "value_unbound", s, key)
        if self._rt.events:
            self._rt.events.emit(
                "session_destroyed", SessionEvent(s.app, old_token, s, DestroyReason.INVALIDATED)
            )

    def _rotate_id(self, s: Session) -> None:
        if not s.created:
            self._create(s)
        others = None
        if self._rt.settings.share_ids_across_apps:
            # The others first: should one fail (the store down), this session keeps its id
            # and the login can be retried; the others moved are only lost to this browser.
            app, old = s.app, s.token
            others = lambda new: self._rotate_sharing_apps(app, old, new)  # noqa: E731
        self._move(s, ids.new_token(), before=others)

    def _rotate_sharing_apps(self, app: str, old: str, new: str) -> None:
        """Move every other app's session under ``old`` to ``new``, so that the shared cookie
        names them all and the pre-login id none: those cached here, and those in the store of
        every app this node has held a session of (the store keys rows by app and token; an app
        this node never served is not known to it). Other nodes' cached copies of the old id go as
        those of any retired id do: through the old rows' tombstones."""
        assert self.find is not None  # the manager set it
        for other in sorted(self._rt.cache.apps() - {app}):
            shared = self.find(other, old)
            if shared is not None:
                self._move(shared, new)

    def _move(self, s: Session, new: str, before: Callable[[str], None] | None = None) -> None:
        """Give ``s`` the token ``new``: stored whole under it first (after ``before(new)``), the
        old row retired after. The id changes at once; on an event loop the store work is
        deferred (``offloop``), and a failure there gives the old id back, as here."""
        old, stored = s.token, s.in_store
        with s.lock:
            old_version = s.version
            s.token = new
            if stored:  # stored whole under the new token
                s.version, s.in_store = 0, False

        def store() -> None:
            moved_on = s.token != new  # a later operation of the request (invalidate) ended it
            try:
                if before is not None:
                    before(new)
                if stored and not moved_on:
                    self._rt.write([s], immediate=True, raise_errors=True)
                    if not s.in_store:
                        raise StoreError("the session could not be stored under its new id")
            except BaseException:
                with s.lock:
                    if s.token == new:
                        s.token = old
                        if stored:
                            s.version, s.in_store = old_version, True
                raise
            if stored:
                self._retire(s.app, old, s.timeout_s, s.absolute_expires_at)
            self._rt.cache.remove((s.app, old), s)
            if not moved_on:
                self._rt.cache.add((s.app, new), s)
            if self._rt.replicator is not None:
                self._rt.replicator.forget(s.app, old)  # the new id replicates at the request's end

        if not offloop.defer(store):
            store()

    def _retire(self, app: str, token: str, timeout_s: float, deadline: float | None) -> None:
        retire(self._rt, app, token, timeout_s, deadline)


def retire(rt: Runtime, app: str, token: str, timeout_s: float, deadline: float | None) -> None:
    """Delete a session from the store, leaving a tombstone (and a feed entry) for as long as a
    copy on another node may still try to write it: until it would have expired (its timeout,
    or its deadline if earlier), plus the sweep's grace."""
    if rt.persistence.store_closed:
        raise ManagerClosed("the session manager was closed; nothing is deleted")
    now = rt.clock.time()
    until = tombstone_until(now, timeout_s, deadline, rt.settings.grace_s)
    rt.store.delete(app, token, tombstone_until=until)
