"""sessionkeeper: server-side HTTP sessions that survive the loss of the process that served them."""

from __future__ import annotations

__version__ = "0.1.0"
