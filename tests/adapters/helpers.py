"""Shared by the adapter tests."""

from __future__ import annotations

from collections.abc import Sequence

from sessionkeeper.errors import StoreUnavailable
from sessionkeeper.stores.base import SaveRequest, SaveResult, StoredSession
from sessionkeeper.stores.memory import MemoryStore


class FlakyStore(MemoryStore):
    """A MemoryStore whose loads fail while ``down`` is set."""

    down = False

    def load(self, app: str, token: str) -> StoredSession | None:
        if self.down:
            raise StoreUnavailable("the test switched the store off")
        return super().load(app, token)


class WriteFailingStore(FlakyStore):
    """A FlakyStore whose writes also fail while ``writes_down`` is set."""

    writes_down = False

    def save_many(self, requests: Sequence[SaveRequest]) -> list[SaveResult]:
        if self.writes_down:
            raise StoreUnavailable("the test switched the store's writes off")
        return super().save_many(requests)
