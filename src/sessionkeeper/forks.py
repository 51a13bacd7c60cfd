"""After ``os.fork()``: what a child process must not inherit, reset in one place.

An object that holds per-process state (a thread, locks, pooled connections, cached sessions)
registers a reset with :func:`at_fork_in_child`. ``os.register_at_fork(after_in_child=...)`` runs
every registered reset in the child right after the fork, before any other code of the child, in
the only thread the child has. So a reset needs no lock and finds none held by a thread of its
own, unlike a check of the pid on first use: that check must take a lock, which a thread of the
parent may have held at the fork, and which is then never released in the child.

Registrations hold their objects weakly: registering never keeps an object alive.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger("sessionkeeper")

T = TypeVar("T")

_resets: list[tuple[weakref.ref[Any], Callable[[Any], None]]] = []
_lock = threading.Lock()


def at_fork_in_child(owner: T, reset: Callable[[T], None]) -> None:
    """Call ``reset(owner)`` in every child forked from now on while ``owner`` lives, in the
    order of registration."""
    with _lock:
        _resets[:] = [(ref, fn) for ref, fn in _resets if ref() is not None]
        _resets.append((weakref.ref(owner), reset))


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # a thread of the parent may have held it at the fork
    for ref, reset in list(_resets):
        owner = ref()
        if owner is None:
            continue
        try:
            reset(owner)
        except Exception:  # one object's failure must not leave the others inherited
            log.exception("resetting %r after a fork failed", owner)


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)
