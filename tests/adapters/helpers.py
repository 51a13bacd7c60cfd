"""Shared by the adapter tests."""

from __future__ import annotations

from collections.abc import Sequence

from sessionkeeper.errors import StoreUnavailable
from sessionkeeper.stores.base import SaveRequest, SaveResult, StoredSession
from sessionkeeper.stores.memory import MemoryStore


class FlakyStore(MemoryStore):
    """A MemoryStore whose loads, saves and deletes fail while ``down`` is set."""

    down = False

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable("the test switched the store off")

    def load(self, app: str, token: str) -> StoredSession | None:
        self._check()
        return super().load(app, token)

    def save_many(self, requests: Sequence[SaveRequest]) -> list[SaveResult]:
        self._check()
        return super().save_many(requests)

    def delete(self, app: str, token: str, *, tombstone_until: float) -> bool:
        self._check()
        return super().delete(app, token, tombstone_until=tombstone_until)


class WriteFailingStore(FlakyStore):
    """A FlakyStore whose writes also fail while ``writes_down`` is set."""

    writes_down = False

    def save_many(self, requests: Sequence[SaveRequest]) -> list[SaveResult]:
        if self.writes_down:
            raise StoreUnavailable("the test switched the store's writes off")
        return super().save_many(requests)
