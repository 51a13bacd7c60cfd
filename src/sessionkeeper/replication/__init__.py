"""Memory-to-memory replication over NATS: sessions copied into other nodes' memory.

See DESIGN.md "Memory-to-memory replication" and docs/replication.md. Only :mod:`.settings`
is imported by the core (``SessionManager(replication=...)``); the rest, and nats-py (the extra
``sessionkeeper[nats]``), load when a manager replicates.
"""

from __future__ import annotations

from .settings import Replication

__all__ = ["Replication"]
