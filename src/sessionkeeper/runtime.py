"""``Runtime``: the parts of one manager that its lifecycle, resolution and session host share.

The manager builds one and hands it down, so that none of those modules calls up into the
manager. Every part is safe to use from any thread (each has its own locks); the runtime itself
only adds this process's node name, computed again in a forked child (:mod:`.forks`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from . import forks, ids
from .cache import SessionCache
from .clock import Clock
from .config import Settings
from .events import EventBus
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
    #: The manager's :class:`~.replication.node.Replicator`, when it replicates.
    replicator: Replicator | None = None
    _node_default: str = field(default="", init=False)

    def __post_init__(self) -> None:
        self._name_node()
        forks.at_fork_in_child(self, Runtime._name_node)

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

    def write(self, sessions: list[Session], *, immediate: bool, raise_errors: bool = False) -> int:
        return self.persistence.write(sessions, immediate=immediate, raise_errors=raise_errors)

    def evict_over_capacity(self, room: int = 0) -> None:
        self.persistence.evict_over_capacity(room)

    def store_failing(self) -> bool:
        """Whether an inline write waits for the flusher (``WriteRules.defer_inline_write``);
        counted as ``writes_deferred``."""
        if self.rules.defer_inline_write(self.store):
            self.stats.add("writes_deferred")
            return True
        return False
