"""Issue 13, Logs: no library log record names any part of a session id (a bearer credential);
each carries the session's short hash, the node and, about an error, its stable code."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

import sessionkeeper as sk
from sessionkeeper.admin import short_hash
from sessionkeeper.logs import RecordFields, session_hash
from sessionkeeper.wsgi import SessionMiddleware

from .conftest import MakeManager, RecordingStore, new_session
from .test_bad_input import app as echo_app
from .test_bad_input import tamper
from .test_write_isolation import RefusingStore
from .wsgi_util import call, environ


def token(sid: str) -> str:
    return sid.split(".")[0]


class Capture(logging.Handler):
    """Every record of the ``sessionkeeper`` loggers, through :class:`RecordFields` as
    ``deploy/logging.json`` attaches it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.addFilter(RecordFields())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured() -> Iterator[Capture]:
    handler, logger = Capture(), logging.getLogger("sessionkeeper")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def leaks(text: str, tokens: set[str]) -> list[str]:
    """Every 8-character piece of a token found in ``text``."""
    return [t[i : i + 8] for t in tokens for i in range(len(t) - 7) if t[i : i + 8] in text]


def main_paths(make: MakeManager, store: RecordingStore, clock: sk.FakeClock) -> set[str]:
    """A corrupt session, a failed write, an outage, a refused write, a feed drop; returns the
    tokens used."""
    a, b = make(node="a", write=sk.TimeBased(10), on_write_failure="defer"), make(node="b")
    corrupt = new_session(a, x=1)
    tamper(store, "shop", token(corrupt), "x", b"{not json")
    call(SessionMiddleware(echo_app, b, "shop"), environ(cookie=f"sessionid={corrupt}"))
    dropped = new_session(a, user="alice")
    a.flush()
    with b.request(app="shop", session_id=f"{token(dropped)}.b") as s:
        assert s["user"] == "alice"  # cached on b now
    with a.request(app="shop", session_id=dropped) as s:
        s.invalidate()
    b.housekeep()  # the feed drops b's copy
    failed = new_session(a, n=0)
    with a.request(app="shop", session_id=failed) as s:
        s["n"] = 1  # cached on a: written later
    store.down = True
    clock.advance(11)
    a.housekeep()  # the feed read fails
    a.flush_due()  # the write fails: an outage, kept dirty
    with pytest.raises(sk.StoreUnavailable), b.request(app="shop", session_id=failed):
        pass  # not cached on b: the outage reaches the request
    d = make(node="d", write=sk.EndOfRequest())
    with pytest.raises(sk.WriteRefused) as info, d.request(app="shop") as s:
        s["n"] = 1
        refused = s.token
    assert not leaks(str(info.value), {refused})  # what an adapter logs with its 503
    store.down = False
    a.flush()
    return {token(corrupt), token(dropped), token(failed), refused}


def test_no_record_names_any_part_of_a_session_id(
    make: MakeManager, store: RecordingStore, clock: sk.FakeClock, captured: Capture
) -> None:
    tokens = main_paths(make, store, clock)
    refusing = RefusingStore(lambda: sk.StoreError("value too large for this row"))
    m = make(node="c", store=refusing, write=sk.TimeBased(10))
    refused = new_session(m, n=0)
    refusing.refused.add(token(refused))
    with m.request(app="shop", session_id=refused) as s:
        s["n"] = 1
    clock.advance(11)
    m.flush_due()  # refused: kept dirty
    tokens.add(token(refused))
    e = make(node="e")
    emptied = new_session(e, n=1)
    store.down = True
    with e.request(app="shop", session_id=emptied) as s:
        s.clear()  # a logout by emptying: its end cannot reach the store, logged
    store.down = False
    tokens.add(token(emptied))
    assert any("emptied session" in r.getMessage() for r in captured.records)
    assert len(captured.records) >= 4
    for r in captured.records:
        text = f"{r.getMessage()} {r.args!r} {r.exc_text or ''}"
        assert not leaks(text, tokens), (r.name, r.getMessage())
    codes = {r.sk_code for r in captured.records}  # type: ignore[attr-defined]
    assert {"corrupt_session_data", "store_unavailable", "store_error"} <= codes, codes
    hashes = {session_hash("shop", t) for t in tokens}
    about = [r for r in captured.records if r.sk_session != "-"]  # type: ignore[attr-defined]
    assert about and all(r.sk_session in hashes for r in about)  # type: ignore[attr-defined]
    assert all(r.sk_session in r.getMessage() for r in about)  # type: ignore[attr-defined]
    node = {r.sk_code: r.sk_node for r in captured.records}  # type: ignore[attr-defined]
    assert node["corrupt_session_data"] == "b" and node["store_error"] == "c", node
    assert {r.sk_node for r in captured.records} <= {"a", "b", "c", "e"}  # type: ignore[attr-defined]


def test_a_record_of_another_logger_formats_with_defaults() -> None:
    fmt = logging.Formatter("%(message)s node=%(sk_node)s session=%(sk_session)s code=%(sk_code)s")
    record = logging.LogRecord("gunicorn.error", logging.INFO, __file__, 1, "booted", (), None)
    assert RecordFields().filter(record)
    assert fmt.format(record).startswith("booted node=")
    assert fmt.format(record).endswith(" session=- code=-")


def test_the_code_comes_from_the_exception_logged_and_given_fields_are_kept() -> None:
    exc: Any = sk.WriteRefused("refused")
    record = logging.LogRecord("sessionkeeper", logging.WARNING, __file__, 1, "%s", (exc,), None)
    record.sk_node = "n1"
    RecordFields().filter(record)
    assert (record.sk_code, record.sk_node) == ("write_refused", "n1")


def test_logs_and_the_console_show_one_hash() -> None:
    assert short_hash("shop", "t" * 32) == session_hash("shop", "t" * 32)
    assert len(session_hash("shop", "t" * 32)) == 12


def test_the_shutdown_line_names_unwritten_sessions_by_hash(
    make: MakeManager, store: RecordingStore, clock: sk.FakeClock, captured: Capture
) -> None:
    """close() logged every unwritten session's whole id."""
    m = make(write=sk.TimeBased(10), on_write_failure="defer")
    sid = new_session(m, n=0)
    with m.request(app="shop", session_id=sid) as s:
        s["n"] = 1
    store.down = True
    assert m.close(deadline_s=0) == [f"shop:{token(sid)}"]  # the return value keeps the ids
    line = [r for r in captured.records if "could not be written" in r.getMessage()]
    assert line and not leaks(line[0].getMessage(), {token(sid)})
    assert session_hash("shop", token(sid)) in line[0].getMessage()
