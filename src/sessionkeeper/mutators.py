"""The ``dict`` methods a :class:`~sessionkeeper.session.Session` overrides beyond ``[]``, ``get``,
``del`` and iteration: dict's C methods do not go through ``__setitem__``, so each one here goes
through ``__setitem__`` / ``__delitem__`` / ``__getitem__`` (tracked, validated, undo-logged).
``copy()`` and ``|`` return plain dicts; their values count as read. Also the untracked access
the manager uses (``data_view``, ``raw_set``, ``raw_delete``, ``replace_data``)."""

from __future__ import annotations

from collections.abc import ItemsView, Iterable, Mapping, ValuesView
from typing import Any, Self

from .undo import _MISSING, RequestLog


class DictMethods(RequestLog):
    """The mutators and views of a session dict. ``Session`` defines the slots and ``[]``."""

    __slots__ = ()

    def items(self) -> ItemsView[str, Any]:  # type: ignore[override]
        return ItemsView(self)

    def values(self) -> ValuesView[Any]:  # type: ignore[override]
        return ValuesView(self)

    def copy(self) -> dict[str, Any]:
        """A plain, shallow ``dict`` of the attributes; each value counts as read."""
        return {key: self[key] for key in self if dict.__contains__(self, key)}

    def __or__(self, other: Any) -> dict[str, Any]:  # type: ignore[override]
        if not isinstance(other, Mapping):
            return NotImplemented
        out = self.copy()
        out.update(other)
        return out

    def __ior__(self, other: Any) -> Self:  # type: ignore[override]
        self.update(other)
        return self

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        # dict.update's rule: anything with keys() is a mapping, else an iterable of pairs.
        pairs: Iterable[tuple[Any, Any]] = (
            [(key, other[key]) for key in other.keys()]  # noqa: SIM118
            if hasattr(other, "keys")
            else other
        )
        for key, value in pairs:
            self[key] = value
        for key, value in kwargs.items():
            self[key] = value

    def setdefault(self, key: str, default: Any = None) -> Any:
        with self.changes:
            if dict.__contains__(self, key):
                return self[key]
        self[key] = default
        return default

    def pop(self, key: str, default: Any = _MISSING) -> Any:
        with self.changes:
            if not dict.__contains__(self, key):
                if default is _MISSING:
                    raise KeyError(key)
                return default
            value = dict.__getitem__(self, key)
            del self[key]
            return value

    def popitem(self) -> tuple[str, Any]:
        """The last key set, removed (LIFO, as ``dict.popitem``)."""
        with self.changes:
            if not dict.__len__(self):
                raise KeyError("popitem(): session is empty")
            key = next(reversed(dict.keys(self)))
            return key, self.pop(key)

    def clear(self) -> None:
        with self.changes:
            for key in list(dict.keys(self)):
                self.pop(key, None)

    def __copy__(self) -> dict[str, Any]:
        return self.copy()

    # -- untracked, for the manager ----------------------------------------------------------

    def data_view(self) -> dict[str, Any]:
        """A plain copy of the attributes, without read tracking. Callers hold ``lock`` for a
        consistent one; to change the attributes untracked, use :meth:`raw_set` / :meth:`raw_delete`."""
        # Not dict.copy: on a subclass that overrides __iter__, it reads each key through
        # __getitem__, tracked as the app's read (and copied into the request's undo log).
        return dict(dict.items(self))

    def raw_set(self, key: str, value: Any) -> None:
        """Set ``key`` without validation, tracking or hooks (a value merged from the store).
        Caller holds ``lock``."""
        dict.__setitem__(self, key, value)

    def raw_delete(self, key: str) -> None:
        """Remove ``key`` without tracking or hooks. Caller holds ``lock``."""
        dict.pop(self, key, None)

    def replace_data(self, data: dict[str, Any]) -> None:
        """Swap all the attributes for ``data``, untracked."""
        with self.changes:
            dict.clear(self)
            dict.update(self, data)
