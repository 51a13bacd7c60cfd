"""``Settings``: every :class:`~sessionkeeper.SessionManager` option, validated once.

A ``Settings`` is frozen: the manager and the layers under it read it and never change it, so
it may be shared by every thread. Building one touches nothing outside the process (the store is
named here, opened by the manager), which is what lets the Django system checks build one to
report a bad option. :func:`manager_options` turns framework settings into its keywords.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, cast

from . import ids
from .clock import Clock, SystemClock
from .errors import ConfigurationError
from .policies import EndOfRequest, WritePolicy, parse_policy
from .replication.settings import Replication, parse_replication
from .serialization import Serializer, make_serializer
from .stores import Store
from .tracking import Tracking

#: What a changed request whose write cannot be made durable gets: ``"refuse"`` (503 with
#: Retry-After, its changes rolled back) or ``"defer"`` (acknowledged, kept dirty, written later).
OnWriteFailure = Literal["refuse", "defer"]

if TYPE_CHECKING:  # a type only: config is core, the writer is the manager layer's
    from .writer import Contents


@dataclass(frozen=True, kw_only=True)
class Settings:
    """The options of :class:`~sessionkeeper.SessionManager` (the README documents each).

    ``__post_init__`` validates them and replaces a few by what they name: ``write`` becomes a
    :class:`WritePolicy`, ``serializer`` a :class:`Serializer` (``pickle_key`` checked),
    ``tracking`` and ``clock`` their defaults when ``None``."""

    store: str | Store = "sqlite:///sessions.db"
    write: WritePolicy | str | None = None
    contents: Contents = "updated"
    timeout_s: float = 1800.0
    app_timeouts_s: Mapping[str, float] | None = None
    max_lifetime_s: float | None = None
    app_max_lifetimes_s: Mapping[str, float] | None = None
    node: str | None = None
    serialize_access: bool = False
    access_wait_s: float = 10.0
    cache_size: int = 1000
    overflow: bool = True
    save_on_create: bool = True
    save_period_s: float = 60.0
    flush_poll_s: float = 1.0
    sweep_interval_s: float = 300.0
    sweep_hours: tuple[int, int] | None = None
    sweep_grace_s: float = 0.0
    sweep_batch: int = 1000
    serializer: str | Serializer = "json"
    pickle_key: bytes | str | None = field(default=None, repr=False)
    tracking: Tracking | None = None
    retry_after_s: int = 5
    outage_backoff_s: float = 1.0
    on_write_failure: OnWriteFailure | None = None
    shutdown_deadline_s: float = 10.0
    clock: Clock | None = None
    store_options: Mapping[str, Any] | None = None
    housekeeping: bool = True
    share_ids_across_apps: bool = False
    replication: str | Replication | None = None

    def __post_init__(self) -> None:
        if self.contents not in ("updated", "accessed", "all"):
            raise ConfigurationError("contents must be 'updated', 'accessed' or 'all'")
        for name in ("timeout_s", "save_period_s", "flush_poll_s", "sweep_interval_s"):
            _check_positive(name, getattr(self, name))
        _check_positive("access_wait_s", self.access_wait_s)
        if self.max_lifetime_s is not None:
            _check_positive("max_lifetime_s", self.max_lifetime_s)
        for app, lifetime in (self.app_max_lifetimes_s or {}).items():
            _check_positive(f"app_max_lifetimes_s[{app!r}]", lifetime)
        if not isinstance(self.cache_size, int) or self.cache_size < 1:
            raise ConfigurationError("cache_size must be at least 1")
        if self.outage_backoff_s < 0:
            raise ConfigurationError("outage_backoff_s must not be negative")
        if self.sweep_hours is not None and not all(0 <= h <= 23 for h in self.sweep_hours):
            raise ConfigurationError("sweep_hours are two hours of the day, 0 to 23")
        if self.node:
            ids.check_node_name(self.node)
        policy = parse_policy(self.write) if self.write is not None else EndOfRequest()
        self._set("write", policy)
        if self.on_write_failure is None:  # the policy's promise: durable ones refuse
            self._set("on_write_failure", "defer" if policy.deferred else "refuse")
        elif self.on_write_failure not in ("refuse", "defer"):
            raise ConfigurationError("on_write_failure must be 'refuse' or 'defer'")
        self._set("serializer", make_serializer(self.serializer, pickle_key=self.pickle_key))
        self._set("app_timeouts_s", MappingProxyType(dict(self.app_timeouts_s or {})))
        self._set("app_max_lifetimes_s", MappingProxyType(dict(self.app_max_lifetimes_s or {})))
        self._set("store_options", MappingProxyType(dict(self.store_options or {})))
        self._set("tracking", self.tracking or Tracking())
        self._set("clock", self.clock or SystemClock())
        self._set("replication", parse_replication(self.replication))

    def _set(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)  # normalizing, once, before anyone reads it

    @property
    def refuses_failed_writes(self) -> bool:
        return self.on_write_failure == "refuse"

    @property
    def policy(self) -> WritePolicy:
        assert isinstance(self.write, WritePolicy)  # __post_init__ parsed it
        return self.write

    def max_lifetime_for(self, app: str) -> float | None:
        """``app``'s absolute lifetime: its entry in ``app_max_lifetimes_s``, else
        ``max_lifetime_s``; ``None`` for none."""
        lifetime = (self.app_max_lifetimes_s or {}).get(app) or self.max_lifetime_s
        return None if lifetime is None else float(lifetime)

    def timeout_for(self, app: str) -> float:
        """``app``'s idle timeout: its entry in ``app_timeouts_s``, else ``timeout_s``."""
        return (self.app_timeouts_s or {}).get(app) or float(self.timeout_s)

    @property
    def grace_s(self) -> float:
        """The sweep's grace in effect. A node deletes a store row only after the longest time
        another node may hold back a write of it: the policy's delay, the access-time period,
        and one flusher poll each."""
        held_back = max(self.sweep_grace_s, self.policy.max_delay_s, self.save_period_s)
        return held_back + 2 * self.flush_poll_s


def _check_positive(name: str, value: object) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
        raise ConfigurationError(f"{name} must be positive")


#: The keyword arguments of :class:`SessionManager`, as adapters read them from settings.
MANAGER_OPTIONS = frozenset(f.name for f in fields(Settings))


def manager_options(
    settings: Mapping[str, Any], *, prefix: str = "", source: str
) -> tuple[str | None, dict[str, Any]]:
    """Split framework settings into ``(app_name, SessionManager keywords)``.

    Names after ``prefix`` match in any case (keys without the prefix are not ours); ``APP_NAME``
    is the app name, every other key must be a :class:`SessionManager` keyword, else
    :class:`ConfigurationError` names it (``source`` says where the settings come from)."""
    app_name: str | None = None
    options: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in settings.items():
        key = str(key)
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :].lower()
        if name == "app_name":
            app_name = str(value)
        elif name in MANAGER_OPTIONS:
            options[name] = value
        else:
            unknown.append(key)
    if unknown:
        raise ConfigurationError(
            f"{source}: {', '.join(sorted(unknown))} not a SessionManager option "
            f"(known: {', '.join(sorted(MANAGER_OPTIONS))})"
        )
    return app_name, options


class SettingsView:
    """The settings as attributes of the object that holds them (``SessionManager``): what
    adapters, tests and applications read (``manager.policy``, ``manager.timeout_s``...)."""

    settings: Settings

    @property
    def policy(self) -> WritePolicy:
        return self.settings.policy

    @property
    def serializer(self) -> Serializer:
        return cast(Serializer, self.settings.serializer)  # Settings built it from the name

    @property
    def tracking(self) -> Tracking:
        assert self.settings.tracking is not None  # Settings gave the default
        return self.settings.tracking

    @property
    def clock(self) -> Clock:
        assert self.settings.clock is not None  # Settings gave the default
        return self.settings.clock

    @property
    def sweep_grace_s(self) -> float:
        """The grace in effect (see :attr:`Settings.grace_s`), not the option given."""
        return self.settings.grace_s

    @property
    def contents(self) -> Contents:
        return self.settings.contents

    @property
    def timeout_s(self) -> float:
        return float(self.settings.timeout_s)

    @property
    def app_timeouts_s(self) -> Mapping[str, float]:
        return self.settings.app_timeouts_s or {}

    @property
    def serialize_access(self) -> bool:
        return self.settings.serialize_access

    @property
    def access_wait_s(self) -> float:
        return self.settings.access_wait_s

    @property
    def overflow(self) -> bool:
        return self.settings.overflow

    @property
    def save_on_create(self) -> bool:
        return self.settings.save_on_create

    @property
    def save_period_s(self) -> float:
        return self.settings.save_period_s

    @property
    def sweep_interval_s(self) -> float:
        return self.settings.sweep_interval_s

    @property
    def sweep_hours(self) -> tuple[int, int] | None:
        return self.settings.sweep_hours

    @property
    def sweep_batch(self) -> int:
        return self.settings.sweep_batch

    @property
    def retry_after_s(self) -> int:
        return self.settings.retry_after_s

    @property
    def outage_backoff_s(self) -> float:
        return self.settings.outage_backoff_s

    @property
    def shutdown_deadline_s(self) -> float:
        return self.settings.shutdown_deadline_s
