"""Replication's metric families: a scrape of each of two managers after real traffic between
them on a private nats-server (requests, a rogue frame, a takeover, a handoff at close)."""

from __future__ import annotations

import threading
from pathlib import Path

from prometheus_client import CollectorRegistry

import sessionkeeper as sk
from sessionkeeper import metrics
from tests.core.test_metrics import scrape, value
from tests.replication.conftest import MakeNode, NatsServer, wait_members, wait_until
from tests.replication.test_codec import sniffer
from tests.replication.test_handoff import route_of


def exporter_of(m: sk.SessionManager) -> metrics.Exporter:
    exporter = metrics.Exporter(CollectorRegistry())
    exporter.add(m)
    return exporter


def test_every_replication_number_of_stats_is_exposed(make_node: MakeNode) -> None:
    """A replication counter added to stats() without a metric fails here."""
    stats = make_node("a").stats()
    numbers = {k for k, v in stats.items() if k.startswith("replication_")}
    exposed = {k for f in metrics.REPLICATION_COUNTERS + metrics.REPLICATION_GAUGES for k in f.keys}
    assert numbers - exposed - metrics.COVERED == set()
    assert exposed - numbers == set()


def test_a_manager_without_replication_exposes_no_replication_family() -> None:
    m = sk.SessionManager("memory://", housekeeping=False)
    text = exporter_of(m).expose()[0].decode()
    assert "replication" not in text
    m.close()


def test_a_scrape_after_real_traffic_between_two_managers(
    make_node: MakeNode, nats: NatsServer
) -> None:
    a, b = make_node("a"), make_node("b")
    wait_members([a, b], 2)
    ea, eb = exporter_of(a), exporter_of(b)
    sids = []
    for i in range(3):
        with a.request("shop") as s:
            s["n"] = i
        with a.request("shop", s.id) as s:
            s["n"] = i + 10
        sids.append(s.id)
    with a.request("shop", sids[0]) as s:
        _ = s["n"]  # a read changes nothing: nothing is sent
    assert b._replicator is not None
    rogue = sniffer(nats.url, "nobody", [])
    try:
        assert wait_until(lambda: rogue.connected)
        assert rogue.request(b._replicator.subject("b"), b"\x00" * 40, 0.3) is None  # forged
    finally:
        rogue.close()

    sa, sb = scrape(ea), scrape(eb)
    sent = "sessionkeeper_replication_sent_total"
    assert value(sa, sent, kind="snapshot") == 3  # each session's first request: whole
    assert value(sa, sent, kind="delta") == 3
    received = "sessionkeeper_replication_received_total"
    assert value(sb, received, outcome="applied") == 6
    assert value(sb, received, outcome="refused") == 0
    assert value(sa, "sessionkeeper_replication_acks_total") == 6
    assert value(sa, "sessionkeeper_replication_ack_duration_seconds_count") == 6
    assert value(sa, "sessionkeeper_replication_ack_duration_seconds_sum") > 0
    assert value(sb, "sessionkeeper_replication_dropped_total", reason="forged") == 1
    assert value(sb, "sessionkeeper_replication_dropped_total", reason="replayed") == 0
    assert value(sa, "sessionkeeper_replication_messages_sent_total") == 6  # the requests
    assert value(sb, "sessionkeeper_replication_messages_sent_total") == 6  # their replies
    assert value(sa, "sessionkeeper_replication_sent_bytes_total") > 6 * 32  # signed frames
    assert value(sa, "sessionkeeper_replication_heartbeats_total") >= 1
    assert value(sa, "sessionkeeper_replication_members_alive") == 2
    assert value(sa, "sessionkeeper_replication_sessions_owned") == 3
    assert value(sa, "sessionkeeper_replication_underreplicated_sessions") == 0
    assert value(sa, "sessionkeeper_replication_retiring_sessions") == 0
    assert value(sb, "sessionkeeper_replication_backup_copies") == 3
    assert value(sa, "sessionkeeper_replication_connected") == 1
    assert value(sa, "sessionkeeper_replication_gap_seconds") == 0
    assert value(sa, "sessionkeeper_replication_async_window") == 1000

    with b.request("shop", sids[0]) as s:  # the balancer sent it to b: b takes it over
        assert s["n"] == 10
        s["n"] = 11
    assert route_of(s.id)[0] == "b"
    sa, sb = scrape(ea), scrape(eb)
    assert value(sb, "sessionkeeper_replication_takeovers_total") == 1
    assert value(sa, "sessionkeeper_replication_given_up_total") == 1
    assert value(sb, "sessionkeeper_replication_backup_copies") == 2
    assert value(sb, "sessionkeeper_replication_sessions_owned") == 1

    a.close()  # hands its two sessions to b
    sa, sb = scrape(ea), scrape(eb)
    handoffs = "sessionkeeper_replication_handoffs_total"
    assert value(sa, handoffs, direction="sent") == 2
    assert value(sb, handoffs, direction="received") == 2
    assert value(sa, "sessionkeeper_replication_connected") == 0
    b.close()  # nothing counts any more (beats, repairs): the scrape says what stats() says
    sb = scrape(eb)
    for key, number in b.stats().items():
        family = next(
            (f for f in metrics.REPLICATION_COUNTERS if key in f.keys and not f.label), None
        )
        if family is not None:
            assert value(sb, metrics.PREFIX + family.name) == number, key


def test_the_replication_gap_while_nats_is_down(make_node: MakeNode, nats: NatsServer) -> None:
    a, b = make_node("a"), make_node("b")
    wait_members([a, b], 2)
    assert a._replicator is not None
    ea = exporter_of(a)
    nats.stop()
    # The flag flips on the loop; the loss is counted on the worker right after.
    assert wait_until(lambda: not a._replicator.transport.connected)  # type: ignore[union-attr]
    assert wait_until(lambda: a.stats()["replication_disconnects"] == 1)
    samples = scrape(ea)
    assert value(samples, "sessionkeeper_replication_connected") == 0
    assert value(samples, "sessionkeeper_replication_gap_seconds") > 0
    assert value(samples, "sessionkeeper_replication_disconnects_total", event="lost") == 1
    assert value(samples, "sessionkeeper_replication_disconnects_total", event="regained") == 0
    nats.start()
    assert a._replicator.transport.wait_connected(10)
    assert wait_until(lambda: a.stats()["replication_reconnects"] == 1)
    samples = scrape(ea)
    assert value(samples, "sessionkeeper_replication_gap_seconds") == 0
    assert value(samples, "sessionkeeper_replication_disconnects_total", event="regained") == 1


def test_stats_crash_window_is_replications_not_the_policys(
    make_node: MakeNode, clock: sk.FakeClock, tmp_path: Path
) -> None:
    """``TimeBased(60)`` on SQLite alone may lose 62 s; with a backup acknowledging each change
    (sync) nothing; with ``ack="async"`` the age of the oldest change no backup acknowledged."""
    policy = sk.TimeBased(60)
    sync = make_node("a", store=f"sqlite:///{tmp_path / 'a.db'}", write=policy)
    asyn = make_node("b", store=f"sqlite:///{tmp_path / 'b.db'}", write=policy, ack="async",
                     ack_timeout_s=5.0)  # fmt: skip
    wait_members([sync, asyn], 2)
    assert sync.stats()["crash_window_s"] == 0
    with asyn.request("shop") as s:
        s["x"] = 1
    assert wait_until(lambda: asyn.stats()["replication_async_in_flight"] == 0)
    assert asyn.stats()["crash_window_s"] == 0 and asyn.stats()["replication_ack_lag_s"] == 0
    stalled = sync._replicator
    assert stalled is not None and stalled.transport._loop is not None
    resume = threading.Event()
    stalled.transport._loop.call_soon_threadsafe(resume.wait)  # the backup is paused
    try:
        with asyn.request("shop", s.id) as s:
            s["x"] = 2  # answered; its delta waits for the paused backup
        clock.advance(3)
        assert asyn.stats()["crash_window_s"] == 3
        assert asyn.stats()["replication_ack_lag_s"] == 3
    finally:
        resume.set()
    assert wait_until(lambda: asyn.stats()["replication_async_in_flight"] == 0)
    assert asyn.stats()["crash_window_s"] == 0


def test_the_ack_lag_forgets_a_session_no_longer_owned(
    make_node: MakeNode, clock: sk.FakeClock, tmp_path: Path
) -> None:
    """Alone (no backup) in front of a store, each change is answered unacknowledged: the lag
    grows from the oldest, and ends with the session (invalidated: no longer owned here)."""
    a = make_node("a", store=f"sqlite:///{tmp_path / 'a.db'}")
    with a.request("shop") as first:
        first["x"] = 1
    clock.advance(2)
    with a.request("shop") as second:
        second["x"] = 1
    clock.advance(1)
    assert a.stats()["replication_ack_lag_s"] == 3
    with a.request("shop", first.id) as s:
        s.invalidate()
    assert a.stats()["replication_ack_lag_s"] == 1  # the second one's
    with a.request("shop", second.id) as s:
        s.invalidate()
    assert a.stats()["replication_ack_lag_s"] == 0
