"""``Runtime``: the parts of one manager that its lifecycle, resolution and session host share.

The manager builds one and hands it down, so that none of those modules calls up into the
manager. Every part is safe to use from any thread (each has its own locks); the runtime itself
only adds this process's node name, computed again in a forked child (:mod:`.forks`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from . import forks, ids, logs
from .cache import SessionCache
from .clock import Clock
from .config import Settings
from .errors import ManagerClosed
from .events import EventBus
from .feed import InvalidationFeed
from .groupcommit import GroupCommit
from .persistence import Persistence
from .policies import WriteRules
from .serialization import Serializer
from .session import Session
from .stats import Stats
from .stores import Store
from .writer import Writer

if TYPE_CHECKING:  # the replication package is optional, loaded only when used
    from .replication.node import Replicator


@dataclass(eq=False)
class Runtime:
    settings: Settings
    store: Store
    cache: SessionCache
    stats: Stats
    events: EventBus
    writer: Writer
    persistence: Persistence
    rules: WriteRules
    feed: InvalidationFeed
    #: The manager's :class:`~.replication.node.Replicator`, when it replicates.
    replicator: Replicator | None = None
    #: Set when ``SessionManager.close`` begins: the lifecycle serves no new request.
    closed: bool = field(default=False, init=False)
    _node_default: str = field(default="", init=False)
    group: GroupCommit = field(init=False)

    def __post_init__(self) -> None:
        self._name_node()
        self.group = GroupCommit(
            lambda sessions: self.persistence.write_sessions(sessions, immediate=True)
        )
        forks.at_fork_in_child(self, Runtime._name_node)
        logs.register_node(self)  # records name this node (see logs.RecordFields)

    def _name_node(self) -> None:
        self._node_default = ids.default_node_name()  # host and pid: differs in each worker

    @property
    def clock(self) -> Clock:
        assert self.settings.clock is not None  # Settings gave the default
        return self.settings.clock

    @property
    def serializer(self) -> Serializer:
        return cast(Serializer, self.settings.serializer)  # Settings built it from the name

    @property
    def node(self) -> str:
        """This process's node name: the one given, or host and pid (computed per process)."""
        return self.settings.node or self._node_default

    def check_open(self) -> None:
        """Raise :class:`ManagerClosed` once ``close()`` has begun."""
        if self.closed:
            raise ManagerClosed("the session manager was closed; it serves no new request")

    def write(self, sessions: list[Session], *, immediate: bool, raise_errors: bool = False) -> int:
        self.start_feed()  # a session this process writes is cached after the feed's start
        return self.persistence.write(sessions, immediate=immediate, raise_errors=raise_errors)

    def start_feed(self) -> None:
        """Take the feed's end if this process has not yet: before the first store contact that
        puts a session in the cache (a load, a write), so every cached copy postdates the
        cursor. Only where the caller does store I/O anyway; skipped during an outage."""
        if not self.feed.started and not self.store_failing_quietly():
            self.feed.catch_up()

    def write_at_request_end(self, session: Session) -> bool:
        """A request's write: shares one batch with the request ends that overlap it
        (:mod:`.groupcommit`); returns once the batch holding it was written or failed, with
        whether this session was written."""
        self.start_feed()  # as in write(): a session written here is cached after the start
        return self.group.write(session)

    def evict_over_capacity(self, room: int = 0) -> None:
        self.persistence.evict_over_capacity(room)

    def store_failing(self) -> bool:
        """Whether an inline write waits for the flusher (``WriteRules.defer_inline_write``);
        counted as ``writes_deferred``."""
        if self.rules.defer_inline_write(self.store):
            self.stats.add("writes_deferred")
            return True
        return False

    def store_failing_quietly(self) -> bool:
        """Whether optional store reads (the feed's) wait out an outage, as inline writes do;
        not counted."""
        return self.rules.defer_inline_write(self.store)
