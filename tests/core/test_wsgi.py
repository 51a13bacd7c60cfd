"""The WSGI middleware: ordering of the write against the body, cookies, failures."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import sessionkeeper as sk
from sessionkeeper.tracking import Mode, Tracking
from sessionkeeper.wsgi import SessionMiddleware

from .conftest import MakeManager, RecordingStore
from .wsgi_util import call, environ


def setter(key: str = "n", value: Any = 1) -> Any:
    def app(env: dict[str, Any], start_response: Any) -> list[bytes]:
        env["sessionkeeper.session"][key] = value
        start_response("200 OK", [])
        return [b"ok"]

    return app


def test_write_happens_before_the_first_body_chunk(
    make: MakeManager, store: RecordingStore
) -> None:
    m = make()
    order: list[str] = []
    orig = store._save_batch

    def recording_save(requests: Any) -> Any:
        order.append("save")
        return orig(requests)

    store._save_batch = recording_save  # type: ignore[method-assign]

    def app(env: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        env["sessionkeeper.session"]["a"] = 1
        start_response("200 OK", [])

        def body() -> Iterator[bytes]:
            order.append("body consumed")
            yield b"chunk1"
            order.append("body consumed")
            yield b"chunk2"

        return body()

    mw = SessionMiddleware(app, m, "shop")
    env = environ()
    start: list[str] = []
    result = mw(env, lambda status, headers, exc_info=None: start.append(status))
    it = iter(result)
    first = next(it)
    order.append("first chunk released")
    assert first == b"chunk1"
    rest = list(it)
    assert rest == [b"chunk2"]
    assert order[:3] == ["save", "body consumed", "first chunk released"]


def test_lazy_app_that_starts_the_response_when_iterated(
    make: MakeManager, store: RecordingStore
) -> None:
    m = make()

    def app(env: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        env["sessionkeeper.session"]["a"] = 1
        start_response("200 OK", [])
        yield b"x"

    resp = call(SessionMiddleware(app, m, "shop"), environ())
    assert resp.status == 200 and resp.cookie is not None and store.written == 1


def test_cookie_set_only_when_it_changed(make: MakeManager) -> None:
    m = make()
    mw = SessionMiddleware(setter(), m, "shop")
    first = call(mw, environ())
    assert first.cookie is not None
    assert "HttpOnly" in first.cookie and "SameSite=Lax" in first.cookie
    assert "Secure" not in first.cookie
    sid = first.session_id
    second = call(mw, environ(cookie=f"sessionid={sid}"))
    assert second.status == 200 and second.cookie is None
    https = call(mw, environ(scheme="https"))
    assert https.cookie is not None and "Secure" in https.cookie


def test_no_session_no_cookie(make: MakeManager, store: RecordingStore) -> None:
    m = make()

    def app(env: dict[str, Any], start_response: Any) -> list[bytes]:
        _ = env["sessionkeeper.session"].get("x")
        start_response("200 OK", [])
        return [b""]

    resp = call(SessionMiddleware(app, m, "shop"), environ())
    assert resp.cookie is None and store.written == 0


def test_status_500_rolls_back_and_writes_nothing(make: MakeManager, store: RecordingStore) -> None:
    m = make()
    ok = call(SessionMiddleware(setter("n", 1), m, "shop"), environ())
    sid = ok.session_id
    written = store.written

    def failing(env: dict[str, Any], start_response: Any) -> list[bytes]:
        env["sessionkeeper.session"]["n"] = 2
        start_response("500 Internal Server Error", [])
        return [b"oops"]

    resp = call(SessionMiddleware(failing, m, "shop"), environ(cookie=f"sessionid={sid}"))
    assert resp.status == 500
    m.flush()
    assert store.written == written
    with m.request(app="shop", session_id=sid) as s:
        assert s["n"] == 1


def test_exception_rolls_back_and_writes_nothing(make: MakeManager, store: RecordingStore) -> None:
    m = make()
    sid = call(SessionMiddleware(setter("n", 1), m, "shop"), environ()).session_id
    written = store.written

    def raising(env: dict[str, Any], start_response: Any) -> list[bytes]:
        env["sessionkeeper.session"]["n"] = 2
        raise RuntimeError("boom")

    try:
        call(SessionMiddleware(raising, m, "shop"), environ(cookie=f"sessionid={sid}"))
    except RuntimeError:
        pass
    else:
        raise AssertionError("the exception must propagate")
    m.flush()
    assert store.written == written
    with m.request(app="shop", session_id=sid) as s:
        assert s["n"] == 1


def test_url_rewriting_strips_the_id_before_the_app_sees_the_path(make: MakeManager) -> None:
    m = make(tracking=Tracking(modes=(Mode.URL,)))
    seen: list[str] = []

    def app(env: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(env["PATH_INFO"])
        s = env["sessionkeeper.session"]
        s["n"] = s.get("n", 0) + 1
        start_response("200 OK", [])
        return [env["sessionkeeper.encode_url"]("/next?x=1").encode()]

    first = call(SessionMiddleware(app, m, "shop"), environ("/cart"))
    assert first.cookie is None  # URL mode sets no cookie
    link = first.body.decode()
    assert link.startswith("/next;sessionid=") and link.endswith("?x=1")
    sid = link.split("sessionid=")[1].split("?")[0]
    second = call(SessionMiddleware(app, m, "shop"), environ(f"/cart;sessionid={sid}"))
    assert seen == ["/cart", "/cart"] and second.status == 200
    with m.request(app="shop", session_id=sid) as s:
        assert s["n"] == 2


def test_header_mode(make: MakeManager) -> None:
    m = make(tracking=Tracking(modes=(Mode.HEADER,)))
    first = call(SessionMiddleware(setter(), m, "shop"), environ())
    [sid] = first.header("X-Session-Id")
    assert first.cookie is None
    second = call(SessionMiddleware(setter("n", 2), m, "shop"), environ(HTTP_X_SESSION_ID=sid))
    assert second.header("X-Session-Id") == []
    with m.request(app="shop", session_id=sid) as s:
        assert s["n"] == 2


def test_access_timeout_gives_503(make: MakeManager) -> None:
    m = make(serialize_access=True, access_wait_s=0.01)
    sid = call(SessionMiddleware(setter(), m, "shop"), environ()).session_id
    held = m.lifecycle.begin_request("shop", sid)
    resp = call(SessionMiddleware(setter(), m, "shop"), environ(cookie=f"sessionid={sid}"))
    assert resp.status == 503 and resp.header("Retry-After")
    m.lifecycle.end_request(held, ok=True)
    assert m.stats()["access_timeouts"] == 1


def test_affinity_break_through_wsgi_re_sets_the_cookie(make: MakeManager) -> None:
    a, b = make(node="a"), make(node="b")
    sid = call(SessionMiddleware(setter(), a, "shop"), environ()).session_id
    assert sid is not None and sid.endswith(".a")
    resp = call(SessionMiddleware(setter("m", 2), b, "shop"), environ(cookie=f"sessionid={sid}"))
    assert resp.session_id == sid[:-2] + ".b"


def test_unserializable_value_is_a_500_of_the_app_not_a_crash(make: MakeManager) -> None:
    m = make()
    try:
        call(SessionMiddleware(setter("bad", object()), m, "shop"), environ())
    except sk.SerializationError as exc:
        assert exc.key == "bad"
    assert m.stats()["live"] == 0


def test_a_new_session_of_a_failed_request_sets_no_cookie(make: MakeManager) -> None:
    m = make()

    def app(env: dict[str, Any], start_response: Any) -> list[bytes]:
        env["sessionkeeper.session"]["x"] = 1
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
        return [b"boom"]

    resp = call(SessionMiddleware(app, m, "shop"), environ())
    assert resp.status == 500 and resp.cookie is None
    assert m.stats()["live"] == 0


def operation(name: str, lazy: bool) -> Any:
    """An app that calls ``session.<name>()`` (rotate_id at login, invalidate at logout, sync);
    ``lazy``: a generator, so that it runs when the body is first iterated."""

    def app(env: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        s = env["sessionkeeper.session"]
        s["n"] = 2
        getattr(s, name)()
        start_response("200 OK", [])
        yield b"ok"

    return app if lazy else lambda env, start: list(app(env, start))


@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("name", ["rotate_id", "invalidate", "sync"])
def test_a_session_operation_during_an_outage_is_503(
    make: MakeManager, store: RecordingStore, name: str, lazy: bool
) -> None:
    m = make()
    sid = call(SessionMiddleware(setter(), m, "shop"), environ()).session_id
    store.down = True
    app = SessionMiddleware(operation(name, lazy), m, "shop")
    resp = call(app, environ(cookie=f"sessionid={sid}"))
    assert resp.status == 503 and resp.header("Retry-After") == ["5"]
    assert resp.cookie is None  # the id did not change: nothing to tell the browser
    assert m.stats()["unavailable"] == 1
    store.down = False
    with m.request(app="shop", session_id=sid) as s:
        assert s["n"] == 1  # the request's change was rolled back


def test_a_changed_request_whose_write_is_refused_answers_503_and_reads_still_work(
    make: MakeManager, store: RecordingStore
) -> None:
    """Defect 13 through WSGI: EndOfRequest refuses what it cannot make durable."""

    def app(env: dict[str, Any], start_response: Any) -> list[bytes]:
        s = env["sessionkeeper.session"]
        if env["PATH_INFO"] == "/incr":
            s["n"] = s.get("n", 0) + 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(s.get("n")).encode()]

    mw = SessionMiddleware(app, make(write=sk.EndOfRequest(), outage_backoff_s=0), "shop")
    sid = call(mw, environ("/incr")).session_id
    store.down = True
    resp = call(mw, environ("/incr", cookie=f"sessionid={sid}"))
    assert resp.status == 503 and resp.header("Retry-After") == ["5"]
    assert resp.body == b"Session store unavailable, please retry.\n" and resp.cookie is None
    resp = call(mw, environ("/read", cookie=f"sessionid={sid}"))
    assert resp.status == 200 and resp.body == b"1"  # rolled back, served from the cache
    store.down = False
    assert call(mw, environ("/incr", cookie=f"sessionid={sid}")).body == b"2"


def test_vary_cookie_where_the_session_was_accessed(make: MakeManager) -> None:
    m = make()
    first = call(SessionMiddleware(setter(), m, "shop"), environ())
    assert first.header("Vary") == ["Cookie"]

    def reader(env: dict[str, Any], start_response: Any) -> list[bytes]:
        env["sessionkeeper.session"].get("n")
        start_response("200 OK", [])
        return [b""]

    def untouched(env: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b""]

    cookie = f"sessionid={first.session_id}"
    read = call(SessionMiddleware(reader, m, "shop"), environ(cookie=cookie))
    assert read.cookie is None and read.header("Vary") == ["Cookie"]
    assert (
        call(SessionMiddleware(untouched, m, "shop"), environ(cookie=cookie)).header("Vary") == []
    )
