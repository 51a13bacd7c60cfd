"""What the console's tests share: a store holding sessions written by a real manager, and a
logged-in test client."""

from __future__ import annotations

import re
from typing import Any

from werkzeug.test import Client, TestResponse

import sessionkeeper as sk

PASSWORD = "correct horse battery"
TOKEN = "t0ken-for-scripts-0123"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
HASH_LINK = re.compile(r'/sessions/([0-9a-f]{12})"')


def csrf_of(page: TestResponse) -> str:
    m = CSRF.search(page.get_data(as_text=True))
    assert m, page.get_data(as_text=True)
    return m.group(1)


def login(client: Client, user: str = "ops") -> str:
    """Log in; returns the console session's CSRF token."""
    page = client.get("/login")
    r = client.post("/login", data={"csrf": csrf_of(page), "user": user, "password": PASSWORD})
    assert r.status_code == 303, r.get_data(as_text=True)
    return csrf_of(client.get("/apps/shop"))


def create(m: sk.SessionManager, owner: str | None, app: str = "shop", **attrs: Any) -> str:
    with m.request(app=app, owner=owner) as s:
        s.update(attrs or {"user": owner})
        return s.id
