"""What each policy's crash window allows the demo to lose, and the final table."""

from __future__ import annotations

import re

import pytest

from sessionkeeper import (
    AfterRequests,
    AfterUpdates,
    EndOfRequest,
    Manual,
    MemoryStore,
    OnAttribute,
    Replication,
    TimeBased,
    WritePolicy,
)
from sessionkeeper.demo.driver import Ack, Counters, User
from sessionkeeper.demo.peers import Peers
from sessionkeeper.demo.report import (
    Crash,
    Found,
    allowed_losses,
    in_crash_window,
    outcome,
    read_store,
    table,
)
from sessionkeeper.stores import SaveRequest

CRASH = Crash("a", at_s=10.0)
# user 0: five updates on "a" at 1..5 s and two at 9.5 s; user 1: one on "a" at 9.9 s, one on "b";
# and one on "a" after the crash (its restarted incarnation).
ACKS = [Ack(0, s, "a", float(s)) for s in range(1, 6)] + [
    Ack(0, 6, "a", 9.5),
    Ack(0, 7, "a", 9.6),
    Ack(1, 1, "a", 9.9),
    Ack(1, 2, "b", 9.9),
    Ack(1, 3, "a", 11.0),
]


@pytest.mark.parametrize(
    ("policy", "allowed"),
    [
        (EndOfRequest(), 0),
        (OnAttribute(), 0),
        (TimeBased(1.0), 3),  # window 1 + 2 x 1 s poll: 9.5, 9.6, 9.9
        (TimeBased(4.0), 5),  # window 6 s: 5, 9.5, 9.6 for user 0 and 9.9 for user 1
        (AfterUpdates(3), 3),  # min(2, 7) + min(2, 1)
        (AfterRequests(1), 0),  # writes at every request: nothing waits
        (Manual(), 8),  # all eight acknowledged by "a" before it died
    ],
)
def test_allowed_losses(policy: WritePolicy, allowed: int) -> None:
    assert allowed_losses(policy, ACKS, CRASH) == allowed


def test_nothing_allowed_without_a_crash() -> None:
    assert allowed_losses(Manual(), ACKS, None) == 0


def test_read_store_and_outcome() -> None:
    store = MemoryStore()
    token = "t" * 32
    cart = b'[{"item":"fig","seq":1},{"item":"fig","seq":3}]'
    store.save_many([SaveRequest("shop", token, 0, 1.0, 1.0, 1e9, {"cart": cart})])
    store.save_many(
        [SaveRequest("shop", token, 1, 1.0, 2.0, 1e9, {"orders": b'[{"order":1,"seqs":[2]}]'})]
    )
    users = [User(0, session_id=f"{token}.a"), User(1)]
    found = read_store(store, users, now=3.0)
    assert found == Found(sessions=1, writes=2, seqs={0: {1, 2, 3}, 1: set()})
    acks = [Ack(0, 1, "a", 1.0), Ack(0, 2, "a", 1.0), Ack(0, 4, "a", 1.0)]
    result = outcome(EndOfRequest(), Counters(requests=5, changed=4), acks, found, None)
    assert (result.acknowledged, result.found, result.lost, result.ok) == (3, 2, 1, False)
    text = table(result)
    assert "lost updates" in text and "FAIL" in text
    assert re.search(r"writes saved +2 ", text)


@pytest.mark.parametrize(
    ("replication", "durable", "allowed"),
    [
        # Sync backups: a crash of one node loses nothing, whatever the policy allows alone.
        (Replication(ack="sync"), True, 0),
        (Replication(ack="sync"), False, 0),
        # Async: at most the deltas in flight, each a request, per session.
        (Replication(ack="async", async_window=1), False, 2),
        # The channel alone over memory://: everything the node acknowledged before it died.
        (Replication(replicas=0), False, 8),
    ],
)
def test_allowed_losses_with_replication(
    replication: Replication, durable: bool, allowed: int
) -> None:
    assert allowed_losses(Manual(), ACKS, CRASH, replication, durable) == allowed


def test_the_table_with_replication_shows_copies_handoffs_and_takeovers() -> None:
    users = [User(0, session_id="t" * 32 + ".a.b")]
    found = Found(sessions=1, writes=0, seqs={0: {1}})
    counts = {
        "replication_handoffs_received": 3,
        "replication_takeovers": 2,
        "replication_deltas": 5,
        "replication_snapshots": 1,
    }
    peers = Peers(counts, owned=4, copies=8, healthy=True)
    acks = [Ack(0, 1, "a", 1.0)]
    result = outcome(
        EndOfRequest(),
        Counters(requests=9, changed=4),
        acks,
        found,
        CRASH,
        Replication(),
        peers,
        durable_store=False,
    )
    text = table(result)
    assert result.ok and users[0].backups == ("b",)
    assert re.search(r"copies per session +2\.00 +8 copies of 4", text), text
    assert re.search(r"handoffs +3 ", text) and re.search(r"takeovers +2 ", text), text
    assert re.search(r"replication messages +6 .*1\.50 per changing request", text), text
    assert re.search(r"updates on the nodes +1 ", text), text
    assert "store writes" not in text and "writes saved" not in text


def test_an_answer_read_just_after_the_kill_is_still_in_the_crash_window() -> None:
    """The node answered, then died; the shopper read the answer a moment after the kill began.
    That update was acknowledged before the crash, so the crash window covers it (a chaos run
    under load failed its time-based check on exactly this)."""
    late_read = Ack(2, 1, "a", at_s=CRASH.at_s + 0.01, sent_s=CRASH.at_s - 0.005)
    after_restart = Ack(2, 2, "a", at_s=CRASH.at_s + 5.0, sent_s=CRASH.at_s + 4.9)
    assert in_crash_window(late_read, CRASH, window_s=7.0)
    assert not in_crash_window(after_restart, CRASH, window_s=7.0)
    assert not in_crash_window(Ack(2, 3, "a", at_s=1.0, sent_s=0.99), CRASH, window_s=7.0)
    assert allowed_losses(TimeBased(5.0), [late_read, after_restart], CRASH) == 1
