"""A replicating manager built and used before os.fork() (gunicorn --preload): the child is a
new member under its own name, with its own connection, and its sessions are backed up."""

from __future__ import annotations

import os
import sys

import pytest

import sessionkeeper as sk
from sessionkeeper import ids
from tests.replication.conftest import KEY, NatsServer, wait_members


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_joins_as_a_member_of_its_own(nats: NatsServer) -> None:
    def make(node: str | None) -> sk.SessionManager:
        replication = sk.Replication(nats.url, cluster="t", key=KEY, heartbeat_s=0.05)
        return sk.SessionManager(
            "memory://", node=node, housekeeping=False, replication=replication
        )

    parent, peer = make(None), make("peer")
    parent.start()
    peer.start()
    wait_members([parent, peer], 2)
    with parent.request("shop") as s:
        s["n"] = 1
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never run pytest's teardown
        code = 1
        try:
            # The child joins under its own name; a change is acknowledged only once a backup
            # can take it (alone, it would be refused): wait to see the parent and the peer.
            parent.start()
            assert parent._replicator is not None
            parent._replicator.members.wait_for(lambda live: len(live) >= 3, 10)
            with parent.request("shop") as cs:
                cs["child"] = True
            route = (ids.parse_route(cs.id) or ("", ()))[1]
            ok = route[0] == parent.node and parent.node.endswith(str(os.getpid()))
            ok = ok and len(route) == 2 and parent.stats().get("replication_snapshots") == 1
            os.write(write, b"ok" if ok else f"bad {cs.id} {parent.stats()}".encode())
            code = 0
        except BaseException as exc:
            os.write(write, repr(exc).encode())
        finally:
            sys.stdout.flush()
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    report = os.read(read, 4000).decode()
    os.close(read)
    assert report == "ok" and os.waitstatus_to_exitcode(status) == 0
    with parent.request("shop", s.id) as s2:  # the parent goes on as before
        assert s2["n"] == 1
        s2["n"] = 2
    assert peer._replicator is not None
    assert len(peer._replicator.backups) >= 1
    for m in (parent, peer):
        m.close(deadline_s=1)
