"""The console's pages and actions over WSGI (werkzeug's test client): authentication, CSRF,
short hashes, headers, listing, search, one session, invalidation, the audit log."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

import sessionkeeper as sk
from sessionkeeper.admin import AdminConsole, admin_app, short_hash
from sessionkeeper.admin.http import CSP
from sessionkeeper.errors import ConfigurationError
from sessionkeeper.stores import MemoryStore

from .helpers import HASH_LINK, PASSWORD, TOKEN, create, csrf_of, login


def token(sid: str) -> str:
    return sid.split(".")[0]


# -- credentials -------------------------------------------------------------------------------


def test_refuses_to_start_without_credentials(store: MemoryStore) -> None:
    with pytest.raises(ConfigurationError, match="no default"):
        admin_app(store, environ={})
    with pytest.raises(ConfigurationError, match="at least"):
        admin_app(store, environ={"SESSIONKEEPER_ADMIN_PASSWORD": "short"})


def test_credentials_from_the_environment_or_a_file(store: MemoryStore, tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    c1 = admin_app(store, environ={"SESSIONKEEPER_ADMIN_PASSWORD_FILE": str(secret)})
    c2 = admin_app(store, environ={"SESSIONKEEPER_ADMIN_TOKEN": TOKEN})
    assert c1.credentials.password == PASSWORD and c1.credentials.token is None
    assert c2.credentials.token == TOKEN and c2.credentials.check_password(TOKEN)
    with pytest.raises(ConfigurationError, match="cannot read"):
        admin_app(store, password_file=tmp_path / "missing", environ={})


# -- authentication and CSRF -------------------------------------------------------------------


def test_pages_need_a_login(client: Client) -> None:
    r = client.get("/")
    assert r.status_code == 303 and r.headers["Location"] == "/login"
    assert client.get("/apps/shop").status_code == 303
    assert client.post("/apps/shop/owners/invalidate", data={"owner": "x"}).status_code == 401


def test_login_checks_csrf_and_password_and_starts_a_new_console_session(client: Client) -> None:
    page = client.get("/login")
    before = client.get_cookie("skconsole")
    assert before is not None and before.http_only and before.same_site == "Strict"
    form = {"csrf": csrf_of(page), "user": "ops", "password": "wrong password!"}
    assert client.post("/login", data=form).status_code == 401
    assert client.post("/login", data={**form, "csrf": "forged"}).status_code == 403
    r = client.post("/login", data={**form, "password": PASSWORD})
    assert r.status_code == 303
    after = client.get_cookie("skconsole")
    assert after is not None and after.value != before.value  # no fixation
    assert client.get("/").status_code == 200


def test_failed_logins_are_throttled_per_address(
    client: Client, console: AdminConsole, clock: sk.FakeClock
) -> None:
    csrf = csrf_of(client.get("/login"))
    form = {"csrf": csrf, "user": "mallory", "password": "guess-0000000"}
    for _ in range(console.throttle.limit):
        assert client.post("/login", data=form).status_code == 401
    assert client.post("/login", data=form).status_code == 429
    assert client.post("/login", data={**form, "password": PASSWORD}).status_code == 429
    clock.advance(console.throttle.window_s)
    assert client.post("/login", data={**form, "password": PASSWORD}).status_code == 303


def test_every_post_needs_the_csrf_token(
    client: Client, manager: sk.SessionManager, store: MemoryStore
) -> None:
    sid = create(manager, "alice")
    csrf = login(client)
    h = short_hash("shop", token(sid))
    client.get("/apps/shop")
    for path, data in (
        (f"/apps/shop/sessions/{h}/invalidate", {}),
        ("/apps/shop/owners/invalidate", {"owner": "alice"}),
        ("/logout", {}),
    ):
        assert client.post(path, data=data).status_code == 403
        assert client.post(path, data={**data, "csrf": csrf + "x"}).status_code == 403
    assert store.load("shop", token(sid)) is not None
    assert client.get("/").status_code == 200  # still logged in


def test_a_bearer_token_needs_no_cookie_and_no_csrf(
    client: Client, manager: sk.SessionManager, store: MemoryStore
) -> None:
    create(manager, "alice")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/apps/shop", headers=auth).status_code == 200
    bad = {"Authorization": "Bearer not-the-token"}
    assert client.get("/apps/shop", headers=bad).status_code == 303
    r = client.post("/apps/shop/owners/invalidate", data={"owner": "alice"}, headers=auth)
    assert r.status_code == 303 and store.sessions_of("shop", "alice") == []


def test_logout_ends_the_console_session(client: Client) -> None:
    csrf = login(client)
    assert client.post("/logout", data={"csrf": csrf}).status_code == 303
    assert client.get("/").status_code == 303


# -- headers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/login", "/", "/apps/shop", "/static/admin.css", "/nowhere"])
def test_every_response_is_uncached_and_under_a_strict_csp(client: Client, path: str) -> None:
    login(client)
    r = client.get(path)
    assert r.headers["Cache-Control"] == "no-store"
    assert r.headers["Content-Security-Policy"] == CSP
    assert "script-src" not in CSP and "default-src 'none'" in CSP
    assert r.headers["X-Frame-Options"] == "DENY"
    assert r.headers["X-Content-Type-Options"] == "nosniff"


def test_unknown_page_and_wrong_method(client: Client) -> None:
    login(client)
    assert client.get("/nowhere").status_code == 404
    r = client.get("/apps/shop/owners/invalidate")
    assert r.status_code == 405 and r.headers["Allow"] == "POST"


# -- pages -------------------------------------------------------------------------------------


def test_overview_counts_per_app_and_charts_samples(
    client: Client, manager: sk.SessionManager, clock: sk.FakeClock
) -> None:
    create(manager, "alice")
    create(manager, "bob")
    create(manager, "carol", app="blog")
    login(client)
    first = client.get("/").get_data(as_text=True)
    assert re.search(r">shop</a></td><td>2</td>", first)
    assert re.search(r">blog</a></td><td>1</td>", first)
    assert "collecting samples" in first and "<polyline" not in first
    clock.advance(10)
    create(manager, "dave")
    second = client.get("/").get_data(as_text=True)
    assert "<polyline" in second and "last 4<" in second
    assert "<script" not in second and "style=" not in second


def test_listing_shows_hashes_never_ids(client: Client, manager: sk.SessionManager) -> None:
    sids = [create(manager, "alice", cart=[1, 2]), create(manager, None)]
    login(client)
    html = client.get("/apps/shop").get_data(as_text=True)
    for sid in sids:
        assert token(sid) not in html
        assert short_hash("shop", token(sid)) in html
    assert "cart" in html and "alice" in html and "30 min" in html  # attribute names, TTL
    assert ">a<" in html  # the node that wrote it


def test_listing_pages(make_console: Any, manager: sk.SessionManager, store: MemoryStore) -> None:
    client = Client(make_console(page_size=2))
    tokens = sorted(token(create(manager, f"u{i}")) for i in range(5))
    login(client)
    seen: list[str] = []
    url = "/apps/shop"
    for _ in range(3):
        html = client.get(url).get_data(as_text=True)
        seen += HASH_LINK.findall(html)
        m = re.search(r'id="next" href="([^"]+)"', html)
        if m is None:
            break
        url = m.group(1).replace("&amp;", "&")
        assert "after=" in url and not any(t in url for t in tokens)
    assert seen == [short_hash("shop", t) for t in tokens]


def test_an_app_name_that_needs_escaping(client: Client, manager: sk.SessionManager) -> None:
    sid = create(manager, "alice", app="my shop%20")
    login(client)
    overview = client.get("/").get_data(as_text=True)
    assert 'href="/apps/my%20shop%2520"' in overview
    html = client.get("/apps/my%20shop%2520").get_data(as_text=True)
    assert short_hash("my shop%20", token(sid)) in html


def test_search_by_owner(client: Client, manager: sk.SessionManager) -> None:
    mine = {token(create(manager, "alice")) for _ in range(2)}
    create(manager, "bob")
    login(client)
    html = client.get("/apps/shop?owner=alice").get_data(as_text=True)
    assert set(HASH_LINK.findall(html)) == {short_hash("shop", t) for t in mine}
    assert "Log alice out everywhere (2 sessions)" in html
    assert "no sessions of nobody" in client.get("/apps/shop?owner=nobody").get_data(as_text=True)


def test_one_session_hides_values_until_asked(
    client: Client, manager: sk.SessionManager, tmp_path: Path
) -> None:
    sid = create(manager, "alice", secret="hunter2-value", n=3)
    login(client, user="erin")
    h = short_hash("shop", token(sid))
    html = client.get(f"/apps/shop/sessions/{h}").get_data(as_text=True)
    assert "secret" in html and "hunter2-value" not in html and "hidden" in html
    assert token(sid) not in html
    shown = client.get(f"/apps/shop/sessions/{h}?values=1").get_data(as_text=True)
    assert "&#39;hunter2-value&#39;" in shown and "(json)" in shown
    audit = (tmp_path / "audit.log").read_text()
    assert "who='erin' action=show-values" in audit and f"session='{h}'" in audit
    assert client.get("/apps/shop/sessions/0123456789ab").status_code == 404


@pytest.mark.parametrize("serializer", ["json", "msgpack", "pickle"])
def test_values_are_decoded_for_every_serializer(
    serializer: str, store: MemoryStore, clock: sk.FakeClock, make_console: Any
) -> None:
    key = b"k" * 32 if serializer == "pickle" else None
    m = sk.SessionManager(
        store=store,
        clock=clock,
        node="a",
        housekeeping=False,
        serializer=serializer,
        pickle_key=key,
    )
    sid = create(m, "alice", cart={"apples": 3}, when=(1, 2))
    m.close(deadline_s=0)
    client = Client(make_console(serializer=serializer, pickle_key=key))
    login(client)
    h = short_hash("shop", token(sid))
    html = client.get(f"/apps/shop/sessions/{h}?values=1").get_data(as_text=True)
    assert "{&#39;apples&#39;: 3}" in html and "(1, 2)" in html
    wrong = Client(make_console(serializer="json"))
    login(wrong)
    if serializer != "json":
        text = wrong.get(f"/apps/shop/sessions/{h}?values=1").get_data(as_text=True)
        assert "not readable as json" in text


# -- actions -----------------------------------------------------------------------------------


def test_invalidate_one_session(
    client: Client, manager: sk.SessionManager, store: MemoryStore, tmp_path: Path
) -> None:
    sid, other = create(manager, "alice", n=1), create(manager, "alice")
    csrf = login(client)
    h = short_hash("shop", token(sid))
    page = client.get(f"/apps/shop/sessions/{h}")
    r = client.post(f"/apps/shop/sessions/{h}/invalidate", data={"csrf": csrf_of(page)})
    assert r.status_code == 303 and r.headers["Location"] == "/apps/shop"
    message = f"Session {h} invalidated."
    assert message in client.get("/apps/shop").get_data(as_text=True)
    assert message not in client.get("/apps/shop").get_data(as_text=True)  # shown once
    assert store.load("shop", token(sid)) is None and store.load("shop", token(other))
    node_b = sk.SessionManager(store=store, clock=manager.clock, node="b", housekeeping=False)
    with node_b.request(app="shop", session_id=sid) as s:  # its next request: a new session
        assert "n" not in s and s.token != token(sid)
    node_b.close(deadline_s=0)
    audit = (tmp_path / "audit.log").read_text()
    assert re.search(rf"who='ops' action=invalidate remote=\S+ app='shop' session='{h}'", audit)
    again = client.post(f"/apps/shop/sessions/{h}/invalidate", data={"csrf": csrf})
    assert again.status_code == 404


def test_invalidate_every_session_of_an_owner(
    client: Client, manager: sk.SessionManager, store: MemoryStore, tmp_path: Path
) -> None:
    alice = [token(create(manager, "alice")) for _ in range(3)]
    bob = token(create(manager, "bob"))
    csrf = login(client)
    r = client.post("/apps/shop/owners/invalidate", data={"csrf": csrf, "owner": "alice"})
    assert r.status_code == 303
    assert "3 sessions of alice invalidated." in client.get("/").get_data(as_text=True)
    assert store.sessions_of("shop", "alice") == [] and store.load("shop", bob) is not None
    assert all(store.load("shop", t) is None for t in alice)
    line = next(x for x in (tmp_path / "audit.log").read_text().splitlines() if "owner" in x)
    assert "action=invalidate-owner" in line and "owner='alice'" in line
    assert all(short_hash("shop", t) in line for t in alice)
    assert not any(t in line for t in alice)
    assert (
        client.post("/apps/shop/owners/invalidate", data={"csrf": csrf, "owner": " "}).status_code
        == 400
    )


def test_the_audit_log_has_every_action_and_a_time(
    client: Client, console: AdminConsole, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="sessionkeeper.admin.audit")
    page = client.get("/login")
    client.post("/login", data={"csrf": csrf_of(page), "user": "mallory", "password": "nope"})
    csrf = login(client, user="ops")
    client.post("/logout", data={"csrf": csrf})
    lines = (tmp_path / "audit.log").read_text().splitlines()
    assert [re.search(r"action=(\S+)", x).group(1) for x in lines] == [  # type: ignore[union-attr]
        "login-failed",
        "login",
        "logout",
    ]
    assert lines[0].startswith("2023-11-14T22:13:20+00:00 who='mallory'")
    assert [r.getMessage() for r in caplog.records] == [x.split(" ", 1)[1] for x in lines]
