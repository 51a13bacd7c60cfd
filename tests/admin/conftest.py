from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

import sessionkeeper as sk
from sessionkeeper.admin import AdminConsole, admin_app
from sessionkeeper.stores import MemoryStore

from .helpers import PASSWORD, TOKEN


@pytest.fixture
def clock() -> sk.FakeClock:
    return sk.FakeClock()


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def manager(store: MemoryStore, clock: sk.FakeClock) -> Iterator[sk.SessionManager]:
    m = sk.SessionManager(store=store, clock=clock, node="a", housekeeping=False)
    yield m
    m.close(deadline_s=0)


@pytest.fixture
def make_console(store: MemoryStore, clock: sk.FakeClock, tmp_path: Path) -> Iterator[Any]:
    made: list[AdminConsole] = []

    def make(**options: Any) -> AdminConsole:
        options.setdefault("password", PASSWORD)
        options.setdefault("token", TOKEN)
        options.setdefault("clock", clock)
        options.setdefault("audit_file", tmp_path / "audit.log")
        options.setdefault("environ", {})
        console = admin_app(store, **options)
        made.append(console)
        return console

    yield make
    for c in made:
        c.close()


@pytest.fixture
def console(make_console: Any) -> AdminConsole:
    c: AdminConsole = make_console()
    return c


@pytest.fixture
def client(console: AdminConsole) -> Client:
    return Client(console)
