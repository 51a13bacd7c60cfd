"""``sessionkeeper replication-health``: whether every session of a running cluster has its
replicas (exit 0) or not (exit 1), for a rolling-restart script; see docs/replication.md."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import ConfigurationError

EXIT_OK, EXIT_UNHEALTHY, EXIT_UNREACHABLE = 0, 1, 3


def add_command(add: Callable[[str, Callable[[argparse.Namespace], int], str], Any]) -> None:
    p = add(
        "replication-health",
        cmd_replication_health,
        "Ask every member of a replication cluster whether each of its sessions has its "
        "replicas: exit 0 if so, 1 if not (or not yet after --wait), 3 if NATS is unreachable. "
        "The cluster key comes from SESSIONKEEPER_REPLICATION_KEY or --key-file.",
    )
    p.add_argument("url", metavar="NATS_URL", help="nats://host:4222 (credentials in the URL)")
    p.add_argument("--cluster", default="sessionkeeper", help="the cluster name (Replication)")
    p.add_argument("--key-file", metavar="FILE", help="a file holding the cluster key")
    p.add_argument(
        "--wait", type=float, default=0.0, metavar="S", help="ask again until healthy, at most S s"
    )
    p.add_argument(
        "--members", type=int, default=1, metavar="N", help="require N answering nodes (default 1)"
    )
    p.add_argument(
        "--timeout", type=float, default=1.0, metavar="S", help="wait for answers (default 1 s)"
    )
    p.add_argument("--json", action="store_true", help="print the answers as JSON")


def cmd_replication_health(args: argparse.Namespace) -> int:
    from .replication import Replication
    from .replication.probe import KEY_ENV, cluster_health, wait_healthy

    if args.key_file:
        key: str | None = Path(args.key_file).read_text().strip()
    else:
        key = os.environ.get(KEY_ENV)
    if not key:
        raise ConfigurationError(f"no cluster key: set {KEY_ENV} or pass --key-file")
    config = Replication(args.url, cluster=args.cluster, key=key)
    ask = {"timeout_s": args.timeout, "members": args.members}
    result = (
        wait_healthy(config, wait_s=args.wait, **ask)
        if args.wait > 0
        else cluster_health(config, **ask)
    )
    if args.json:
        print(json.dumps(result.as_dict(), indent=2, sort_keys=True))
    elif not result.reachable:
        print(f"NATS at {args.url} unreachable")
    else:
        for node, answer in sorted(result.answers.items()):
            state = "healthy" if answer.get("healthy") else "NOT healthy"
            print(
                f"{node}: {state}: {answer.get('owned')} owned, "
                f"{answer.get('underreplicated')} underreplicated, "
                f"{answer.get('backups_held')} backup copies, members {answer.get('members')}"
            )
        for node in result.missing:
            print(f"{node}: no answer")
        if len(result.answers) < args.members:
            print(f"{len(result.answers)} of the {args.members} nodes required answered")
        print("healthy" if result.healthy else "NOT healthy")
    if not result.reachable:
        return EXIT_UNREACHABLE
    return EXIT_OK if result.healthy else EXIT_UNHEALTHY
