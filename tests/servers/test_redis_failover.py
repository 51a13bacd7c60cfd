"""A Redis master SIGKILLed mid-traffic, on a Sentinel set (master and two replicas) and on a
3x2 cluster (tests/servers/redis_ha.py): nothing the store acknowledged (``wait_replicas=1``: a
write reached a replica before it was acknowledged) is lost, no invalidated session comes back,
and requests for cached sessions keep being served while the failover runs.

Real time, not a FakeClock: the failover happens on the servers' clocks, and the manager's outage
rule (inline writes wait while the store is failing) is what is being exercised. The loop polls;
nothing asserts on durations.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

import sessionkeeper as sk
from sessionkeeper.errors import SessionKeeperError, StoreError
from sessionkeeper.stores import RetryPolicy, SaveRequest, SaveResult, SaveStatus
from sessionkeeper.stores.redis import RedisStore
from tests.services import unique_name

from .redis_ha import ClusterSet, Deployment, SentinelSet, start

pytestmark = pytest.mark.slow

SESSIONS = 30
READERS = 10
KILL_AFTER = 150  # requests before the kill
AFTER_RECOVERY = 150  # requests once the failover is over
DEADLINE_S = 90.0


class RecordingStore(RedisStore):
    """Remembers what the store acknowledged: the highest ``n`` saved per session, and every
    invalidation that returned. An invalidation that raised may still have happened (the
    master applied it and died before answering, or before the feed's entry that follows the
    tombstone): its session may be there or not, and counts as neither lost nor resurrected."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.acked: dict[str, int] = {}
        self.acked_writes = 0
        self.invalidated: set[str] = set()
        self.invalidating: set[str] = set()  # asked, whether acknowledged or not
        self._lock = threading.Lock()

    def save_many(self, requests: Sequence[SaveRequest]) -> list[SaveResult]:
        results = super().save_many(requests)
        with self._lock:
            for r, res in zip(requests, results, strict=True):
                if res.status is SaveStatus.SAVED and "n" in r.changed:
                    n = int(r.changed["n"])
                    self.acked[r.token] = max(self.acked.get(r.token, 0), n)
                    self.acked_writes += 1
        return results

    def delete(self, app: str, token: str, *, tombstone_until: float) -> bool:
        with self._lock:
            self.invalidating.add(token)
        live = super().delete(app, token, tombstone_until=tombstone_until)
        with self._lock:
            self.invalidated.add(token)
        return live


@dataclass
class Figures:
    requests: int = 0  # rounds: one cached read and one write each
    served_during_failover: int = 0
    cached_failed: int = 0
    invalidations_tried: int = 0
    invalidations_acked: int = 0
    acknowledged: int = 0
    lost: list[str] = field(default_factory=list)
    resurrected: list[str] = field(default_factory=list)


def one_request(m: sk.SessionManager, sid: str, change: bool) -> None:
    with m.request(app="shop", session_id=sid) as s:
        if change:
            s["n"] = s.get("n", 0) + 1
        else:
            assert s["reader"] is True


def new_session(m: sk.SessionManager, data: dict[str, Any]) -> str:
    with m.request(app="shop") as s:
        s.update(data)
    return s.id


class Traffic:
    """One node's requests: a write to one of the writers, a read of a cached reader, every
    tenth round a new session invalidated, every 25th a flush (the housekeeping's part)."""

    def __init__(self, m: sk.SessionManager, f: Figures) -> None:
        self.m, self.f = m, f
        self.writers = [new_session(m, {"n": 0}) for _ in range(SESSIONS)]
        self.readers = [new_session(m, {"reader": True}) for _ in range(READERS)]

    def round(self, i: int, during_failover: bool) -> None:
        f = self.f
        f.requests += 1
        try:
            one_request(self.m, self.readers[i % READERS], change=False)
            f.served_during_failover += during_failover
        except SessionKeeperError:
            f.cached_failed += 1
        with contextlib.suppress(SessionKeeperError):  # a failed write is kept dirty
            one_request(self.m, self.writers[i % SESSIONS], change=True)
        if i % 10 == 0:
            self.invalidate_one()
        if i % 25 == 0:
            with contextlib.suppress(StoreError):
                self.m.flush()

    def invalidate_one(self) -> None:
        self.f.invalidations_tried += 1
        with contextlib.suppress(SessionKeeperError):  # not acknowledged: the store failed
            sid = new_session(self.m, {"n": 1})
            with self.m.request(app="shop", session_id=sid) as s:
                s.invalidate()


def drive(d: Deployment, store: RecordingStore, f: Figures) -> None:
    """Traffic; the master of the first writer's keys killed after KILL_AFTER rounds; the
    failover awaited in a thread while traffic goes on, then AFTER_RECOVERY more rounds."""
    m = sk.SessionManager(store, write=sk.EndOfRequest(), housekeeping=False, node="a")
    try:
        traffic = Traffic(m, f)
        recovered = threading.Event()
        failover: threading.Thread | None = None
        rounds, deadline = 0, time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline and rounds < AFTER_RECOVERY:
            if f.requests == KILL_AFTER:
                key = store._session_keys("shop", traffic.writers[0].split(".")[0])[0]
                failover = threading.Thread(target=failover_of, args=(d, key, recovered))
                failover.start()
            traffic.round(f.requests, failover is not None and not recovered.is_set())
            rounds += recovered.is_set()
        assert recovered.is_set(), "the failover did not complete"
        assert failover is not None
        failover.join(30)
        final_flush(m)
    finally:
        m.close(deadline_s=5)


def failover_of(d: Deployment, key: str, recovered: threading.Event) -> None:
    d.recover(d.kill_master_of(key))
    recovered.set()


def final_flush(m: sk.SessionManager) -> None:
    """Every dirty session written, once the store answers (a node's housekeeping would do it)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            m.flush()
            return
        except StoreError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def check(d: Deployment, store: RecordingStore, f: Figures) -> None:
    fresh = RedisStore(d.url, key_prefix=store.key_prefix, retry=RetryPolicy(attempts=5))
    try:
        f.acknowledged = store.acked_writes
        f.invalidations_acked = len(store.invalidated)
        for token, n in store.acked.items():
            s = fresh.load("shop", token)
            if token in store.invalidating:
                continue  # gone if acknowledged (checked below), either way if not
            if s is None or int(s.attributes["n"]) < n:
                f.lost.append(token)
        f.resurrected = [t for t in store.invalidated if fresh.load("shop", t) is not None]
    finally:
        fresh.close()


def run(factory: Callable[[], Deployment]) -> Figures:
    d = start(factory)
    try:
        store = RecordingStore(
            d.url,
            key_prefix=unique_name("skfo") + ":",
            timeout_s=0.5,
            wait_replicas=1,
            wait_timeout_s=0.5,
            retry=RetryPolicy(attempts=2, backoff_s=0.05),
        )
        f = Figures()
        drive(d, store, f)
        check(d, store, f)
        print(f"\n{type(d).__name__}: {f}")
        return f
    finally:
        d.close()


@pytest.mark.parametrize(
    "factory", [lambda: SentinelSet(replicas=2), ClusterSet], ids=["sentinel", "cluster"]
)
def test_master_killed_mid_traffic(factory: Callable[[], Deployment]) -> None:
    f = run(factory)
    assert f.lost == [] and f.resurrected == []
    assert f.acknowledged > SESSIONS
    assert f.cached_failed == 0 and f.served_during_failover > 0


def written_through_failover(d: SentinelSet, switch: Callable[[], None]) -> tuple[int, int]:
    """Writes of one session without ``WAIT`` (each one command on a connection the store keeps
    out of the pool, stores/redis_held.py), then ``switch()`` moves the master and returns once
    the sentinel has finished, then one more write: it must land through the store's own
    retry. Returns the value read back from the new master and the master the client uses."""
    store = RedisStore(
        d.url,
        key_prefix=unique_name("skheld") + ":",
        timeout_s=0.5,
        retry=RetryPolicy(attempts=2, backoff_s=0.05),
    )
    m = sk.SessionManager(store, write=sk.EndOfRequest(), housekeeping=False, node="a")
    try:
        sid = new_session(m, {"n": 0})
        for _ in range(5):
            one_request(m, sid, change=True)
        held = store._runner.held
        assert held is not None and held.kept() == 1
        switch()
        one_request(m, sid, change=True)  # the kept connection reaches the old master
        fresh = RedisStore(d.url, key_prefix=store.key_prefix)
        try:
            stored = fresh.load("shop", sid.split(".")[0])
        finally:
            fresh.close()
        assert stored is not None
        return int(stored.attributes["n"]), int(
            store.client.connection_pool.get_master_address()[1]
        )
    finally:
        m.close(deadline_s=5)
        store.close()


def test_kept_connections_follow_a_sentinel_switch_to_a_live_old_master() -> None:
    """``SENTINEL FAILOVER``: the old master lives on, demoted; a kept connection to it gets
    READONLY, which redis-py's Sentinel connection turns into a connection error: the store
    lets every kept connection go, and its retry connects to the new master."""
    d = start(lambda: SentinelSet(replicas=1))
    try:
        n, client_master = written_through_failover(d, d.switch)
        assert n == 6 and client_master == d.master_port() != d.master.port
    finally:
        d.close()


def test_kept_connections_follow_a_sentinel_failover_after_a_crash() -> None:
    """The master SIGKILLed: a kept connection to it fails, and the retry finds the new one."""
    d = start(lambda: SentinelSet(replicas=2))
    try:
        n, client_master = written_through_failover(d, lambda: d.recover(d.kill_master_of("")))
        assert n == 6 and client_master == d.master_port() != d.master.port
    finally:
        d.close()
