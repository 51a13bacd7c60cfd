"""After a write the store merged (a version conflict, rebased on another node's newer copy):
what the local copy takes from the other node's version, so that it holds what the store now
holds. The writer calls :func:`take_merged` from ``Writer._apply``, holding the session's lock.
"""

from __future__ import annotations

import logging

from .errors import CorruptSessionData
from .logs import fields, session_hash
from .serialization import Serializer, place
from .session import Session
from .stats import Stats
from .stores.base import SaveRequest, StoredSession

log = logging.getLogger("sessionkeeper.writer")


def take_merged(
    s: Session,
    req: SaveRequest,
    other: StoredSession,
    serializer: Serializer,
    stats: Stats,
    contents: str,
) -> None:
    """Take into the local copy ``s`` the keys only the other node changed, and their stored
    bytes' hashes (unless ``contents="updated"``, which keeps none): a stale hash would make
    such a key look changed by this copy (a read one under "accessed", any under "all"), and a
    later rebased write would overwrite the other node's newer value with it. Keys this copy
    changed (``req``'s own, and any changed since the write was taken) stay its own."""
    stats.add("conflicts_merged")
    ours = req.own_changes  # what the rebased write carried
    overwritten = sum(
        1 for k, v in ours.items() if k in other.attributes and other.attributes[k] != v
    )
    if overwritten:
        stats.add("conflict_overwrites", overwritten)
    data = s.data_view()
    mine = set(ours) | req.removed | s.changes.set_keys | s.changes.deleted_keys
    for key, blob in other.attributes.items():
        if key in mine:
            continue
        try:
            s.raw_set(key, serializer.loads(blob, place=place(s.app, s.token, key)))
            if contents != "updated":
                s.own_hashes()[key] = hash(blob)
        except CorruptSessionData:
            log.error(
                "session %s: unreadable attribute %r from another node ignored",
                session_hash(s.app, s.token),
                key,
                extra=fields(s.app, s.token, "corrupt_session_data"),
            )
    for key in [k for k in data if k not in other.attributes and k not in mine]:
        s.raw_delete(key)  # removed by the other node
        s.stored_hashes.pop(key, None)
