"""The metric families of :mod:`sessionkeeper.metrics`: which ``manager.stats()`` key each
exposes, under which name, label and multiprocess mode. Plain data, no prometheus-client.

``REPLICATION_COUNTERS`` and ``REPLICATION_GAUGES`` exist only for a manager that replicates
(``SessionManager(replication=...)``); their keys are in its ``stats()`` from the start, at zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

PREFIX = "sessionkeeper_"
Mode = Literal["livesum", "livemax", "livemin"]


@dataclass(frozen=True)
class Family:
    """One metric: ``keys`` maps each ``stats()`` key it exposes to its label value (``""`` when
    the metric has no label)."""

    name: str  # without PREFIX, with the _total of a counter
    help: str
    keys: Mapping[str, str]
    label: str | None = None
    mode: Mode = "livesum"  # a gauge's multiprocess mode: how workers' values combine

    @property
    def of_store(self) -> bool:
        """Counts of ``manager.store`` (``store_*``), which several managers may share."""
        return all(key.startswith("store_") for key in self.keys)


def _f(name: str, keys: str | dict[str, str], help: str, label: str | None = None,
       mode: Mode = "livesum") -> Family:  # fmt: skip
    return Family(name, help, {keys: ""} if isinstance(keys, str) else keys, label, mode)


def _count(key: str, help: str) -> Family:
    """A counter of one ``stats()`` key, named after it: ``{key}_total``, no label."""
    return _f(f"{key}_total", key, help)


# fmt: off
#: Every counter of ``stats()`` (``store_calls`` and ``store_latency_total_s`` are the latency
#: histogram's ``_count`` and ``_sum``, summed over ``op``), and the label value of each key.
COUNTERS: tuple[Family, ...] = (
    _f("sessions_created_total", "created", "Sessions created on this node"),
    _f("sessions_destroyed_total", {"invalidated": "invalidated", "timed_out": "timed_out"},
       "Sessions ended: invalidated by the app, or timed out (swept)", "reason"),
    _f("cache_lookups_total", {"cache_hits": "hit", "cache_misses": "miss"},
       "Requests presenting a session id, served from the cache or not", "result"),
    _count("failovers", "Sessions served after loading them from the store"),
    _count("affinity_breaks", "Session ids naming another node"),
    _f("store_writes_total", {"writes_immediate": "request", "writes_flushed": "flush"},
       "Sessions written: in a request or attribute call, or by the flusher/flush()/close()",
       "trigger"),
    _f("writes_coalesced_total", "writes_saved",
       "Changing requests whose write was folded into a later one (the policy's saving)"),
    _count("writes_deferred", "Inline writes left to the flusher while the store was failing"),
    _count("write_failures", "Writes that failed and were kept dirty"),
    _count("write_refusals",
       "Writes of one session the store refused while up (kept dirty; the batch's others written)"),
    _count("unserializable_values",
       "Values mutated in place into something the serializer refuses (not written, key kept)"),
    _count("touch_failures", "Access-time writes that failed (touched again by the next flush)"),
    _count("feed_dropped",
       "Cached copies dropped because the invalidation feed named them (ended on another node)"),
    _count("feed_gaps",
       "Invalidation feed reads after a pause longer than the store keeps entries"),
    _count("feed_catch_ups", "Cache hits that found the invalidation feed stale and read it first"),
    _count("unverified_hits",
       "Cache hits served on a stale feed the store could not refresh (an outage)"),
    _count("not_recreated",
       "Sessions missing from the store, not confirmed live lately: dropped, not written again"),
    _f("writes_refused_total", "refused_writes",
       "Changed requests answered 503 and rolled back: their write could not be made durable"),
    _f("write_conflicts_total", {"conflicts_merged": "merged", "gone_on_write": "gone"},
       "Writes that met another node's change: merged key by key, or gone (invalidated there)",
       "outcome"),
    _f("conflict_overwritten_keys_total", "conflict_overwrites",
       "Keys changed on two nodes at once, where the later write won"),
    _f("sessions_recreated_total", "recreated",
       "Sessions missing from the store, written again whole from the cache"),
    _count("touches", "Sessions whose access time alone was written"),
    _f("cache_evictions_total", "evictions", "Sessions written then dropped from a full cache"),
    _f("errors_total", {"unavailable": "store_unavailable",
                        "corrupt_sessions": "corrupt_session_data",
                        "refusals": "cache_full",
                        "access_timeouts": "access_timeout",
                        "invalid_ids": "invalid_session_id"},
       "Requests and lookups that met an error, by its code (sessionkeeper.errors)", "code"),
    _count("owner_mismatches", "Sessions presented by another principal"),
    _count("sweeps", "Sweeps run"),
    _count("reverted_requests", "Failed requests whose changes were rolled back"),
    _count("store_reads", "Sessions read from the store"),
    _count("store_sessions_written", "Sessions the store wrote"),
    _count("store_write_batches", "Write batches sent"),
    _count("store_touches", "Access-time updates sent"),
    _count("store_deletes", "Sessions deleted (tombstoned)"),
    _f("store_written_bytes_total", "store_bytes_written", "Attribute bytes the store wrote"),
    _count("store_conflicts_merged", "Writes the store merged onto a newer version"),
    _count("store_writes_fenced", "Writes the server refused by their deadline fence (sent again)"),
    _count("store_errors", "Store operation attempts that failed"),
    _count("store_retries", "Store operation attempts retried"),
)

#: The gauges: numbers of ``stats()`` that are not counts since start, and how the workers'
#: values combine in multiprocess mode.
GAUGES: tuple[Family, ...] = (
    _f("sessions_cached", "live", "Sessions in this node's cache"),
    _f("sessions_dirty", "dirty", "Cached sessions with changes not yet in the store"),
    _f("unwritten_age_seconds", "unwritten_age_s",
       "Age of the oldest change not yet in the store (an upper bound): the live crash window",
       mode="livemax"),
    _f("crash_window_seconds", "crash_window_s",
       "The policy's crash window: how old an unwritten change may get (+Inf: no time bound)",
       mode="livemax"),
    _f("store_up", "store_available", "1 while the store answers, 0 once a call gave up",
       mode="livemin"),
    _f("store_operation_max_seconds", "store_latency_max_s",
       "The slowest store operation attempt since the process started", mode="livemax"),
)
# fmt: on


# fmt: off
#: Replication's counters (``replication_*`` in ``stats()``; see docs/replication.md).
REPLICATION_COUNTERS: tuple[Family, ...] = (
    _f("replication_sent_total", {"replication_deltas": "delta",
                                  "replication_snapshots": "snapshot"},
       "Changed requests replicated to their backups: as a delta, or whole", "kind"),
    _f("replication_received_total", {"replication_applied": "applied",
                                      "replication_duplicates": "duplicate",
                                      "replication_gaps": "gap",
                                      "replication_refused": "refused"},
       "Deltas and copies this node received as a backup: applied, already held, a gap "
       "(the owner was asked for the whole session), or refused (a superseded owner's)",
       "outcome"),
    _count("replication_acks",
       "Acknowledgements of a delta or copy waited for and received (see the histogram)"),
    _count("replication_unanswered",
       "Requests to another node that got no answer within ack_timeout_s"),
    _count("replication_backups_replaced",
       "Backups marked dead (no answer) and replaced by another member"),
    _count("replication_retired_dropped",
       "Replaced backups told to drop the copy they still held, once they answered again"),
    _count("replication_unreplicated",
       "Changed requests that found no backup to take their change"),
    _f("replication_dropped_total", {"replication_rejected_forged": "forged",
                                     "replication_rejected_malformed": "malformed",
                                     "replication_rejected_payload": "payload",
                                     "replication_rejected_fenced": "fenced",
                                     "replication_rejected_oversized": "oversized",
                                     "replication_rejected_replayed": "replayed",
                                     "replication_rejected_stale": "stale",
                                     "replication_rejected_foreign": "foreign"},
       "Messages dropped unapplied: bad signature, malformed frame or payload, from a fenced "
       "sender, oversized, replayed, too old (or from the future), of another cluster", "reason"),
    _count("replication_snapshot_requests",
       "Deltas a backup could not apply (it lacked their base), sent whole instead"),
    _count("replication_fenced",
       "Copies this node dropped because a newer owner took the session over"),
    _count("replication_takeovers",
       "Sessions this node took over from another node's memory (failover)"),
    _count("replication_given_up", "Owned sessions given up to a node that took them over"),
    _f("replication_handoffs_total", {"replication_handoffs": "sent",
                                      "replication_handoffs_received": "received"},
       "Sessions handed over at a graceful stop: by this node, or to it", "direction"),
    _count("replication_tombstones",
       "Invalidated or rotated sessions whose backups were told to drop their copies"),
    _count("replication_backup_evictions",
       "Backup copies evicted because the copies held reached cache_size"),
    _count("replication_backups_expired",
       "Backup copies dropped once expired (idle timeout or absolute deadline)"),
    _count("replication_repairs",
       "Owned sessions copied whole to a new backup because theirs was gone"),
    _count("replication_owned_dropped",
       "Records of owned sessions dropped (evicted, swept, or handed here and expired)"),
    _f("replication_async_overflows_total", "replication_async_overflow",
       "ack=async deltas not sent because the window was full (the next one is whole)"),
    _count("replication_messages_sent",
       "Messages this node sent (requests, replies, broadcasts; heartbeats apart)"),
    _f("replication_sent_bytes_total", "replication_bytes_sent",
       "Bytes of the messages counted in replication_messages_sent_total"),
    _count("replication_heartbeats", "Heartbeats this node sent"),
    _f("replication_disconnects_total", {"replication_disconnects": "lost",
                                        "replication_reconnects": "regained"},
       "Connections to NATS lost and regained", "event"),
)

#: Replication's gauges.
REPLICATION_GAUGES: tuple[Family, ...] = (
    _f("replication_members_alive", "replication_members",
       "Live members of the cluster this node sees, itself included", mode="livemax"),
    _f("replication_sessions_owned", "replication_owned",
       "Sessions this node owns (whose deltas it sends)"),
    _f("replication_underreplicated_sessions", "replication_underreplicated",
       "Owned sessions lacking some of their replicas' live copies"),
    _f("replication_retiring_sessions", "replication_retiring",
       "Owned sessions whose replaced backup lives and may still hold a copy, until told to drop it"),
    _f("replication_backup_copies", "replication_backups_held",
       "Copies of other nodes' sessions held in this node's memory"),
    _f("replication_async_in_flight", "replication_async_in_flight",
       "ack=async deltas waiting to be sent"),
    _f("replication_async_window", "replication_async_window",
       "The most ack=async deltas that may wait (async_window)", mode="livemax"),
    _f("replication_connected", "replication_connected",
       "1 while connected to NATS, else 0", mode="livemin"),
    _f("replication_ack_lag_seconds", "replication_ack_lag_s",
       "Age of the oldest change no backup acknowledged yet: what a crash may lose (async)",
       mode="livemax"),
    _f("replication_gap_seconds", "replication_gap_s",
       "How long NATS has been unreachable (0 while connected): changes meanwhile live here only",
       mode="livemax"),
)
# fmt: on

#: Keys of ``stats()`` exposed another way: the histograms, or ``sessionkeeper_info``.
COVERED = frozenset(
    {"store_calls", "store_latency_total_s", "node", "policy", "replication_ack_wait_total_s"}
)

#: The bucket bounds of the latency histograms (store operations, replication acks).
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: Replication's ack latency: a round trip on one machine is a fraction of a millisecond.
REPLICATION_BUCKETS_S = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
