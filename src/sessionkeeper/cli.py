"""``sessionkeeper``: the demo, and small operations on a store or a running node.

Every command returns one of the exit codes below, so scripts can tell a failed check from a bad
command line from a store that cannot be reached.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import __version__, ids
from .cli_replication import add_command as add_replication_health
from .errors import ConfigurationError, SessionKeeperError, StoreError, StoreUnavailable
from .manager import SessionManager
from .policies import parse_policy
from .serialization import make_serializer
from .stores import Store, StoredSession, open_store

EXIT_OK = 0
EXIT_FAILED = 1  # the demo lost more than its policy allows, or a command failed
EXIT_USAGE = 2  # bad arguments or URL (argparse uses 2 too)
EXIT_UNREACHABLE = 3  # the store (or the node) could not be reached

HTTP_TIMEOUT_S = 5.0

EPILOG = """\
exit status:
  0  success
  1  the demo lost more updates than its write policy allows, or the command failed
     (no such session, no session tables, a store error)
  2  usage error: bad arguments, an unknown write policy, a malformed store URL
  3  the store or the node could not be reached

store URLs: sqlite:///path/to.db, postgresql://user@host/db, mysql://user@host/db,
            redis://host:6379/0 (memory:// lives in one process: useful only for tests)
"""


class CommandError(SessionKeeperError):
    """A command that ran but failed (exit 1)."""


class Unreachable(SessionKeeperError):
    """A store or node that cannot be reached (exit 3)."""


# -- store access ------------------------------------------------------------------------------


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].split("+", 1)[0].lower() if "://" in url else url.lower()


def _open(url: str, *, create: bool, key_prefix: str | None = None) -> Store:
    """Open a store. Unless ``create``, an SQL store's tables must already exist, and a SQLite
    file that does not exist is reported instead of being created empty. ``key_prefix``: a
    Redis store's, when not the default."""
    scheme = _scheme(url)
    options: dict[str, Any] = {}
    if key_prefix is not None:
        if not scheme.startswith("redis"):
            raise ConfigurationError("--key-prefix is a Redis store's option")
        options["key_prefix"] = key_prefix
    if scheme in ("sqlite", "postgresql", "postgres", "mysql", "mariadb"):
        options["create_schema"] = create
    if scheme == "sqlite":
        from sqlalchemy.engine import make_url

        try:
            database = make_url(url).database
        except Exception as exc:
            raise ConfigurationError(f"malformed store URL {url!r}: {exc}") from exc
        path = Path(database) if database and database != ":memory:" else None
        if path is not None and not create and not path.exists():
            raise Unreachable(f"no SQLite database at {path} (create it with init-db)")
        if path is not None and not path.parent.is_dir():
            raise Unreachable(f"no folder {path.parent} for the SQLite database")
    return open_store(url, **options)


# -- commands ----------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo.report import table
    from .demo.run import DemoOptions, run_demo

    opts = DemoOptions(
        nodes=args.nodes,
        users=args.users,
        duration_s=args.duration_s,
        write=args.write,
        store=args.store,
        keep=args.keep,
        replication=args.replication,
    )
    result, setup = run_demo(opts)
    print(f"\nsessionkeeper demo: {setup}\n{table(result)}")
    return EXIT_OK if result.ok else EXIT_FAILED


def cmd_init_db(args: argparse.Namespace) -> int:
    store = _open(args.url, create=True, key_prefix=args.key_prefix)
    try:
        init = getattr(store, "init_schema", None)
        migrate = getattr(store, "migrate_layout", None)
        if migrate is not None:  # Redis: keys of the previous layout moved to the current one
            print(f"{store.describe()}: {migrate()}")
        elif init is None:
            print(f"{store.describe()}: no schema to create")
        else:
            init()
            print(f"{store.describe()}: session tables ready")
    finally:
        store.close()
    return EXIT_OK


def cmd_sweep(args: argparse.Namespace) -> int:
    store = _open(args.url, create=False)
    # The manager applies the sweep rules (the grace period, destroyed events): a node's.
    manager = SessionManager(
        store, write=args.write, sweep_grace_s=args.grace_s, housekeeping=False
    )
    try:
        deleted = manager.sweep()
    finally:
        manager.close()
    print(
        f"{store.describe()}: deleted {deleted} sessions expired more than "
        f"{manager.sweep_grace_s:g} s ago"
    )
    return EXIT_OK


def cmd_stats(args: argparse.Namespace) -> int:
    target: str = args.target
    if _scheme(target) in ("http", "https"):
        stats = _node_stats(target)
        if args.json:
            print(json.dumps(stats, indent=2, sort_keys=True))
        else:
            width = max(map(len, stats), default=0)
            for key in sorted(stats):
                print(f"{key:<{width}}  {stats[key]}")
        return EXIT_OK
    store = _open(target, create=False)
    try:
        counts = store.counts_by_app(time.time())
        where = store.describe()
    finally:
        store.close()
    if args.json:
        print(json.dumps({a: {"live": c.live, "expired": c.expired} for a, c in counts.items()}))
        return EXIT_OK
    print(f"{where}")
    print(f"{'app':<24} {'live':>8} {'expired, awaiting sweep':>24}")
    for app in sorted(counts):
        print(f"{app:<24} {counts[app].live:>8} {counts[app].expired:>24}")
    total_live = sum(c.live for c in counts.values())
    total_expired = sum(c.expired for c in counts.values())
    print(f"{'(all)':<24} {total_live:>8} {total_expired:>24}")
    return EXIT_OK


def _node_stats(url: str) -> dict[str, Any]:
    if not url.rstrip("/").endswith("/_stats"):
        url = url.rstrip("/") + "/_stats"
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as resp:
            data = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise CommandError(f"{url} answered {exc.code}: is it a sessionkeeper demo node?") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise Unreachable(f"cannot reach {url}: {exc}") from exc
    except ValueError as exc:
        raise CommandError(f"{url} did not answer JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CommandError(f"{url} did not answer a JSON object")
    return data


def cmd_inspect(args: argparse.Namespace) -> int:
    parsed = ids.parse(args.id)
    if parsed is None:
        raise ConfigurationError(f"{args.id!r} is not a session id (<token> or <token>.<node>)")
    store = _open(args.url, create=False)
    try:
        stored = store.load(args.app, parsed[0])
    finally:
        store.close()
    if stored is None:
        raise CommandError(f"no live session {args.app}/{parsed[0]} in {store.describe()}")
    print(describe_session(stored, values=args.values))
    return EXIT_OK


def describe_session(s: StoredSession, *, values: bool) -> str:
    def when(t: float) -> str:
        return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="seconds")

    left = s.expires_at - time.time()
    expiry = f"in {left:.0f} s" if left >= 0 else f"expired {-left:.0f} s ago, awaiting sweep"
    rows = [
        ("app", s.app),
        ("token", s.token),
        ("version", str(s.version)),
        ("created", when(s.created_at)),
        ("last access", when(s.last_access_at)),
        ("timeout", f"{s.timeout_s:g} s"),
        ("expires", f"{when(s.expires_at)} ({expiry})"),
        ("owner", s.owner or "-"),
        ("last written by", s.node or "-"),
        ("attributes", str(len(s.attributes))),
    ]
    lines = [f"{k:<16} {v}" for k, v in rows]
    serializer = make_serializer("json")
    for name in sorted(s.attributes):
        raw = s.attributes[name]
        line = f"  {name} ({len(raw)} bytes)"
        if values:
            try:
                line += " = " + json.dumps(serializer.loads(raw), default=repr)
            except SessionKeeperError as exc:
                line += f" (not readable as JSON: {exc})"
        lines.append(line)
    return "\n".join(lines)


def cmd_admin(args: argparse.Namespace) -> int:
    try:
        from .admin import admin_app
        from .admin.serve import serve
    except ImportError as exc:
        raise ConfigurationError(str(exc)) from exc

    # Credentials first: without them the console refuses to start, before opening the store.
    key = Path(args.pickle_key_file).read_bytes().strip() if args.pickle_key_file else None
    app = admin_app(
        _open(args.url, create=False),
        password_file=args.password_file,
        token_file=args.token_file,
        serializer=args.serializer,
        pickle_key=key,
        metrics_urls=args.metrics,
        audit_file=args.audit_log,
    )
    serve(app, args.host, args.port)
    return EXIT_OK


# -- the parser --------------------------------------------------------------------------------


def _policy(text: str) -> str:
    try:
        return parse_policy(text).spec()
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="sessionkeeper",
        description="Server-side HTTP sessions that survive the process that served them.",
        epilog=EPILOG,
        formatter_class=fmt,
    )
    parser.add_argument("--version", action="version", version=f"sessionkeeper {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log the library's warnings (retries...)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], text: str) -> Any:
        p = sub.add_parser(name, help=text, description=text, epilog=EPILOG, formatter_class=fmt)
        p.set_defaults(func=func)
        return p

    demo = add(
        "demo",
        cmd_demo,
        "Run the demo shop on several gunicorn nodes sharing one store, crash and stop nodes "
        "mid-run, and check that no acknowledged update was lost beyond what the policy allows.",
    )
    demo.add_argument("--nodes", type=int, default=3, help="gunicorn nodes (default 3, min 2)")
    demo.add_argument("--users", type=int, default=8, help="simulated users (default 8)")
    demo.add_argument(
        "--duration-s", type=float, default=20.0, help="seconds of shopping (default 20)"
    )
    demo.add_argument(
        "--write",
        type=_policy,
        default="end-of-request",
        metavar="POLICY",
        help="end-of-request (default), time-based:SECONDS, after-updates:N, after-requests:N, "
        "on-attribute or manual",
    )
    demo.add_argument(
        "--store", metavar="URL", help="a shared store (default: SQLite; none with --replication)"
    )
    demo.add_argument(
        "--replication",
        metavar="NATS_URL",
        help="copy every session into another node's memory over NATS (nats://127.0.0.1:4222); "
        "without --store the nodes keep no database at all",
    )
    demo.add_argument(
        "--keep", action="store_true", help="keep the temporary folder (store, node logs)"
    )

    init = add(
        "init-db",
        cmd_init_db,
        "Create the session tables of a store, or migrate them; on Redis, move sessions of the "
        "previous key layout to the current one (idempotent).",
    )
    init.add_argument("url", metavar="URL")
    init.add_argument("--key-prefix", metavar="P", help="a Redis store's key_prefix (default sk:)")

    sweep = add("sweep", cmd_sweep, "Delete expired sessions from a store now.")
    sweep.add_argument("url", metavar="URL")
    sweep.add_argument(
        "--grace-s",
        type=float,
        default=0.0,
        help="delete only sessions expired longer ago than this; never less than the nodes' "
        "longest write delay (default: that delay, from --write)",
    )
    sweep.add_argument(
        "--write",
        type=_policy,
        default="end-of-request",
        metavar="POLICY",
        help="the nodes' write policy, which sets the minimum grace (default end-of-request)",
    )

    stats = add(
        "stats",
        cmd_stats,
        "Counters of a running node (http://host:port) or live and expired sessions per app "
        "in a store (URL).",
    )
    stats.add_argument("target", metavar="URL", help="http://host:port of a node, or a store URL")
    stats.add_argument("--json", action="store_true", help="print JSON")

    inspect = add("inspect", cmd_inspect, "Show a stored session: metadata and attribute names.")
    inspect.add_argument("url", metavar="URL")
    inspect.add_argument("app", metavar="APP")
    inspect.add_argument("id", metavar="ID", help="the session id (<token> or <token>.<node>)")
    inspect.add_argument("--values", action="store_true", help="also print attribute values")

    admin = add(
        "admin",
        cmd_admin,
        "Serve the session console (needs the admin extra). Credentials: "
        "SESSIONKEEPER_ADMIN_PASSWORD or SESSIONKEEPER_ADMIN_TOKEN (or their _FILE forms), or "
        "the options below; it refuses to start without one.",
    )
    admin.add_argument("url", metavar="STORE_URL")
    admin.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    admin.add_argument("--port", type=int, default=8900, help="port (default 8900)")
    admin.add_argument("--password-file", metavar="FILE", help="a file holding the password")
    admin.add_argument("--token-file", metavar="FILE", help="a file holding the bearer token")
    admin.add_argument(
        "--serializer",
        default="json",
        choices=["json", "msgpack", "pickle"],
        help="the apps' serializer, to show values decoded (default json)",
    )
    admin.add_argument("--pickle-key-file", metavar="FILE", help="the apps' pickle signing key")
    admin.add_argument(
        "--metrics",
        action="append",
        default=[],
        metavar="URL",
        help="a node's /metrics URL for the chart (repeatable)",
    )
    admin.add_argument("--audit-log", metavar="FILE", help="also append the audit log to FILE")
    add_replication_health(add)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # exits 2 on a usage error
    # The error that ends a command is printed once, below; the retries before it only with -v.
    logging.basicConfig(format="sessionkeeper: %(name)s: %(message)s")
    logging.getLogger("sessionkeeper").setLevel(logging.WARNING if args.verbose else logging.ERROR)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ConfigurationError as exc:
        return _fail(EXIT_USAGE, exc)
    except (StoreUnavailable, Unreachable) as exc:
        return _fail(EXIT_UNREACHABLE, exc)
    except (StoreError, CommandError, RuntimeError) as exc:
        return _fail(EXIT_FAILED, exc)
    except KeyboardInterrupt:
        print("sessionkeeper: interrupted", file=sys.stderr)
        return 130


def _fail(code: int, exc: BaseException) -> int:
    print(f"sessionkeeper: error: {exc}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
