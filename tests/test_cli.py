"""``sessionkeeper``'s commands, their output and their exit codes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

from sessionkeeper import MemoryStore, SessionManager, cli
from sessionkeeper.demo.app import DemoApp
from sessionkeeper.demo.cluster import free_port
from sessionkeeper.demo.report import Outcome
from sessionkeeper.policies import Manual
from sessionkeeper.stores import SaveRequest
from sessionkeeper.stores.sql import SqlStore

TOKEN = "k" * 32


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A SQLite store with its tables, one live session of ``shop`` and one long expired."""
    url = f"sqlite:///{tmp_path / 'sessions.db'}"
    assert cli.main(["init-db", url]) == 0
    store = SqlStore(url)
    now = time.time()
    store.save_many(
        [
            SaveRequest(
                "shop", TOKEN, 0, now, now, 1800, {"cart": b"[1,2]", "user": b'"ann"'}, node="n1"
            ),
            SaveRequest("shop", "e" * 32, 0, now - 9000, now - 9000, 60, {"x": b"1"}),
        ]
    )
    store.close()
    return url


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_init_db_is_idempotent(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "init-db", db)
    assert code == 0 and "session tables ready" in out


def test_stats_of_a_store(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "stats", db)
    assert code == 0
    assert [line.split() for line in out.splitlines() if line.startswith("shop")] == [
        ["shop", "1", "1"]
    ]
    code, out, _ = run(capsys, "stats", "--json", db)
    assert code == 0 and out.strip() == '{"shop": {"live": 1, "expired": 1}}'


def test_inspect_shows_names_and_values_only_when_asked(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "inspect", db, "shop", f"{TOKEN}.n1")
    assert code == 0
    assert "version          1" in out and "last written by  n1" in out
    assert "  cart (5 bytes)" in out and "ann" not in out
    code, out, _ = run(capsys, "inspect", "--values", db, "shop", TOKEN)
    assert code == 0 and "  cart (5 bytes) = [1, 2]" in out and '  user (5 bytes) = "ann"' in out


def test_inspect_errors(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "inspect", db, "other-app", TOKEN)
    assert code == 1 and "no live session other-app/" in err
    code, _, err = run(capsys, "inspect", db, "shop", "not a session id")
    assert code == 2 and "is not a session id" in err


def test_sweep_deletes_only_the_expired(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "sweep", db)
    assert code == 0 and "deleted 1 sessions" in out
    code, out, _ = run(capsys, "stats", "--json", db)
    assert out.strip() == '{"shop": {"live": 1, "expired": 0}}'


def test_sweep_grace_follows_the_policy(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "sweep", "--write", "time-based:20000", db)
    assert code == 0 and "deleted 0 sessions" in out  # expired 9000 s ago, within the grace


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def node_url() -> Iterator[str]:
    manager = SessionManager(MemoryStore(), node="web-1", housekeeping=False)
    server = make_server("127.0.0.1", free_port(), DemoApp(manager), handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        manager.close()


def test_stats_of_a_running_node(node_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "stats", node_url)
    assert code == 0 and "node  " in out and "web-1" in out and "store_sessions_written" in out
    code, out, _ = run(capsys, "stats", "--json", node_url + "/_stats")
    assert code == 0 and '"policy": "end-of-request"' in out


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["stats", "bogus://x"], 2, "unknown store URL scheme"),
        (["init-db", "sqlite:///"], 2, "in-memory SQLite"),
        (["stats", "sqlite:////no/such/dir/x.db"], 3, "no SQLite database"),
        (["init-db", "sqlite:////no/such/dir/x.db"], 3, "no folder /no/such/dir"),
        (["stats", "redis://127.0.0.1:1/0"], 3, "unavailable"),
        (["stats", "http://127.0.0.1:1"], 3, "cannot reach"),
        (["demo", "--nodes", "1"], 2, "--nodes must be at least 2"),
        (["demo", "--store", "memory://"], 2, "memory:// cannot be shared"),
        (["demo", "--replication", "redis://127.0.0.1"], 2, "is not a nats:// URL"),
        (["demo", "--duration-s", "0.5"], 2, "--duration-s"),
    ],
)
def test_errors_and_exit_codes(
    argv: list[str], code: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    got, out, err = run(capsys, *argv)
    assert (got, out) == (code, "")
    assert err.startswith("sessionkeeper: error: ") and message in err


def test_store_without_tables_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    code, _, err = run(capsys, "stats", f"sqlite:///{path}")
    assert code == 1 and "init-db" in err


@pytest.mark.parametrize(
    "argv",
    [[], ["nope"], ["demo", "--write", "sometimes"], ["demo", "--nodes", "x"], ["inspect", "u"]],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert "usage: sessionkeeper" in capsys.readouterr().err


def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["demo", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--duration-s" in out and "3  the store or the node could not be reached" in out


def _outcome(lost: int, allowed: int) -> Outcome:
    return Outcome(
        requests=10,
        sessions=1,
        writes=3,
        changed=8,
        failovers=1,
        rerouted=1,
        errors=0,
        acknowledged=5,
        found=5 - lost,
        lost=lost,
        allowed=allowed,
        policy=Manual(),
    )


@pytest.mark.parametrize(("lost", "allowed", "code"), [(0, 0, 0), (2, 2, 0), (3, 2, 1)])
def test_demo_exit_status_follows_the_verdict(
    lost: int,
    allowed: int,
    code: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from sessionkeeper.demo import run as demo_run

    seen = []

    def fake_run_demo(opts: demo_run.DemoOptions) -> tuple[Outcome, str]:
        seen.append(opts)
        return _outcome(lost, allowed), "setup"

    monkeypatch.setattr(demo_run, "run_demo", fake_run_demo)
    got, out, _ = run(capsys, "demo", "--write", "after-updates:3", "--users", "2", "--keep")
    assert got == code and "lost updates" in out
    assert seen[0] == demo_run.DemoOptions(users=2, write="after-updates:3", keep=True)
    run(capsys, "demo", "--replication", "nats://127.0.0.1:4222")
    assert seen[1] == demo_run.DemoOptions(replication="nats://127.0.0.1:4222")
    assert seen[1].store_url_default == "memory://" and not seen[1].durable_store
