"""The CPU engine's threads: how many, a shared pool of workers, BLAS held to one thread
while they run, and the kernels compiled with LLVM's SLP vectoriser.

Parallelism comes from our worker threads alone, with BLAS held to one thread
while they run (threadpoolctl), so Numba's, BLAS's and our threads never
compete for the cores (a pool of BLAS threads spinning between tiles, next to
a parallel Numba kernel, made an earlier version three times slower).

convmm may be called from many threads at once (a server's pool, a data
loader), so nothing here depends on what another call is doing:

* the number of workers is a setting (``set_num_threads``, or
  ``CONVMM_NUM_THREADS``, or BLAS's thread count read once, when the engine
  first needs it, before it has ever held BLAS), never re-read from BLAS's
  state, which the engine itself changes while it runs; a call's plan, and so
  its partial sums and its bits, are the same whoever else is running;
* BLAS is held to one thread by a counted hold: the first call in saves BLAS's
  thread counts, the last call out restores them, so overlapping calls never
  restore each other's limits;
* all calls share one pool and one set of slots, as many as the setting: at
  most that many of convmm's threads compute at once, however many callers.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from functools import lru_cache
from typing import SupportsIndex

import numpy as np

from ..._core.params import as_int


@lru_cache(maxsize=1)
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@lru_cache(maxsize=1)
def _blas_libraries():
    """threadpoolctl's controllers of the BLAS libraries loaded when the engine first ran
    (the controller scans the process once)."""
    return tuple(_blas_controller().select(user_api="blas").lib_controllers)


# --------------------------------------------------------------------------- how many
MAX_THREADS = 4 * (os.cpu_count() or 1)
"""The most threads ``set_num_threads`` accepts: each worker holds a tile buffer and, for
a weight gradient, a weight-sized partial sum, so the workspace grows with the count."""

_setting_lock = threading.Lock()
_configured: int | None = None      # set_num_threads
_default: int | None = None         # read once


def _default_threads() -> int:
    """CONVMM_NUM_THREADS, else as many threads as BLAS had when first asked (OMP_NUM_THREADS,
    OPENBLAS_NUM_THREADS and a threadpoolctl limit around the first call all count)."""
    global _default
    with _setting_lock:
        if _default is None:
            text = os.environ.get("CONVMM_NUM_THREADS", "").strip()
            if text:
                try:
                    value = int(text)
                except ValueError:
                    value = 0
                if not 1 <= value <= MAX_THREADS:
                    raise ValueError(f"CONVMM_NUM_THREADS must be a positive integer, at most "
                                     f"{MAX_THREADS}, got {text!r}")
                _default = value
            else:
                with _blas_hold.lock:   # what BLAS had before the engine held it
                    held = _blas_hold.saved
                    counts = ([count for _, count in held] if held is not None else
                              [library.get_num_threads() for library in _blas_libraries()])
                _default = max(counts, default=os.cpu_count() or 1)
        return _default


def get_num_threads() -> int:
    """The number of threads convmm's CPU engine computes on.

    Set by ``set_num_threads``; by default the environment variable
    ``CONVMM_NUM_THREADS`` or, without it, as many as NumPy's BLAS had when the
    engine first ran (``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` or a
    threadpoolctl limit in force then set that).  Read once per plan.

    Returns
    -------
    int
        The number of threads, >= 1.

    See Also
    --------
    set_num_threads : change it, process-wide.

    Examples
    --------
    >>> import convmm
    >>> convmm.get_num_threads() >= 1
    True
    """
    local = getattr(_calling_thread, "setting", None)
    if local is not None:
        return local
    configured = _configured
    return configured if configured is not None else _default_threads()


_calling_thread = threading.local()


@contextmanager
def calling_thread_setting(n: int):
    """Within the block, calls from this thread plan for ``n`` threads (and hold at most
    ``n`` of the shared slots), whatever the process-wide setting: a Dask block task
    in a ``distributed`` worker plans for the worker's ``nthreads``, and the worker's
    tasks side by side compute on at most that many threads (they share the slots)."""
    previous = getattr(_calling_thread, "setting", None)
    _calling_thread.setting = n
    try:
        yield
    finally:
        _calling_thread.setting = previous


def set_num_threads(n: SupportsIndex | None) -> int | None:
    """Set the number of threads convmm's CPU engine computes on (``None``: the default).

    Process-wide: every later call, from any thread, plans for ``n`` workers, and
    at most ``n`` of convmm's threads compute at once however many threads call
    it.  Results are the same bits for a given ``n``, alone or concurrent.  A
    call with little work uses fewer threads (one per 2 M multiply-adds), so
    small calls stay on the caller's thread.

    Parameters
    ----------
    n : int or None
        The thread count, 1 to ``MAX_THREADS``; None restores the default
        (``get_num_threads`` says what it is).

    Returns
    -------
    int or None
        The previous setting (None where it was the default).

    Raises
    ------
    TypeError
        ``n`` is not an integer (or None).
    ValueError
        ``n`` < 1 or ``n`` > ``MAX_THREADS`` (4 per CPU).

    See Also
    --------
    get_num_threads : the setting in force.

    Examples
    --------
    >>> import convmm
    >>> previous = convmm.set_num_threads(1)
    >>> convmm.get_num_threads()
    1
    >>> _ = convmm.set_num_threads(previous)
    """
    global _configured
    if n is not None:
        n = as_int(n, "n")
        if not 1 <= n <= MAX_THREADS:
            raise ValueError(f"n must be between 1 and {MAX_THREADS} (4 per CPU), got {n}")
    with _setting_lock:
        previous, _configured = _configured, n
    return previous


# --------------------------------------------------------------------------- BLAS held at one thread
class _BlasHold:
    """BLAS held to one thread while any engine call runs, counted under a lock: the first
    call in saves each BLAS library's thread count, the last call out restores it.

    The counts are set through each library's own call, not through
    threadpoolctl's limit: threadpoolctl lets only the first Python thread that
    ever set a limit set one again (for a process-wide pool such as OpenBLAS's
    pthreads), so a later call from another thread would silently leave BLAS
    on all its threads inside our workers (oversubscribed, and other bits).
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.users = 0
        self.saved = None          # [(library controller, thread count)] while held

    @staticmethod
    def _set(library, count):
        # threadpoolctl's OpenBLAS controller guards set_num_threads by thread (above);
        # its unguarded call is the library's own.
        getattr(library, "_real_set_num_threads", library.set_num_threads)(count)

    def __enter__(self):
        with self.lock:
            if self.users == 0:
                self.saved = [(library, library.get_num_threads())
                              for library in _blas_libraries()]
                for library, _ in self.saved:
                    self._set(library, 1)
            self.users += 1

    def __exit__(self, *exc):
        with self.lock:
            self.users -= 1
            if self.users == 0:
                for library, count in self.saved:
                    self._set(library, count)
                self.saved = None


_blas_hold = _BlasHold()
single_threaded_blas = _blas_hold
"""A context in which NumPy's BLAS runs on one thread (counted, as ``run_workers``' hold):
for the engine's own NumPy GEMMs outside the workers.  A multi-threaded BLAS call leaves
OpenBLAS's threads spinning, and the workers that follow beside them run at half speed."""


class _SLPVectorising:
    """Compile with LLVM's SLP vectoriser on while the engine runs.

    The micro-kernel keeps its MR×NR tile in scalar locals; only the SLP
    vectoriser turns them into vector registers and broadcast-FMAs (10 → 260
    GFLOP/s on one core here).  Numba leaves it off by default
    (``NUMBA_SLP_VECTORIZE``) but reads the flag at each compilation, so the
    engine switches it on around its kernel calls, where their first calls
    compile; every user of the guard shares one switch (counted, under a lock).
    The on-disk cache's key ignores the flag: a kernel compiled outside the
    guard would be cached scalar, so every call of a kernel goes through it.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._users = 0
        self._saved = 0

    def __enter__(self):
        from numba.core import config

        with self._lock:
            if self._users == 0:
                self._saved = config.SLP_VECTORIZE
                config.SLP_VECTORIZE = 1
            self._users += 1

    def __exit__(self, *exc):
        from numba.core import config

        with self._lock:
            self._users -= 1
            if self._users == 0:
                config.SLP_VECTORIZE = self._saved


slp_vectorising = _SLPVectorising()


# --------------------------------------------------------------------------- slots and the pool
_slots = threading.Condition()
_busy = 0          # slots taken: at most get_num_threads() of convmm's threads compute


@contextmanager
def _slot(limit):
    """Hold one of ``limit`` slots shared by all callers (a holder never waits for another,
    so nothing deadlocks; ``limit`` is the calling thread's setting when its call began)."""
    global _busy
    with _slots:
        while _busy >= limit:
            _slots.wait()
        _busy += 1
    try:
        yield
    finally:
        with _slots:
            _busy -= 1
            _slots.notify_all()


_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


_pinned = itertools.count()


def _pin_worker(size):
    """Pin a new pool thread to the next CPU this process may use, round robin, where
    the pool has a thread for every one of them.

    Unpinned, a worker woken after the cores went idle (a quarter second between
    calls) was often placed on the core of the thread that woke it, and two
    workers shared one core for the whole of a short call (res2's 3×3 layer: 5.5
    ms back to back, 10.3 ms after a pause, the one-thread time; pinned, 6.0).  A
    smaller pool is left unpinned: several processes, each on a few threads (a
    Dask cluster), would otherwise all pin to the same first CPUs.  Only convmm's
    own threads are pinned; where affinity cannot be set, nothing is."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
        if size >= len(allowed):
            os.sched_setaffinity(0, {allowed[next(_pinned) % len(allowed)]})
    except (AttributeError, OSError):
        pass


def _load_libraries_unpinned():
    """Load, in the caller's (unpinned) thread, the libraries Numba loads on a kernel's
    first compilation: its array maths imports SciPy's BLAS, and an OpenBLAS loaded
    from a pinned worker counts one CPU and keeps one thread for good (SciPy's
    ``dgemm`` at 2000³: 0.16 → 0.28 s after a first engine call)."""
    try:
        import numba.np.arraymath  # noqa: F401  (imports scipy.linalg.cython_blas)
    except ImportError:
        pass


def _shared_pool(size):
    global _pool
    with _pool_lock:
        if _pool is None:
            _load_libraries_unpinned()
        if _pool is None or _pool._max_workers < size:
            _pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="convmm",
                                       initializer=_pin_worker, initargs=(size,))
        return _pool


def _in_slot(work, k, limit):
    with _slot(limit):
        work(k)


def run_workers(work, threads, blas=True):
    """``work(k)`` for k < threads, on the shared pool (in the caller where threads is 1),
    each in a slot, with the kernels compiled (on first call) with the SLP vectoriser
    and BLAS held to one thread where ``work`` calls BLAS or runs on several threads.

    The hold matters even to kernels that call no BLAS: after a multi-threaded BLAS
    call (anyone's), OpenBLAS's threads spin for a while, and two workers beside them
    ran at the speed of one (res2's 3×3 layer: 5 → 10 ms); setting BLAS to one
    thread sends them to sleep.  One worker on the caller's thread leaves them be.
    """
    limit = get_num_threads()       # the caller's setting: pool threads have none of their own
    with _blas_hold if blas or threads > 1 else nullcontext(), slp_vectorising:
        if threads == 1:
            _in_slot(work, 0, limit)
            return
        # Every worker a pool thread, each pinned to a CPU of its own (``_pin_worker``):
        # with the caller as worker 0, the caller (whose affinity is the user's) often
        # shared a core with the pinned worker after the cores had idled.
        pool = _shared_pool(threads)
        for future in [pool.submit(_in_slot, work, k, limit) for k in range(threads)]:
            future.result()


# --------------------------------------------------------------------------- workspaces
ARENA_BYTES = 64 << 20
"""The most workspace one thread keeps between calls (larger requests are allocated and
freed per call)."""

_arena = threading.local()


def workspace(key, shape, dtype):
    """An uninitialised array for the calling thread's scratch, reused across calls.

    Each thread keeps one buffer per ``key`` (grown to the largest request, within
    ``ARENA_BYTES`` for all its keys), so that repeated calls do not fault fresh
    pages in: a large ``np.empty`` is a new mapping, zeroed by the OS page by page
    on first touch.  The array is the caller's until it asks for the same key again
    on the same thread; it must never leave the engine.
    """
    buffers = getattr(_arena, "buffers", None)
    if buffers is None:
        buffers = _arena.buffers = {}
    entry = buffers.get(key)
    if entry is not None and entry[1] == shape and entry[2] == dtype:
        return entry[3]                       # the same request as last time
    dtype = np.dtype(dtype)
    size = math.prod(shape) * dtype.itemsize
    buffer = None if entry is None else entry[0]
    if buffer is None or buffer.size < size + 64:
        kept = sum(e[0].size for k, e in buffers.items() if k != key)
        buffer = np.empty(size + 64, dtype=np.uint8)
        if kept + buffer.size > ARENA_BYTES:      # too large to keep: this call's alone
            buffers.pop(key, None)
            offset = -buffer.ctypes.data % 64
            return buffer[offset:offset + size].view(dtype).reshape(shape)
    offset = -buffer.ctypes.data % 64      # 64-byte aligned, for the vector loads
    view = buffer[offset:offset + size].view(dtype).reshape(shape)
    buffers[key] = (buffer, shape, dtype, view)
    return view


def sum_in_order(partial):
    """Σ_k partial[k], the workers' partial sums added in a fixed order (the same bits on
    every run), into partial[0]."""
    total = partial[0]
    for k in range(1, partial.shape[0]):
        total += partial[k]
    return total
