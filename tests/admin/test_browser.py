"""The console in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``, installed by ``scripts/ensure-chromium.sh`` when missing) driven by
Selenium, against the console and a two-node shop on one SQLite store, each served by a real
WSGI server on loopback. It logs in, lists, searches by owner, opens a session, is refused a
POST without the CSRF token, invalidates the session (whose next request then gets a new, empty
session) and logs the owner out everywhere, taking a screenshot of each page.

Screenshots go to the test's temporary folder, so a test run leaves the committed
``docs/admin/*.png`` as they are. To regenerate those (after changing the console's pages), run
this module with ``SESSIONKEEPER_UPDATE_SCREENSHOTS=1``::

    SESSIONKEEPER_UPDATE_SCREENSHOTS=1 python -m pytest tests/admin/test_browser.py
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

import sessionkeeper as sk
from sessionkeeper.admin import admin_app, short_hash
from sessionkeeper.stores import open_store
from sessionkeeper.wsgi import SessionMiddleware
from tests import services

from .helpers import PASSWORD

ROOT = Path(__file__).resolve().parents[2]
ENSURE = ROOT / "scripts" / "ensure-chromium.sh"
SHOTS = ROOT / "docs" / "admin"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,860",
)

pytestmark = pytest.mark.slow


def _unavailable(what: str) -> None:
    if services.services_required():
        pytest.fail(f"{what}; {services.REQUIRE_ENV}=1 so this is an error", pytrace=False)
    pytest.skip(what)


def _binaries() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="module")
def chromium() -> tuple[str, str]:
    """(browser, driver); runs scripts/ensure-chromium.sh first when they are missing."""
    found = _binaries()
    if found is None:
        with contextlib.suppress(subprocess.TimeoutExpired):  # then reported as not installed
            subprocess.run(["bash", str(ENSURE)], timeout=1800, check=False)
        found = _binaries()
    if found is None:
        _unavailable(
            "chromium is not installed and scripts/ensure-chromium.sh could not install it"
        )
    assert found is not None
    return found


@pytest.fixture
def browser(chromium: tuple[str, str], tmp_path: Path) -> Iterator[Any]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed (pip install -e '.[dev]')")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium[0]
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromium[1]))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def serve() -> Iterator[Any]:
    """``serve(wsgi_app)``: its base URL on a loopback port, served until the test ends."""
    servers: list[WSGIServer] = []

    def start(app: Any) -> str:
        httpd = make_server("127.0.0.1", 0, app, server_class=_Server, handler_class=_Quiet)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_port}"

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def shop(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """``/login?user=U`` binds the session to U (and fills a cart); every page shows the
    session's data as JSON."""
    s = environ["sessionkeeper.session"]
    if environ["PATH_INFO"] == "/login":
        user = parse_qs(environ.get("QUERY_STRING", ""))["user"][0]
        s.rotate_id()
        s.owner = user
        s.update(user=user, cart=["apple", "pear"])
    body = json.dumps({"session": dict(s)}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def shots_dir(environ: Mapping[str, str], tmp_path: Path) -> Path:
    """Where the screenshots go: ``docs/admin/`` only when asked to update them."""
    if environ.get("SESSIONKEEPER_UPDATE_SCREENSHOTS") == "1":
        return SHOTS
    return tmp_path / "screenshots"


def test_screenshots_leave_the_committed_ones_alone_unless_asked(tmp_path: Path) -> None:
    assert shots_dir({}, tmp_path) == tmp_path / "screenshots"
    assert shots_dir({"SESSIONKEEPER_UPDATE_SCREENSHOTS": "0"}, tmp_path) != SHOTS
    assert shots_dir({"SESSIONKEEPER_UPDATE_SCREENSHOTS": "1"}, tmp_path) == SHOTS


def shot(driver: Any, folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(folder / f"{name}.png"))


def test_the_console_in_a_browser(browser: Any, serve: Any, tmp_path: Path) -> None:
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.expected_conditions import staleness_of
    from selenium.webdriver.support.wait import WebDriverWait

    url = f"sqlite:///{tmp_path / 'sessions.db'}"
    managers = [sk.SessionManager(store=url, node=n, housekeeping=False) for n in ("a", "b")]
    node_a, node_b = (serve(SessionMiddleware(shop, m, app_name="shop")) for m in managers)
    for user in ("alice", "bob", "carol"):  # other browsers (alice's phone), for more rows
        with managers[1].request(app="shop", owner=user) as s:
            s.update(user=user, theme="dark")
    # The console's own clock, so that its chart spans a minute of samples taken in no time.
    clock = sk.FakeClock(start=time.time())
    console = admin_app(open_store(url), password=PASSWORD, environ={}, clock=clock)
    base = serve(console)

    shots = shots_dir(os.environ, tmp_path)

    def text(css: str) -> str:
        return str(browser.find_element(By.CSS_SELECTOR, css).text)

    def go(by: str, what: str) -> None:
        """Click what leads to another page, and wait for that page."""
        page = browser.find_element(By.TAG_NAME, "html")
        browser.find_element(by, what).click()
        # chromedriver may answer 500 "unhandled inspector error" to a probe of a page that is
        # going away (seen in CI): only the page's staleness ends the wait
        wait = WebDriverWait(browser, 20, ignored_exceptions=(WebDriverException,))
        wait.until(staleness_of(page))

    browser.get(f"{node_a}/login?user=alice")  # the user logs in on node a
    assert json.loads(text("body"))["session"]["user"] == "alice"
    sid = browser.get_cookie("sessionid")["value"]
    h = short_hash("shop", sid.split(".")[0])

    browser.get(f"{base}/")
    assert browser.current_url == f"{base}/login"
    browser.find_element(By.ID, "user").send_keys("ops")
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    shot(browser, shots, "login")
    go(By.ID, "login")
    for user in ("dave", "erin", "frank", "grace", "heidi", "ivan"):
        clock.advance(10)
        console.sampler.sample()
        with managers[1].request(app="shop", owner=user) as s:
            s.update(user=user)
    browser.get(f"{base}/")
    assert "10" in text("#apps tfoot") and "<polyline" in browser.page_source
    shot(browser, shots, "overview")

    go(By.LINK_TEXT, "shop")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#sessions tbody tr")) == 10
    assert sid.split(".")[0] not in browser.page_source
    shot(browser, shots, "sessions")

    browser.find_element(By.ID, "owner").send_keys("alice")
    go(By.ID, "search")
    found = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "a.session")]
    assert len(found) == 2 and h in found
    shot(browser, shots, "search")

    go(By.LINK_TEXT, h)
    assert "hidden" in text("#attributes") and "pear" not in text("#attributes")
    shot(browser, shots, "session")
    go(By.ID, "show-values")
    assert "'apple', 'pear'" in text("#attributes")
    shot(browser, shots, "session-values")

    # A POST without the CSRF token (the form's hidden field removed) is refused.
    browser.execute_script("document.querySelector('form.danger input[name=csrf]').remove()")
    go(By.ID, "invalidate")
    assert "CSRF token is missing or wrong" in text("#detail")
    assert console.store.load("shop", sid.split(".")[0]) is not None
    shot(browser, shots, "csrf-refused")

    browser.get(f"{base}/apps/shop/sessions/{h}")
    go(By.ID, "invalidate")
    assert f"Session {h} invalidated." in text("#message")
    shot(browser, shots, "invalidated")
    # The invalidated session's next request (on the node that did not cache it) is a new,
    # empty session; the node that caches it learns of the tombstone from the feed (issue 14).
    browser.get(f"{node_b}/")
    assert json.loads(text("body"))["session"] == {}

    browser.get(f"{base}/apps/shop?owner=alice")  # her phone's session is left: log her out
    go(By.ID, "invalidate-owner")
    assert "1 sessions of alice invalidated." in text("#message")
    assert console.store.sessions_of("shop", "alice") == []
    assert len(console.store.sessions_of("shop", "bob")) == 1
    console.close()
    for m in managers:
        m.close(deadline_s=0)
