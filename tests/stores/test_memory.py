from __future__ import annotations

import pytest

from sessionkeeper.stores import MemoryStore, Store

from .contract import OwnerContract, StoreContract


@pytest.fixture
def store() -> Store:
    return MemoryStore()


class TestMemoryStore(StoreContract, OwnerContract):
    pass
