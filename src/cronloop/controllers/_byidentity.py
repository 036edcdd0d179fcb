"""A bounded memo of values worked out from JSON dicts, found again by the dict's identity.

The specs of one CronJob's runs are one shared dict, so what a pass works out from a spec
(its validated model, its fan-out template, its steps) is found again by identity instead of
by validating or comparing the dict. Hand-written: ``functools.lru_cache`` needs hashable
arguments, and a dict is not.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["ByIdentity"]

_V = TypeVar("_V")


class ByIdentity(Generic[_V]):
    """Values worked out from dicts, found again by the dict's identity (bounded, LRU).

    The entry holds the dict itself, so its id cannot be reused while the entry lives. The
    dicts must not change once looked up (stored JSON values are never changed in place).
    """

    def __init__(self, limit: int) -> None:
        self._entries: OrderedDict[Hashable, tuple[object, _V]] = OrderedDict()
        self._limit = limit

    def get(self, source: object, make: Callable[[], _V], tag: Hashable = None) -> _V:
        key = (id(source), tag)
        entry = self._entries.get(key)
        if entry is not None and entry[0] is source:
            self._entries.move_to_end(key)
            return entry[1]
        value = make()
        self._entries[key] = (source, value)
        if len(self._entries) > self._limit:
            self._entries.popitem(last=False)
        return value

    def put(self, source: object, value: _V, tag: Hashable = None) -> None:
        """Note that ``value`` is what ``source`` gives, unless that is known already."""
        self.get(source, lambda: value, tag)
