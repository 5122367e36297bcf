"""A bounded least-recently-used map for documents the server has already rendered.

Renderers are pure, so a document is fully determined by what it was rendered from: the served
domain, the subject (address, login name and display name from *this* request's directory
lookup) and the client variant. Keying on those values means a cache hit can never serve stale
data: when the directory changes a login name, the key changes with it. The bound keeps memory
flat whatever addresses clients send (unknown addresses produce subjects too).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRUCache(Generic[K, V]):
    """At most ``maxsize`` entries; the least recently used one goes first."""

    __slots__ = ("_data", "hits", "maxsize", "misses")

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._data: OrderedDict[K, V] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    def get_or_make(self, key: K, make: Callable[[], V]) -> V:
        """The value for ``key``, calling ``make()`` (and remembering its result) on a miss."""
        data = self._data
        try:
            value = data[key]
        except KeyError:
            self.misses += 1
            value = make()
            data[key] = value
            if len(data) > self.maxsize:
                data.popitem(last=False)
            return value
        self.hits += 1
        data.move_to_end(key)
        return value
