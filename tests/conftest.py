"""Fixtures shared by the whole suite. Add yours below; keep them small and documented."""

from __future__ import annotations

import pytest

from tests import services


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """``postgresql://postgres@127.0.0.1:5432/test``, or a skip (a failure when
    ``SESSIONKEEPER_REQUIRE_SERVICES=1``). Shared server: use a unique table prefix
    (``services.unique_name()``) and drop your tables afterwards."""
    return services.require("postgres")


@pytest.fixture(scope="session")
def mysql_url() -> str:
    """``mysql://root@127.0.0.1:3306/test`` (MariaDB here), or a skip/failure as above."""
    return services.require("mysql")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """``redis://127.0.0.1:6379/0``, or a skip/failure as above. Shared server: use a unique
    key prefix (``services.unique_name()``) and delete your keys afterwards; never FLUSHDB."""
    return services.require("redis")
