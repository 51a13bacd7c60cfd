"""``python -m tools.chaos`` (``make chaos``): the chaos run, its table, and docs/chaos.md.

Two scenarios: ``store`` (each write policy on a private PostgreSQL; :mod:`.scenario`) and
``replication`` (memory-to-memory replication over a private nats-server; :mod:`.peers`).

Exit status: 0 when every check passed, 1 when one failed, 2 when the run could not be set up
(no nginx, no PostgreSQL binaries, no nats-server, a node that would not start).
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

from .nats import find_nats
from .nginx import find_nginx
from .peer_verdict import (
    PeerFigures,
    describe_peer_timeline,
    peer_failed_checks,
    peer_figures,
    peer_markdown_table,
    peer_text_table,
)
from .peers import FULL_PEERS, SETUPS, SHORT_PEERS, PeerRun, PeerTimeline, run_setup
from .postgres import PrivatePostgres
from .scenario import FULL, SHORT, ChaosOptions, PolicyRun, run_policy
from .verdict import Figures, describe_timeline, failed_checks, figures, markdown_table, text_table

SCENARIOS = ("store", "replication")


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_all(opts: ChaosOptions, workdir: Path) -> tuple[list[PolicyRun], list[Figures]]:
    """Every policy in turn, on one private PostgreSQL (a fresh database each)."""
    runs: list[PolicyRun] = []
    with PrivatePostgres() as pg:  # its own folder: the postgres user must reach it
        _say(f"private PostgreSQL on 127.0.0.1:{pg.port}")
        for spec in opts.policies:
            runs.append(run_policy(pg, spec, opts, workdir, _say))
    return runs, [figures(r) for r in runs]


def run_peers_all(
    opts: ChaosOptions, setups: Sequence[str], t: PeerTimeline, workdir: Path
) -> tuple[list[PeerRun], list[PeerFigures]]:
    """Every replication setup in turn, each on its own private nats-server (the tiered one on
    a fresh database of a private PostgreSQL)."""
    runs: list[PeerRun] = []
    with PrivatePostgres() as pg:
        for name in setups:
            runs.append(run_setup(pg, SETUPS[name], t, opts.nodes, opts.users, workdir, _say))
    return runs, [peer_figures(r) for r in runs]


def peer_markdown(
    opts: ChaosOptions, t: PeerTimeline, runs: Sequence[PeerRun], figs: Sequence[PeerFigures]
) -> str:
    events = "\n".join(
        f"**`{r.setup.name}`**\n\n```\n" + "\n".join(r.events) + "\n```\n" for r in runs
    )
    checks = "\n".join(
        f"- `{f.name}`: {'OK' if c.ok else 'FAIL'}: {c.name} ({c.detail})"
        for f in figs
        for c in f.checks
    )
    return f"""
## Replication

{opts.nodes} gunicorn nodes running the demo shop with `replication=` (one backup per session,
`ack="sync"`) on a private nats-server, behind the same nginx, {opts.users} shoppers;
{describe_peer_timeline(t)}. `memory`: no database at all (`memory://` on each node,
`end-of-request`); `tiered`: `time-based:60` on a private PostgreSQL. What each may lose is the
configuration's `max_loss()`: nothing on one node's crash, for both. How to read it:
[replication.md](replication.md).

{peer_markdown_table(figs)}

*Lost updates*: acknowledged (HTTP 200) cart updates missing from the cart each shopper reads
back from the live nodes at the end (once every node answers `/_replication` healthy).
*Takeovers* and *handoffs* are the nodes' own counters, summed over every process that ran.

### Checks

{checks}

### Timelines

{events}"""


def markdown(
    opts: ChaosOptions, runs: Sequence[PolicyRun], figs: Sequence[Figures], cmd: str, peers: str
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
    store = f"""
## Write policies on a store

{setup}

{markdown_table(figs)}

*Lost updates*: acknowledged (HTTP 200) cart updates missing from the store after every node has
stopped gracefully. *Failed requests* are counted by the fault they happened during (or up to 3 s
after). *Staleness*: how long an acknowledged update was only in a node's memory before it could
be read from the store (the monitor polls, so figures are up to its period too high).

### Checks

{checks}

### Timelines

{events}"""
    return f"""# Chaos figures

Written by `{cmd}` (what `make chaos` runs) on {time.strftime("%Y-%m-%d")} ({platform.machine()}, Python
{platform.python_version()}). Do not edit by hand: run it again. What it does and how to read the
figures: [operations.md](operations.md#chaos-runs); the nginx configuration it uses is
[deploy/nginx.conf](../deploy/nginx.conf).
{store if figs else ""}{peers}"""


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
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help="comma-separated, of store and replication (default: %(default)s)",
    )
    parser.add_argument(
        "--replication",
        default=",".join(SETUPS),
        help="comma-separated replication setups, of memory and tiered (default: %(default)s)",
    )
    parser.add_argument("--cutoff-s", type=float, default=None, help="database cut-off length")
    parser.add_argument("--doc", type=Path, default=None, help="write the figures there (markdown)")
    parser.add_argument("--keep", action="store_true", help="keep the logs folder")
    args = parser.parse_args(argv)
    # The staleness monitor polls through the database outages on purpose: keep its store's
    # retry warnings out of the report (the nodes' own logs keep theirs).
    logging.getLogger("sessionkeeper.store").setLevel(logging.CRITICAL)

    timeline = SHORT if args.short else FULL
    peer_timeline = SHORT_PEERS if args.short else FULL_PEERS
    if args.cutoff_s is not None:
        extra = args.cutoff_s - timeline.cutoff_s
        timeline = replace(timeline, cutoff_s=args.cutoff_s, duration_s=timeline.duration_s + extra)
    try:
        policies = tuple(p.strip() for p in args.policies.split(",") if p.strip())
        for spec in policies:
            parse_policy(spec)
        if args.nodes < 2 or args.users < 1:
            raise ConfigurationError("--nodes must be at least 2 and --users at least 1")
        scenarios = _names(args.scenarios, SCENARIOS, "--scenarios")
        setups = _names(args.replication, tuple(SETUPS), "--replication")
        check_gunicorn()
        if find_nginx() is None:
            raise ConfigurationError("nginx is not installed: run scripts/ensure-nginx.sh")
        if "replication" in scenarios and find_nats() is None:
            raise ConfigurationError("nats-server is not installed: run scripts/ensure-nats.sh")
        opts = ChaosOptions(
            nodes=args.nodes, users=args.users, policies=policies, timeline=timeline
        )
    except (ConfigurationError, ValueError) as exc:
        print(f"chaos: {exc}", file=sys.stderr)
        return 2

    workdir = Path(tempfile.mkdtemp(prefix="sessionkeeper-chaos-"))
    runs: list[PolicyRun] = []
    figs: list[Figures] = []
    peer_runs: list[PeerRun] = []
    peer_figs: list[PeerFigures] = []
    try:
        if "store" in scenarios:
            runs, figs = run_all(opts, workdir)
        if "replication" in scenarios:
            peer_runs, peer_figs = run_peers_all(opts, setups, peer_timeline, workdir)
    except (RuntimeError, OSError) as exc:
        print(f"chaos: could not run: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.keep:
            print(f"kept {workdir} (node and nginx logs)", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    if figs:
        print(text_table(figs))
    if peer_figs:
        print(peer_text_table(peer_figs))
    failures = failed_checks(figs) + peer_failed_checks(peer_figs)
    for line in failures:
        print(f"FAIL {line}")
    if args.doc is not None:
        given = list(sys.argv[1:] if argv is None else argv)
        cmd = " ".join(["python -m tools.chaos", *given])
        peers = peer_markdown(opts, peer_timeline, peer_runs, peer_figs) if peer_figs else ""
        args.doc.write_text(markdown(opts, runs, figs, cmd, peers))
        print(f"wrote {args.doc}", file=sys.stderr)
    return 1 if failures else 0


def _names(text: str, known: Sequence[str], option: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ConfigurationError(f"{option}: choose among {', '.join(known)} (not {unknown})")
    return names


if __name__ == "__main__":
    sys.exit(main())
