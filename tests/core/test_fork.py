"""A manager built before os.fork() works in the child (gunicorn --preload)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import sessionkeeper as sk


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_manager_built_before_fork_works_in_the_child() -> None:
    m = sk.SessionManager("memory://", flush_poll_s=0.01, timeout_s=60)
    with m.request(app="shop") as s:  # starts the parent's housekeeping thread
        s["n"] = 1
    parent_node = m.node
    assert m._housekeeper.running
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never run pytest's teardown
        code = 1
        try:
            with m.request(app="shop", session_id=s.id) as cs:
                ok = cs.get("n") == 1  # names the parent node: read from the (copied) store
                cs["child"] = True
            ok = ok and m.node != parent_node and m.node.endswith(str(os.getpid()))
            ok = ok and m._housekeeper.running
            os.write(write, b"ok" if ok else f"bad {m.node}".encode())
            code = 0
        except BaseException as exc:
            os.write(write, repr(exc).encode())
        finally:
            sys.stdout.flush()
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    report = os.read(read, 1000).decode()
    os.close(read)
    assert report == "ok" and os.waitstatus_to_exitcode(status) == 0
    m.close(deadline_s=0)


def _in_child(check: Callable[[], str]) -> str:
    """Fork; run ``check`` in the child, which reports ``"ok"`` or what went wrong through a
    pipe and exits without running pytest's teardown. Returns the child's report."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.write(write, check().encode())
            code = 0
        except BaseException as exc:
            os.write(write, repr(exc).encode())
        finally:
            sys.stdout.flush()
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    report = os.read(read, 1000).decode()
    os.close(read)
    assert os.waitstatus_to_exitcode(status) == 0, report
    return report


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_starts_with_an_empty_cache_and_free_locks(tmp_path: Path) -> None:
    """gunicorn --preload: the parent served a request before forking, and still holds one (its
    session's access lock is held at the fork). The child must not see the parent's cached
    copies, nor wait for a lock no thread of its own will ever release, and serves from the
    store."""
    url = f"sqlite:///{tmp_path / 'sessions.db'}"
    m = sk.SessionManager(
        url, node="a", write=sk.Manual(), serialize_access=True, access_wait_s=0.5, timeout_s=60
    )
    with m.request(app="shop") as s:
        s["n"] = 1  # written: a new session is saved at the end of its first request
    sid = s.id
    with m.request(app="shop", session_id=sid) as s:
        s["n"] = 2  # Manual: only in the parent's cache

        def child() -> str:
            if m.stats()["live"] != 0:
                return f"inherited {m.stats()['live']} cached sessions"
            with m.request(app="shop", session_id=sid) as cs:  # would wait for the held lock
                if cs["n"] != 1:
                    return f"saw the parent's unwritten n={cs['n']}"
                cs["child"] = True
                cs.sync()
            return "ok"

        report = _in_child(child)
    assert report == "ok"
    stored = m.store.load("shop", sid.split(".")[0])
    assert stored is not None and stored.attributes["child"] == b"true"
    m.close(deadline_s=0)
