"""What the console's pages show of a stored session: the rows of the listing and of one
session's page, with ids only as short hashes, and attribute values decoded on request."""

from __future__ import annotations

import datetime as dt
import pprint
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from ..errors import SessionKeeperError
from ..logs import session_hash
from ..serialization import Serializer, place
from ..stores import Store, StoredSession

#: What the console shows for a session id (pages, URLs, audit log): the hash log lines show.
short_hash = session_hash

#: How many characters of a decoded value a page shows.
MAX_VALUE_CHARS = 4000


def when(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float) -> str:
    sign, s = ("-" if seconds < 0 else ""), int(abs(seconds))
    if s < 120:
        return f"{sign}{s} s"
    if s < 7200:
        return f"{sign}{s // 60} min"
    return f"{sign}{s // 3600} h {s % 3600 // 60} min"


@dataclass(frozen=True)
class Row:
    hash: str
    owner: str | None
    created: str
    last_access: str
    idle: str
    ttl: str
    timeout: str
    size: int
    node: str | None
    version: int
    names: list[str]


def row(s: StoredSession, now: float) -> Row:
    left = s.expires_at - now
    return Row(
        hash=short_hash(s.app, s.token),
        owner=s.owner,
        created=when(s.created_at),
        last_access=when(s.last_access_at),
        idle=duration(max(0.0, now - s.last_access_at)),
        ttl=duration(left) if left >= 0 else f"expired {duration(-left)} ago",
        timeout=duration(s.timeout_s),
        size=sum(len(k.encode()) + len(v) for k, v in s.attributes.items()),
        node=s.node,
        version=s.version,
        names=sorted(s.attributes),
    )


def attributes(s: StoredSession, serializer: Serializer | None) -> list[dict[str, Any]]:
    """Each attribute's name and size, and with ``serializer`` its value decoded and
    pretty-printed (or why it could not be)."""
    out = []
    for name in sorted(s.attributes):
        raw = s.attributes[name]
        item: dict[str, Any] = {"name": name, "size": len(raw)}
        if serializer is not None:
            try:
                value = serializer.loads(bytes(raw), place=place(s.app, s.token, name))
                text = pprint.pformat(value, width=100)
            except SessionKeeperError as exc:
                text = f"(not readable as {serializer.name}: {exc})"
            if len(text) > MAX_VALUE_CHARS:
                text = text[:MAX_VALUE_CHARS] + f"… ({len(text)} characters)"
            item["value"] = text
        out.append(item)
    return out


class Hashes:
    """Short hash -> token, for the sessions the console has shown (bounded, most recent
    kept); a hash it has not seen is looked for in the store's listing of the app."""

    def __init__(self, store: Store, capacity: int = 100_000, scan_page: int = 500) -> None:
        self._store = store
        self._capacity = capacity
        self._scan_page = scan_page
        self._known: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, s: StoredSession) -> str:
        h = short_hash(s.app, s.token)
        with self._lock:
            self._known[(s.app, h)] = s.token
            self._known.move_to_end((s.app, h))
            while len(self._known) > self._capacity:
                self._known.popitem(last=False)
        return h

    def token(self, app: str, h: str, *, scan: bool = True) -> str | None:
        with self._lock:
            token = self._known.get((app, h))
        if token is not None or not scan:
            return token
        after = None
        while page := self._store.list_sessions(app, after=after, limit=self._scan_page):
            for s in page:
                if short_hash(app, s.token) == h:
                    self.remember(s)
                    return s.token
            after = page[-1].token
        return None
