"""A manager built before os.fork() works in the child (gunicorn --preload)."""

from __future__ import annotations

import os
import sys

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
