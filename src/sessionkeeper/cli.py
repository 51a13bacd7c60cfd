"""``sessionkeeper``: the demo, and small operations on a store or a running node (the store
commands are in :mod:`.cli_store`, ``replication-health`` in :mod:`.cli_replication`).

Every command returns one of the exit codes below, so scripts can tell a failed check from a bad
command line from a store that cannot be reached.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .cli_replication import add_command as add_replication_health
from .cli_store import (
    EXIT_OK,
    CommandError,
    Unreachable,
    open_for_command,
    policy_arg,
)
from .cli_store import add_commands as add_store_commands
from .errors import ConfigurationError, StoreError, StoreUnavailable

EXIT_FAILED = 1  # the demo lost more than its policy allows, or a command failed
EXIT_USAGE = 2  # bad arguments or URL (argparse uses 2 too)
EXIT_UNREACHABLE = 3  # the store (or the node) could not be reached

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


def cmd_admin(args: argparse.Namespace) -> int:
    try:
        from .admin import admin_app
        from .admin.serve import serve
    except ImportError as exc:
        raise ConfigurationError(str(exc)) from exc

    # Credentials first: without them the console refuses to start, before opening the store.
    key = Path(args.pickle_key_file).read_bytes().strip() if args.pickle_key_file else None
    app = admin_app(
        open_for_command(args.url, create=False),
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
        type=policy_arg,
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

    add_store_commands(add)
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
