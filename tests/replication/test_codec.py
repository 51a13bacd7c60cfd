"""The wire's checks: a forged, replayed, malformed, oversized, stale, foreign or fenced frame is
refused and counted, and a rogue publisher on a live cluster's subjects gets nothing applied."""

from __future__ import annotations

import hashlib
import hmac

import msgpack
import pytest

import sessionkeeper as sk
from sessionkeeper.replication.codec import Codec, Rejected
from sessionkeeper.replication.transport import Transport
from tests.replication.conftest import KEY, MakeNode, NatsServer, wait_members, wait_until


def codec(node: str, clock: sk.FakeClock, key: bytes = KEY, cluster: str = "t") -> Codec:
    return Codec(key, cluster, lambda: node, clock.time, max_bytes=4096, max_age_s=30)


def reason(c: Codec, frame: bytes) -> str:
    with pytest.raises(Rejected) as exc:
        c.decode(frame)
    return exc.value.reason


def test_a_signed_frame_is_read_once() -> None:
    clock = sk.FakeClock()
    a, b = codec("a", clock), codec("b", clock)
    frame = a.encode("delta", {"x": b"\x00\x01"})
    msg = b.decode(frame)
    assert (msg.kind, msg.node, msg.payload) == ("delta", "a", {"x": b"\x00\x01"})
    assert reason(b, frame) == "replayed"


def test_every_bad_frame_is_refused_with_its_reason() -> None:
    clock = sk.FakeClock()
    a, b = codec("a", clock), codec("b", clock)
    frame = a.encode("snap", {"v": 1})
    assert reason(b, frame[:-1] + bytes([frame[-1] ^ 1])) == "forged"
    assert reason(b, codec("a", clock, key=b"a guess").encode("hb", {})) == "forged"
    assert reason(b, b"short") == "malformed"
    body = b"\xc1 not msgpack"
    assert reason(b, hmac.digest(KEY, body, hashlib.sha256) + body) == "malformed"
    body = msgpack.packb({"t": "delta", "c": "t", "n": "a", "b": "x", "q": "1", "ts": 0, "p": {}})
    assert reason(b, hmac.digest(KEY, body, hashlib.sha256) + body) == "malformed"
    assert reason(b, a.encode("snap", {"blob": b"x" * 5000})) == "oversized"
    assert reason(b, codec("a", clock, cluster="other").encode("hb", {})) == "foreign"
    old = a.encode("hb", {})
    clock.advance(31)
    assert reason(b, old) == "stale"
    b.fence("a", a.boot)
    assert reason(b, a.encode("hb", {})) == "fenced"


def test_a_restarted_sender_is_heard_and_its_old_frames_are_not() -> None:
    clock = sk.FakeClock()
    a, b = codec("a", clock), codec("b", clock)
    first = a.encode("hb", {})
    b.decode(first)
    a.reset_identity()  # a new boot: sequence numbers start again
    b.decode(a.encode("hb", {}))
    assert reason(b, first) == "replayed"


def sniffer(url: str, subject: str, frames: list[bytes]) -> Transport:
    """A plain NATS client on ``subject``: what any client of the server can see and send."""

    def keep(_subject: str, data: bytes) -> None:
        frames.append(data)

    t = Transport(url, None, lambda: [subject], keep, lambda _up: None, (60.0, lambda: None))
    t.start()
    return t


def test_a_rogue_publisher_gets_nothing_applied(
    make_node: MakeNode, nats: NatsServer, clock: sk.FakeClock
) -> None:
    a, b = make_node("a"), make_node("b")
    wait_members([a, b], 2)
    assert b._replicator is not None
    subject = b._replicator.subject("b")
    seen: list[bytes] = []
    rogue = sniffer(nats.url, subject, seen)
    try:
        assert wait_until(lambda: rogue.connected)
        with a.request("shop") as s:
            s["n"] = 1
        with a.request("shop", s.id) as s:
            s["n"] = 2
        assert wait_until(lambda: len(seen) >= 2)
        copy = b._replicator.backups.held()[0]
        applied = b.stats()["replication_applied"]
        evil = copy.to_wire() | {"v": copy.version + 1, "at": {"n": b"666"}}
        frames = [
            codec("a", clock, key=b"a guess").encode("snap", evil),  # forged
            seen[0],  # replayed: a's own snapshot, signed, seen on the wire
            b"\x00" * 10,  # malformed: too short to carry a signature
            b"x" * (b._replicator.config.max_message_bytes + 1),  # oversized
        ]
        answers = [rogue.request(subject, frame, 0.3) for frame in frames]
    finally:
        rogue.close()
    assert answers == [None] * 4  # not even a refusal goes back
    stats = b.stats()
    assert stats["replication_applied"] == applied
    for why in ("forged", "replayed", "malformed", "oversized"):
        assert stats[f"replication_rejected_{why}"] == 1, (
            why,
            {k: v for k, v in stats.items() if k.startswith("repl")},
        )
    assert b._replicator.backups.held() == [copy]
    with b.request("shop", s.id) as s2:  # b takes over a's copy, as a sent it
        assert s2["n"] == 2


def test_a_copy_or_delta_speaks_for_its_sender_only(
    make_node: MakeNode, nats: NatsServer, clock: sk.FakeClock
) -> None:
    """A member's signed ``snap`` or ``delta`` names its sender as the owner: one naming another
    node (a rank it does not hold) is refused as a bad payload, and nothing of it applied."""
    a, b = make_node("a"), make_node("b")
    wait_members([a, b], 2)
    assert b._replicator is not None
    with a.request("shop") as s:
        s["n"] = 1
    copy = b._replicator.backups.held()[0]
    insider = codec("c", clock, cluster=b._replicator.codec._cluster)
    claims = [
        ("snap", copy.to_wire() | {"e": copy.epoch + 1, "at": {"n": b"666"}}),  # as a, above a
        ("delta", {"a": "shop", "k": copy.key[1], "o": "a", "e": copy.epoch, "bv": copy.version,
                   "v": copy.version + 1, "ch": {"n": b"666"}, "rm": [], "m": [0.0, 60.0]}),
    ]  # fmt: skip
    rogue = sniffer(nats.url, "unused", [])
    try:
        assert wait_until(lambda: rogue.connected)
        subject = b._replicator.subject("b")
        answers = [rogue.request(subject, insider.encode(k, p), 0.3) for k, p in claims]
    finally:
        rogue.close()
    assert answers == [None, None]
    assert b.stats()["replication_rejected_payload"] == 2
    assert b._replicator.backups.held() == [copy]
