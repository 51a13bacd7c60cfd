"""The transport's use of nats-py below its coroutine API (replication/natsio.py), on a real
nats-server: messages reach a :class:`Sink` in order, a written ``PUB`` keeps its place after
what nats-py queued, a request nobody serves is answered "no responders", and a request over
:class:`Transport` gets its own reply among many."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import nats as nats_py
import pytest

from sessionkeeper.replication import transport
from sessionkeeper.replication.natsio import Sink, no_responders, write_now
from sessionkeeper.replication.transport import Transport

from .conftest import NatsServer, SlowConnects, wait_until


def run(coro: Any) -> Any:
    return asyncio.new_event_loop().run_until_complete(coro)


def test_a_sink_gets_every_message_in_order_and_written_pubs_keep_their_place(
    nats: NatsServer,
) -> None:
    async def go() -> list[bytes]:
        got: list[bytes] = []
        done = asyncio.get_running_loop().create_future()

        def keep(msg: Any) -> None:
            got.append(bytes(msg.data))
            if len(got) == 200 and not done.done():
                done.set_result(None)

        sub_nc = await nats_connect(nats.url, errors)
        pub_nc = await nats_connect(nats.url, errors)
        await sub_nc.subscribe("t", future=Sink(keep))
        await sub_nc.flush()
        for i in range(100):  # queued by nats-py, then written past its flusher: in order
            await pub_nc.publish("t", b"q%d" % i)
            assert write_now(pub_nc, "t", "", b"w%d" % i)
        await asyncio.wait([done], timeout=10)
        stats.update(sent=pub_nc.stats["out_msgs"], received=sub_nc.stats["in_msgs"])
        stats.update(
            server_ids=(pub_nc._server_info.get("server_id"), sub_nc._server_info.get("server_id"))
        )
        await sub_nc.close()
        await pub_nc.close()
        return got

    errors: list[BaseException] = []
    stats: dict[str, Any] = {}
    got = run(go())
    want = [x for i in range(100) for x in (b"q%d" % i, b"w%d" % i)]
    # CI once saw the first ~50 pairs missing (never reproduced): say what each side counted
    assert got == want, (len(got), got[:4], stats, errors, nats.proc and nats.proc.poll())


def test_a_request_nobody_serves_is_answered_no_responders(nats: NatsServer) -> None:
    async def go() -> Any:
        nc = await nats_connect(nats.url)
        answers: list[Any] = []
        inbox = nc.new_inbox()
        await nc.subscribe(f"{inbox}.*", future=Sink(answers.append))
        await nc.flush()
        assert write_now(nc, "nobody.listens", f"{inbox}.1", b"hello")
        for _ in range(200):
            if answers:
                break
            await asyncio.sleep(0.01)  # waiting for the server's answer, not for time to pass
        await nc.close()
        return answers

    answers = run(go())
    assert len(answers) == 1 and no_responders(answers[0])


def test_write_now_declines_when_not_connected(nats: NatsServer) -> None:
    async def go() -> bool:
        nc = await nats_connect(nats.url)
        await nc.close()
        return write_now(nc, "t", "", b"x")

    assert run(go()) is False


def test_concurrent_requests_each_get_their_own_reply(nats: NatsServer) -> None:
    def echo(_subject: str, data: bytes) -> bytes:
        return b"re:" + data

    server = Transport(nats.url, None, lambda: ["echo"], echo, lambda _up: None, (60.0, noop))
    client = Transport(nats.url, None, lambda: ["unused"], echo, lambda _up: None, (60.0, noop))
    server.start()
    client.start()
    try:
        assert server.wait_connected(10) and client.wait_connected(10)
        replies: dict[int, bytes | None] = {}

        def ask(i: int) -> None:
            for j in range(20):
                replies[i * 100 + j] = client.request("echo", b"%d" % (i * 100 + j), 10)

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert replies == {k: b"re:%d" % k for k in replies} and len(replies) == 80
        assert client.request("nobody.listens", b"x", 10) is None
        assert wait_until(lambda: not client._waiting)
    finally:
        client.close()
        server.close()


def noop() -> None:
    pass


async def nats_connect(url: str, errors: list[BaseException] | None = None) -> Any:
    async def error_cb(e: BaseException) -> None:
        if errors is not None:
            errors.append(e)

    return await nats_py.connect(servers=[url], allow_reconnect=False, error_cb=error_cb)


def test_write_now_declines_a_message_over_the_servers_max_payload(nats: NatsServer) -> None:
    """nats-server closes a connection that sends a PUB over its ``max_payload``: such a message
    goes to nats-py's publish, which refuses it with its own error, and the connection stays."""

    async def go() -> tuple[bool, bool, bool]:
        nc = await nats_connect(nats.url)
        big = b"x" * (nc.max_payload + 1)
        declined = not write_now(nc, "t", "", big)
        refused = False
        try:
            await nc.publish("t", big)
        except nats_py.errors.MaxPayloadError:
            refused = True
        await nc.flush(timeout=5)  # answered: the server kept the connection
        connected = nc.is_connected
        await nc.close()
        return declined, refused, connected

    assert run(go()) == (True, True, True)


def test_the_first_attempt_is_waited_for_while_the_server_is_slow_to_accept(
    slow_nats: SlowConnects,
) -> None:
    # The server takes 0.8 s to accept (longer than ack_timeout_s, 0.5 s): a process's first
    # request waits for the connect under way instead of going on without the cluster (it
    # would serve a session no node can ask it for, or read a stale copy from the store).
    t = _transport(slow_nats.url)
    t.start()
    try:
        t.wait_first_attempt()
        assert t.connected
    finally:
        t.close(graceful=False)


def test_a_refused_first_attempt_ends_the_wait_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # NATS down: the connection is refused and the first request goes on without the cluster,
    # not after the bound (made 10 minutes here: the waiter would still be waiting).
    monkeypatch.setattr(transport, "FIRST_CONNECT_S", 600.0)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: refused
        t = _transport(f"nats://127.0.0.1:{port}")
        t.start()
        try:
            waiter = threading.Thread(target=t.wait_first_attempt)
            waiter.start()
            waiter.join(30)
            assert not waiter.is_alive()
            assert not t.connected
        finally:
            t.close(graceful=False)


def test_closing_ends_a_wait_for_the_first_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport, "FIRST_CONNECT_S", 600.0)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # accepts, never says INFO: the attempt waits CONNECT_TIMEOUT_S
        t = _transport(f"nats://127.0.0.1:{silent.getsockname()[1]}")
        t.start()
        waiter = threading.Thread(target=t.wait_first_attempt)
        waiter.start()
        t.close(graceful=False)
        waiter.join(30)
        assert not waiter.is_alive()


def _transport(url: str) -> Transport:
    return Transport(url, None, lambda: ["x"], lambda _s, _d: None, lambda _up: None,
                     (60.0, noop))  # fmt: skip
