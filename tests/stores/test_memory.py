from __future__ import annotations

import pytest

from sessionkeeper.stores import MemoryStore, Store

from .contract import StoreContract


@pytest.fixture
def store() -> Store:
    return MemoryStore()


class TestMemoryStore(StoreContract):
    pass
