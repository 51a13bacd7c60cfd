"""Shared by the adapter tests."""

from __future__ import annotations

from sessionkeeper.errors import StoreUnavailable
from sessionkeeper.stores.base import StoredSession
from sessionkeeper.stores.memory import MemoryStore


class FlakyStore(MemoryStore):
    """A MemoryStore whose loads fail while ``down`` is set."""

    down = False

    def load(self, app: str, token: str) -> StoredSession | None:
        if self.down:
            raise StoreUnavailable("the test switched the store off")
        return super().load(app, token)
