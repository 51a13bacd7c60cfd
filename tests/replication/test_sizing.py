"""``python -m tools.replsizing`` (the figures in docs/replication.md's sizing), small: two nodes
on a private nats-server, one backup copy per session, and what a changed request sends."""

from __future__ import annotations

import pytest

from tests.replication.conftest import NatsServer
from tools.replsizing import measure

pytestmark = pytest.mark.slow


def test_each_session_has_one_copy_and_a_changed_request_sends_a_delta_and_its_ack(
    nats: NatsServer,  # the skip (or failure) without a nats-server binary; measure starts its own
) -> None:
    figures = measure(sessions=100, value_bytes=200, updates=200)
    assert figures["backup_copies"] == 100, figures
    # The copy holds the 200-byte value, and something for the rest of the session.
    assert figures["bytes_per_backup_copy"] > 200, figures
    # One delta and one acknowledgement per backup; heartbeats are subtracted (an estimate).
    assert 1.8 <= figures["messages_per_changed_request"] <= 2.3, figures
    assert 200 < figures["bytes_per_changed_request"] < 2000, figures
