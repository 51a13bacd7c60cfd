"""The cache's token index answers "does another app use this id here?" as a scan would; the
apps it has held."""

from __future__ import annotations

from typing import Any

import sessionkeeper as sk
from sessionkeeper.cache import SessionCache
from sessionkeeper.session import Session


def session(manager: sk.SessionManager, app: str, token: str, *, created: bool = True) -> Session:
    s = Session(manager._host, app, token, created_at=0.0, timeout_s=60)
    s.created = created
    return s


def test_other_app_holds_follows_adds_and_removes(make: Any) -> None:
    m = make()
    cache = SessionCache(10)
    t = "t" * 32
    shop, blog = session(m, "shop", t), session(m, "blog", t)
    assert not cache.other_app_holds("shop", t)
    cache.add(("shop", t), shop)
    assert not cache.other_app_holds("shop", t)  # its own app does not count
    assert cache.other_app_holds("blog", t)
    cache.add(("blog", t), blog)
    assert cache.other_app_holds("shop", t) and cache.other_app_holds("blog", t)
    assert not cache.remove(("shop", t), blog)  # not the cached object: nothing removed
    assert cache.other_app_holds("blog", t)
    assert cache.remove(("shop", t), shop)
    assert not cache.other_app_holds("blog", t) and cache.other_app_holds("shop", t)
    assert cache.remove(("blog", t))
    assert not cache.other_app_holds("shop", t) and not cache.other_app_holds("wiki", t)


def test_a_session_not_yet_created_does_not_count(make: Any) -> None:
    m = make()
    cache = SessionCache(10)
    t = "u" * 32
    cache.add(("shop", t), session(m, "shop", t, created=False))
    assert not cache.other_app_holds("blog", t)


def test_apps_are_every_app_ever_held_and_forgotten_with_the_cache(make: Any) -> None:
    m = make()
    cache = SessionCache(10)
    t = "v" * 32
    cache.add(("shop", t), session(m, "shop", t))
    cache.add(("blog", t), session(m, "blog", t))
    assert cache.remove(("blog", t))
    assert cache.apps() == {"shop", "blog"}  # evicted or removed: its rows may still be stored
    cache.forget_all()
    assert cache.apps() == frozenset()
