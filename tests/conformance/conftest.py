"""Applies each conformance module's ``EXCLUDED`` and ``XFAIL`` tables (see ``tables.py``) to the
upstream tests it collected."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conformance import tables

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE not in item.path.parents:
            continue  # this hook sees the whole session's items: only ours are touched
        name = item.nodeid.split("::", 1)[1]
        module = getattr(item, "module", None)
        excluded = tables.entry(getattr(module, "EXCLUDED", {}), name)
        if excluded is not None:
            item.add_marker(pytest.mark.skip(reason=f"excluded: {excluded}"))
            continue
        xfail = tables.entry(getattr(module, "XFAIL", {}), name)
        if xfail is not None:
            item.add_marker(pytest.mark.xfail(strict=True, reason=xfail))
