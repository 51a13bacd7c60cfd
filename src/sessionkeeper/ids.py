"""Session ids: ``<token>.<node>``, or ``<token>.<owner>.<backup>...`` with replication.

The token is 192 random bits from :mod:`secrets` (32 url-safe characters). The node suffix only
routes: the store keys a session by ``(app, token)``. With memory-to-memory replication the
suffix names the owner, then the nodes holding its backup copies (a balancer routes on the first
and falls back to the next); node names cannot contain a dot, so the parts split unambiguously. Validation happens before any store access,
so a hostile value never reaches a database.
"""

from __future__ import annotations

import os
import re
import secrets
import socket

from .errors import InvalidSessionId

TOKEN_BYTES = 24  # 192 bits; DESIGN asks for at least 128
MIN_TOKEN_CHARS = 22  # 22 base64 characters carry 132 bits
MAX_TOKEN_CHARS = 64
MAX_NODE_CHARS = 64
MAX_ROUTE_NODES = 4  # the owner and at most three backups
MAX_ID_CHARS = MAX_TOKEN_CHARS + MAX_ROUTE_NODES * (1 + MAX_NODE_CHARS)

_TOKEN_RE = re.compile(rf"[A-Za-z0-9_-]{{{MIN_TOKEN_CHARS},{MAX_TOKEN_CHARS}}}")
_NODE_RE = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_NODE_CHARS}}}")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_NODE = rf"[A-Za-z0-9_-]{{1,{MAX_NODE_CHARS}}}"
#: A whole id in one match: the token, then optionally the nodes, each after a dot.
_ID_RE = re.compile(
    rf"([A-Za-z0-9_-]{{{MIN_TOKEN_CHARS},{MAX_TOKEN_CHARS}}})((?:\.{_NODE}){{0,{MAX_ROUTE_NODES}}})"
)


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def parse(session_id: str | None) -> tuple[str, str | None] | None:
    """Split a presented id into ``(token, node)``; ``None`` when it is not a valid id.

    Never raises: an invalid id is treated as absent.
    """
    # Every request's path: the match inline, and only the first node split off.
    if not session_id or len(session_id) > MAX_ID_CHARS:
        return None
    m = _ID_RE.fullmatch(session_id)
    if m is None:
        return None
    token, suffix = m.groups()
    return token, suffix[1:].partition(".")[0] if suffix else None


def parse_route(session_id: str | None) -> tuple[str, tuple[str, ...]] | None:
    """Split a presented id into ``(token, (owner, backup, ...))``; ``None`` when invalid.
    The nodes are empty for a bare token. Never raises."""
    if not session_id or len(session_id) > MAX_ID_CHARS:
        return None
    m = _ID_RE.fullmatch(session_id)
    if m is None:
        return None
    token, suffix = m.groups()
    return token, tuple(suffix.split(".")[1:])


def join(token: str, *nodes: str) -> str:
    return ".".join((token, *nodes))


def check_node_name(node: str) -> str:
    if not _NODE_RE.fullmatch(node):
        raise InvalidSessionId(
            f"node name {node!r} must be 1 to {MAX_NODE_CHARS} characters of A-Z a-z 0-9 _ -"
        )
    return node


def check_token(token: str) -> str:
    if not _TOKEN_RE.fullmatch(token):
        raise InvalidSessionId("not a session token")
    return token


def default_node_name() -> str:
    """Host name and process id. Computed per process, so forked workers differ."""
    host = _UNSAFE.sub("-", socket.gethostname()).strip("-")[:40] or "host"
    return f"{host}-{os.getpid()}"
