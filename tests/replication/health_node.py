"""One replicating node in its own process, for the replication-health tests:
``python -m tests.replication.health_node NATS_URL NAME SESSIONS``. It creates ``SESSIONS``
sessions (once it sees another member: a lone member refuses a change), prints ``ready``, and
serves until SIGTERM, when it closes (handing its sessions off)."""

from __future__ import annotations

import signal
import sys
import threading

import sessionkeeper as sk

KEY = "test cluster key"


def main(url: str, name: str, sessions: int) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    replication = sk.Replication(url, cluster="t", key=KEY, heartbeat_s=0.05, ack_timeout_s=1.0)
    m = sk.SessionManager("memory://", node=name, flush_poll_s=0.1, replication=replication)
    m.start()
    if sessions:
        assert m._replicator is not None
        assert m._replicator.members.wait_for(lambda live: len(live) > 1, 20)
        for i in range(sessions):
            with m.request("shop") as s:
                s["i"] = i
    print("ready", flush=True)
    stop.wait()
    m.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
