"""One small bounded cache for what grows with the calls a process sees.

Three things are remembered between calls, each by a key that fixes it completely: the
validated call of a signature (``validation.prepare``), the plan of a call's map
(``policy.plan``), and the index tables of a geometry (``index_tables``).  Each is a
pure function of its key, so a cache can only save time; a bound keeps a long-running
process (a Dask worker convolving blocks of many shapes) from holding more than a fixed
amount.  ``BoundedCache`` drops the least recently used entries first, past a number of
entries, a number of bytes, or both.  (Small pure functions of a few integers, such as
``geometry``'s, keep ``functools.lru_cache``; the CUDA engine keeps the device copies
of the index tables it used last in one of its own.)
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any


class BoundedCache:
    """A thread-safe map that forgets its least recently used entries past its bounds.

    Parameters
    ----------
    max_entries : int or None
        The most entries kept (None: no count bound).
    max_bytes : int or None
        The most bytes kept, all entries together, as ``size_of`` counts them (None: no
        byte bound).  An entry larger than this alone is returned and not kept.
    size_of : callable, optional
        The bytes of a value (default: 0 for every value).

    The bounds are attributes, read at every ``put``: each module that owns a cache sets
    them from its module constant before it puts (``CALL_CACHE_SIZE``,
    ``PLAN_CACHE_SIZE``, ``TABLE_CACHE_BYTES``), so that a test may change the constant.
    """

    def __init__(self, max_entries: int | None = None, max_bytes: int | None = None,
                 size_of: Callable[[Any], int] = lambda value: 0):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._size_of = size_of
        self._entries: OrderedDict = OrderedDict()     # key → (value, bytes)
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable, default: Any = None) -> Any:
        """The value kept for ``key`` (now the most recently used), or ``default``."""
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return default
            self._entries.move_to_end(key)
            return found[0]

    def put(self, key: Hashable, value: Any) -> Any:
        """Keep ``value`` for ``key`` (an entry kept already stays), within the bounds;
        returns ``value``."""
        size = self._size_of(value)
        with self._lock:
            if key in self._entries or (self.max_bytes is not None and size > self.max_bytes):
                return value
            self._entries[key] = (value, size)
            self._bytes += size
            while self._entries and (
                    (self.max_entries is not None and len(self._entries) > self.max_entries)
                    or (self.max_bytes is not None and self._bytes > self.max_bytes)):
                _, (_, dropped) = self._entries.popitem(last=False)
                self._bytes -= dropped
        return value

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def keys(self) -> list:
        """The keys kept, least recently used first."""
        with self._lock:
            return list(self._entries)

    @property
    def nbytes(self) -> int:
        """The bytes kept now, as ``size_of`` counts them."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries
