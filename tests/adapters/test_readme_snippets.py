"""The README's snippets, run as a new user would: the quick start copied as it stands, and each
framework snippet with only its store URL pointed at a local SQLite file, around a counter view,
under a real `gunicorn -w 4` / `uvicorn --workers 4` on one port (no sticky routing), one
browser's cookie jar. Every request sees the previous one's count, whichever worker serves it
(issue 10: the snippets used to count `1 2 2 2 3 3 3 4 5 4 3 4`)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from sessionkeeper.demo.cluster import free_port

ROOT = Path(__file__).resolve().parents[2]
REQUESTS = 24


def quick_start() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert match, "the README's quick start has no python block"
    return match.group(1)


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"gunicorn did not start:\n{log.read_text()[-3000:]}")


@pytest.mark.slow
def test_the_quick_start_counts_without_a_gap_under_gunicorn_w_4(tmp_path: Path) -> None:
    (tmp_path / "quickstart.py").write_text(quick_start())
    port = free_port()
    log = tmp_path / "gunicorn.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(tmp_path)])}
    cmd = [str(Path(sys.executable).parent / "gunicorn"), "-w", "4", "-b", f"127.0.0.1:{port}"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*cmd, "quickstart:application"], cwd=tmp_path, env=env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_ready(url, proc, log)
        with httpx.Client(timeout=10) as browser:
            counts = [browser.get(url).text.strip() for _ in range(REQUESTS)]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the group this test started
        proc.wait(timeout=30)
    assert counts == [f"visits: {n}" for n in range(1, REQUESTS + 1)]


# -- the framework snippets ------------------------------------------------------------------------

#: The README's framework snippets name a PostgreSQL server that is not here: the one change.
README_STORE = '"postgresql://app@db/app"'
LOCAL_STORE = '"sqlite:///sessions.db"'

FLASK_AROUND = (
    "from flask import Flask, session\napp = Flask(__name__)\n",
    """
@app.get("/")
def index():
    session["visits"] = session.get("visits", 0) + 1
    return f"visits: {session['visits']}\\n"
""",
)
DJANGO_AROUND = (
    'SECRET_KEY = "x"\nALLOWED_HOSTS = ["127.0.0.1"]\nROOT_URLCONF = "site_urls"\n'
    "DATABASES = {}\nINSTALLED_APPS = []\nUSE_TZ = True\n",
    "",
)
DJANGO_SITE = """
import os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "snippet")
from django.core.wsgi import get_wsgi_application
from django.http import HttpResponse
from django.urls import path

def index(request):
    request.session["visits"] = request.session.get("visits", 0) + 1
    return HttpResponse(f"visits: {request.session['visits']}\\n")

urlpatterns = [path("", index)]
application = get_wsgi_application()
"""
STARLETTE_AROUND = (
    """import sessionkeeper as sk
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

manager = sk.SessionManager(store="sqlite:///sessions.db")  # as the quick start makes it

async def index(request):
    request.session["visits"] = request.session.get("visits", 0) + 1
    return PlainTextResponse(f"visits: {request.session['visits']}\\n")

app = Starlette(routes=[Route("/", index)])
""",
    "",
)


def framework_snippet(name: str) -> str:
    """The README's snippet for ``name`` (``Flask``, ``Django``, ``Starlette``): the lines from
    its ``# Name`` comment to the next framework's."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Frameworks", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert match, "the README's Frameworks section has no python block"
    chunks = re.split(r"\n(?=# (?:Flask|Django|Starlette))", "\n" + match.group(1))
    [chunk] = [c for c in chunks if c.startswith(f"# {name}")]
    assert README_STORE in chunk or name == "Starlette", f"the {name} snippet's store changed"
    return chunk.replace(README_STORE, LOCAL_STORE)


def write_app(tmp_path: Path, framework: str, store: str = LOCAL_STORE) -> list[str]:
    """The module files of ``framework``'s snippet app in ``tmp_path``; returns the server's
    command line after its options."""
    if framework == "flask":
        before, after = FLASK_AROUND
        (tmp_path / "snippet.py").write_text(before + framework_snippet("Flask") + after)
        return ["gunicorn", "-w", "4", "snippet:app"]
    if framework == "django":
        before, _ = DJANGO_AROUND
        code = framework_snippet("Django").replace(LOCAL_STORE, store)
        (tmp_path / "snippet.py").write_text(before + code)
        (tmp_path / "site_urls.py").write_text(DJANGO_SITE)
        return ["gunicorn", "-w", "4", "site_urls:application"]
    before, _ = STARLETTE_AROUND
    (tmp_path / "snippet.py").write_text(before + framework_snippet("Starlette"))
    return ["uvicorn", "--workers", "4", "snippet:app"]


def serve(tmp_path: Path, argv: list[str]) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    log = tmp_path / "server.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(tmp_path)])}
    server, *args, target = argv
    bind = ["-b", f"127.0.0.1:{port}"] if server == "gunicorn" else ["--port", str(port)]
    cmd = [str(Path(sys.executable).parent / server), *args, *bind, target]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    return proc, f"http://127.0.0.1:{port}/", log


def stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)  # the group this test started
    proc.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["flask", "django", "starlette"])
def test_each_framework_snippet_counts_without_a_gap_on_four_workers(
    tmp_path: Path, framework: str
) -> None:
    proc, url, log = serve(tmp_path, write_app(tmp_path, framework))
    try:
        wait_ready(url, proc, log)
        with httpx.Client(timeout=10) as browser:
            first = browser.get(url)
            counts = [first.text.strip()] + [browser.get(url).text.strip() for _ in range(23)]
    finally:
        stop(proc)
    assert counts == [f"visits: {n}" for n in range(1, REQUESTS + 1)]
    cookie = first.headers["set-cookie"].lower()
    assert (
        "samesite=lax" in cookie and "httponly" in cookie
    )  # Flask's own default sends no SameSite
    assert first.headers["vary"].lower() == "cookie"


@pytest.mark.slow
def test_the_django_snippet_answers_503_when_the_store_is_down(tmp_path: Path) -> None:
    """Its ``SessionUnavailableMiddleware``: a change that cannot be stored is a 503 with
    ``Retry-After``, not a 500."""
    down = '"postgresql://postgres@127.0.0.1:1/test"'  # nothing listens on port 1
    proc, url, log = serve(tmp_path, write_app(tmp_path, "django", store=down))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(url, timeout=10)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
                time.sleep(0.1)
    finally:
        stop(proc)
    assert r.status_code == 503, log.read_text()[-2000:]
    assert r.headers["retry-after"] and "set-cookie" not in r.headers
