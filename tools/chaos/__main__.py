"""``python -m tools.chaos`` (``make chaos``): the chaos run, its table, and docs/chaos.md.

Exit status: 0 when every check passed, 1 when one failed, 2 when the run could not be set up
(no nginx, no PostgreSQL binaries, a node that would not start).
"""

from __future__ import annotations

import argparse
import logging
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from sessionkeeper.demo.cluster import check_gunicorn
from sessionkeeper.errors import ConfigurationError
from sessionkeeper.policies import parse_policy

from .nginx import find_nginx
from .postgres import PrivatePostgres
from .scenario import FULL, SHORT, ChaosOptions, PolicyRun, run_policy
from .verdict import Figures, describe_timeline, failed_checks, figures, markdown_table, text_table


def run_all(opts: ChaosOptions, workdir: Path) -> tuple[list[PolicyRun], list[Figures]]:
    """Every policy in turn, on one private PostgreSQL (a fresh database each)."""

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    runs: list[PolicyRun] = []
    with PrivatePostgres() as pg:  # its own folder: the postgres user must reach it
        say(f"private PostgreSQL on 127.0.0.1:{pg.port}")
        for spec in opts.policies:
            runs.append(run_policy(pg, spec, opts, workdir, say))
    return runs, [figures(r) for r in runs]


def markdown(
    opts: ChaosOptions, runs: Sequence[PolicyRun], figs: Sequence[Figures], cmd: str
) -> str:
    setup = (
        f"{opts.nodes} gunicorn nodes (one sync worker each) running the demo shop on a private "
        f"PostgreSQL behind nginx, {opts.users} simulated shoppers; "
        f"{describe_timeline(opts.timeline)}."
    )
    events = "\n".join(f"**`{r.policy}`**\n\n```\n" + "\n".join(r.events) + "\n```\n" for r in runs)
    checks = "\n".join(
        f"- `{f.policy}`: {'OK' if c.ok else 'FAIL'}: {c.name} ({c.detail})"
        for f in figs
        for c in f.checks
    )
    return f"""# Chaos figures

Written by `{cmd}` (what `make chaos` runs) on {time.strftime("%Y-%m-%d")} ({platform.machine()}, Python
{platform.python_version()}). Do not edit by hand: run it again. What it does and how to read the
figures: [operations.md](operations.md#chaos-runs); the nginx configuration it uses is
[deploy/nginx.conf](../deploy/nginx.conf).

{setup}

{markdown_table(figs)}

*Lost updates*: acknowledged (HTTP 200) cart updates missing from the store after every node has
stopped gracefully. *Failed requests* are counted by the fault they happened during (or up to 3 s
after). *Staleness*: how long an acknowledged update was only in a node's memory before it could
be read from the store (the monitor polls, so figures are up to its period too high).

## Checks

{checks}

## Timelines

{events}"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.chaos", description=__doc__)
    parser.add_argument("--short", action="store_true", help="the test suite's short timeline")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument(
        "--policies",
        default="end-of-request,time-based:5",
        help="comma-separated --write strings (default: %(default)s)",
    )
    parser.add_argument("--cutoff-s", type=float, default=None, help="database cut-off length")
    parser.add_argument("--doc", type=Path, default=None, help="write the figures there (markdown)")
    parser.add_argument("--keep", action="store_true", help="keep the logs folder")
    args = parser.parse_args(argv)
    # The staleness monitor polls through the database outages on purpose: keep its store's
    # retry warnings out of the report (the nodes' own logs keep theirs).
    logging.getLogger("sessionkeeper.store").setLevel(logging.CRITICAL)

    timeline = SHORT if args.short else FULL
    if args.cutoff_s is not None:
        extra = args.cutoff_s - timeline.cutoff_s
        timeline = replace(timeline, cutoff_s=args.cutoff_s, duration_s=timeline.duration_s + extra)
    try:
        policies = tuple(p.strip() for p in args.policies.split(",") if p.strip())
        for spec in policies:
            parse_policy(spec)
        if args.nodes < 2 or args.users < 1:
            raise ConfigurationError("--nodes must be at least 2 and --users at least 1")
        check_gunicorn()
        if find_nginx() is None:
            raise ConfigurationError("nginx is not installed: run scripts/ensure-nginx.sh")
        opts = ChaosOptions(
            nodes=args.nodes, users=args.users, policies=policies, timeline=timeline
        )
    except (ConfigurationError, ValueError) as exc:
        print(f"chaos: {exc}", file=sys.stderr)
        return 2

    workdir = Path(tempfile.mkdtemp(prefix="sessionkeeper-chaos-"))
    try:
        runs, figs = run_all(opts, workdir)
    except (RuntimeError, OSError) as exc:
        print(f"chaos: could not run: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.keep:
            print(f"kept {workdir} (node and nginx logs)", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print(text_table(figs))
    failures = failed_checks(figs)
    for line in failures:
        print(f"FAIL {line}")
    if args.doc is not None:
        given = list(sys.argv[1:] if argv is None else argv)
        cmd = " ".join(["python -m tools.chaos", *given])
        args.doc.write_text(markdown(opts, runs, figs, cmd))
        print(f"wrote {args.doc}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
