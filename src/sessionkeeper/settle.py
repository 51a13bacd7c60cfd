"""How a request's end settles its session's changes (``Lifecycle.finish_request``): kept, or
undone after a failed response; written now when the policy says so, and, when the write may be
refused (``on_write_failure="refuse"`` and the request changed its session), written while the
request still holds the session, its changes rolled back and :class:`WriteRefused` raised when
they cannot be made durable. A session the request emptied ends as by ``invalidate()``.

Each method that may do store I/O (``end_emptied``, ``write_or_refuse``) runs in the callable
``finish_request`` returns, in a worker thread under an event loop; the others never touch the
store. Each of those two, and ``release``, ends the request's hold on its session.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .errors import ManagerClosed, StoreError, WriteRefused
from .host import retire
from .logs import fields, session_hash
from .runtime import Runtime
from .session import Session

if TYPE_CHECKING:
    from .lifecycle import ActiveRequest

log = logging.getLogger("sessionkeeper")


class Settle:
    def __init__(self, rt: Runtime) -> None:
        self._rt = rt

    @staticmethod
    def emptied(active: ActiveRequest) -> bool:
        """The request left its created session empty, by changing it (deletes)."""
        s = active.session
        return s.created and not len(s) and s.changed_in(active.rid)

    def end_emptied(self, active: ActiveRequest) -> None:
        """End an emptied session as ``invalidate()`` does (its id tombstoned, never reused; the
        response deletes the cookie), while the request still holds it, unless another request
        set a key meanwhile. A store that fails leaves it an empty session, kept dirty."""
        s = active.session
        try:
            if s.created and not len(s):
                s.invalidate()
        except StoreError as exc:
            log.warning(
                "emptied session %s not ended: %s",
                session_hash(s.app, s.token),
                exc,
                extra=fields(s.app, s.token, exc.code),
            )
            s.changes.record_meta()  # written by the policy later, as the empty session it is
        finally:
            self.release(active)
            self._rt.evict_over_capacity()

    def release(self, active: ActiveRequest) -> None:
        s = active.session
        with s.lock:
            active.new_at_end = active.is_new
            s.active_requests -= 1
            if not s.active_requests:
                s.created_by = None  # per-request state: an idle cached session keeps none
        if active.locked:
            s.access_lock.release()

    def settle(self, active: ActiveRequest, ok: bool) -> tuple[bool, bool]:
        """Keep or undo the request's changes. Returns whether the session must be written now,
        and whether that write may be refused (then the undo log is kept for
        :meth:`write_or_refuse`)."""
        s, rules = active.session, self._rt.rules
        if s.created:
            # Counted as it ends (the request that created the session too), not as it starts:
            # a write inside it (sync) must not reset the count of a request still changing
            # things, so no more than n-1 ended requests' changes are ever unwritten.
            s.changes.record_request()
        if ok:
            write = s.created and rules.write_at_request_end(s, self._rt.clock.monotonic())
            guarded = write and self.refusable(active)
            if not guarded:
                s.end_undo(active.rid, revert=False)
            if s.created and not write and s.updates_since_write > active.updates_at_start:
                self._rt.stats.add("writes_saved")
            return write, guarded
        if s.end_undo(active.rid, revert=True):
            self._rt.stats.add("reverted_requests")
        if self.discard_if_unseen(active):
            return False, False
        return rules.write_after_failure(s), False

    def discard_if_unseen(self, active: ActiveRequest) -> bool:
        s = active.session
        if not self._rt.rules.discard_after_failure(s, created_here=active.is_new):
            return False
        self._drop_here(s)
        return True

    def _drop_here(self, s: Session) -> None:
        """``s`` is no longer a session of this process: not created, out of the cache, empty.
        Not created first, so that a repair running meanwhile copies nothing."""
        s.created = False
        self._rt.cache.remove((s.app, s.token), s)
        s.replace_data({})

    def discard_refused_new(self, active: ActiveRequest) -> None:
        """A session this request created, whose write reached the store but is refused all
        the same (ack="sync" with no durable store, and no backup took it): the 503 carries no
        id, so nothing may keep it. Deleted from the store (which took it a moment ago) and the
        cache, and forgotten by replication; else it would live on, unreachable, and be copied
        by the repairs. Should the delete fail, the row expires unreferenced."""
        s, rt = active.session, self._rt
        self._drop_here(s)
        if rt.replicator is not None:
            rt.replicator.forget(s.app, s.token)
        try:
            retire(rt, s.app, s.token, s.timeout_s, s.absolute_expires_at)
        except (StoreError, ManagerClosed) as exc:
            log.info(
                "refused new session %s not deleted: %s",
                session_hash(s.app, s.token),
                exc,
                extra=fields(s.app, s.token, exc.code),
            )

    def refusable(self, active: ActiveRequest) -> bool:
        """``on_write_failure="refuse"`` and the request changed its session."""
        return self._rt.settings.refuses_failed_writes and (
            active.is_new or active.session.changed_in(active.rid)
        )

    def write_or_refuse(self, active: ActiveRequest) -> None:
        """Write the session now; when that cannot be made durable (the store fails, or is
        being skipped during an outage: ``outage_backoff_s``), roll the request's changes back
        and raise :class:`WriteRefused`. Runs while the request still holds its session, so no
        other request sees a change that is then undone."""
        s, rt = active.session, self._rt
        written = False
        try:
            if rt.rules.defer_inline_write(rt.store):
                durable = False
            elif rt.persistence.store_closed:  # shutting down: kept dirty and logged, not refused
                rt.write([s], immediate=True)
                s.end_undo(active.rid, revert=False)
                return
            else:
                # In the batch of the request ends that overlap it (group commit). Not written:
                # the store failed, refused this session, or a conflict merging could not settle
                # (each kept dirty by the writer). Gone, invalidated elsewhere, is not refused:
                # that session ended.
                written = rt.write_at_request_end(s)
                durable = written or not (s.created and s.has_changes())
                if durable and rt.replicator is not None and s.created:
                    try:  # ack="sync": the backups have it on return
                        rt.replicator.after_request(s)
                    except StoreError as exc:  # no backup took it and no store holds it; fenced
                        log.debug(
                            "write refused for session %s: %s",
                            session_hash(s.app, s.token),
                            exc,
                            extra=fields(s.app, s.token, exc.code),
                        )
                        durable = False
            if durable:
                s.end_undo(active.rid, revert=False)
                return
            s.end_undo(active.rid, revert=True)
            if not self.discard_if_unseen(active) and written and active.is_new:
                self.discard_refused_new(active)
            rt.stats.add("refused_writes")
            raise WriteRefused(
                f"session {session_hash(s.app, s.token)}: the change could not be stored and was rolled back"
            )
        finally:
            self.release(active)
            rt.evict_over_capacity()
