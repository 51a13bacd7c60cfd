"""The key layout of :class:`~sessionkeeper.stores.redis.RedisStore`: every key name it uses.

A session's keys are ``P{app:bb}:token:a|m|x`` (attributes, metadata, tombstone; see
:mod:`.redis_lua`), where ``bb`` is the session's expiry-index bucket, chosen by a hash of its
token; that bucket's index keys are ``P{app:bb}:e|d|t`` and its owner sets
``P{app:bb}:own:<owner>:o``. The hash tag ``{app:bb}`` puts a session, its index entry and its
owner's set in one slot, so every script on a session is one call on a cluster too, and one app's
index is spread over :data:`INDEX_BUCKETS` slots (no hot key). Part of the stored layout: every
node sharing a key prefix must agree on all of it.

Stateless and thread safe: plain functions of their arguments.
"""

from __future__ import annotations

import re
import zlib
from urllib.parse import quote

#: Expiry-index buckets per app. Part of the layout: every node sharing a key prefix must agree.
INDEX_BUCKETS = 64
#: What ``quote(part, safe="")`` leaves as it is: such a part needs no escaping (ids always).
_UNESCAPED = re.compile(r"[A-Za-z0-9_.~-]*")


def esc(part: str) -> str:
    """``app`` and ``token`` inside a key: no ``:`` (separator) and no braces (hash tag)."""
    return part if _UNESCAPED.fullmatch(part) else quote(part, safe="")


def bucket_of(token: str) -> int:
    """The expiry-index bucket of a token: the same in every process (not Python's ``hash``)."""
    return zlib.crc32(token.encode("utf-8", "surrogatepass")) % INDEX_BUCKETS


def tag(prefix: str, app: str, bucket: int) -> str:
    """The hash tag (with the prefix) that a bucket's keys and its sessions' keys begin with."""
    return f"{prefix}{{{esc(app)}:{bucket:02x}}}"


def session_keys(prefix: str, app: str, token: str) -> list[str]:
    """``a``, ``m``, ``x`` of a session."""
    base = f"{tag(prefix, app, bucket_of(token))}:{esc(token)}"
    return [base + ":a", base + ":m", base + ":x"]


def bucket_keys(prefix: str, app: str, bucket: int) -> list[str]:
    """``e``, ``d``, ``t`` of one bucket of an app's expiry index."""
    t = tag(prefix, app, bucket)
    return [t + ":e", t + ":d", t + ":t"]


def write_keys(prefix: str, app: str, token: str, codec: tuple[str, str]) -> list[bytes]:
    """What the save script gets: ``a m x e d``, the session's and its bucket's, as bytes in the
    client's ``codec`` (encoding, errors), built from one tag (a write's hot path)."""
    encoding, errors = codec
    t = tag(prefix, app, bucket_of(token)).encode(encoding, errors)
    base = t + b":" + esc(token).encode(encoding, errors)
    return [base + b":a", base + b":m", base + b":x", t + b":e", t + b":d"]


def owner_set(index_key: str, owner: str) -> str:
    """The owner's set in the bucket whose expiry index (``...:e``) is ``index_key``: as the
    scripts' ``own_key`` names it. The owner is not escaped: it follows the hash tag, and the
    ``:o`` suffix keeps it apart from session keys (``:a``, ``:m``, ``:x``)."""
    return f"{index_key[:-1]}own:{owner}:o"
