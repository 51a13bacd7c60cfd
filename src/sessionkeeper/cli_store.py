"""The store commands of ``sessionkeeper``: ``init-db``, ``sweep``, ``stats`` and ``inspect``,
with the store access they share with ``admin`` (see :mod:`.cli`, which parses and runs them)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import ids
from .errors import ConfigurationError, SessionKeeperError
from .manager import SessionManager
from .policies import parse_policy
from .serialization import make_serializer
from .stores import Store, StoredSession, open_store

EXIT_OK = 0
HTTP_TIMEOUT_S = 5.0

Add = Callable[[str, Callable[[argparse.Namespace], int], str], Any]


class CommandError(SessionKeeperError):
    """A command that ran but failed (exit 1)."""


class Unreachable(SessionKeeperError):
    """A store or node that cannot be reached (exit 3)."""


# -- store access ------------------------------------------------------------------------------


def scheme_of(url: str) -> str:
    return url.split("://", 1)[0].split("+", 1)[0].lower() if "://" in url else url.lower()


def open_for_command(url: str, *, create: bool, key_prefix: str | None = None) -> Store:
    """Open a store. Unless ``create``, an SQL store's tables must already exist, and a SQLite
    file that does not exist is reported instead of being created empty. ``key_prefix``: a
    Redis store's, when not the default."""
    scheme = scheme_of(url)
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


def cmd_init_db(args: argparse.Namespace) -> int:
    store = open_for_command(args.url, create=True, key_prefix=args.key_prefix)
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
    store = open_for_command(args.url, create=False)
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
    if scheme_of(target) in ("http", "https"):
        stats = _node_stats(target)
        if args.json:
            print(json.dumps(stats, indent=2, sort_keys=True))
        else:
            width = max(map(len, stats), default=0)
            for key in sorted(stats):
                print(f"{key:<{width}}  {stats[key]}")
        return EXIT_OK
    store = open_for_command(target, create=False)
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
    store = open_for_command(args.url, create=False)
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


# -- the parser --------------------------------------------------------------------------------


def policy_arg(text: str) -> str:
    try:
        return parse_policy(text).spec()
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_commands(add: Add) -> None:
    """The store commands, through ``add(name, command, help)`` (:func:`.cli.build_parser`'s)."""
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
        type=policy_arg,
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
