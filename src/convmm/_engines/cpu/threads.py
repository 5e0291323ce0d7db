"""The CPU engine's threads: a shared pool of workers, BLAS held to one thread while they
run, and the kernels compiled with LLVM's SLP vectoriser.

Parallelism comes from our worker threads alone, with BLAS held to one thread
while they run (threadpoolctl), so Numba's, BLAS's and our threads never
compete for the cores (a pool of BLAS threads spinning between tiles, next to
a parallel Numba kernel, made an earlier version three times slower).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache


@lru_cache(maxsize=1)
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def worker_count() -> int:
    """The engine's workers: as many as BLAS may use (the user's limit is respected)."""
    counts = [lib.num_threads for lib in _blas_controller().select(user_api="blas").lib_controllers]
    return max(counts, default=os.cpu_count() or 1)


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


_pool: ThreadPoolExecutor | None = None


def run_workers(work, threads):
    """``work(k)`` for k < threads on a shared pool, with BLAS held to one thread and the
    kernels compiled (on first call) with the SLP vectoriser."""
    global _pool
    if threads == 1:
        with _blas_controller().limit(limits=1, user_api="blas"), slp_vectorising:
            work(0)
        return
    if _pool is None or _pool._max_workers < threads:
        _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="convmm")
    with _blas_controller().limit(limits=1, user_api="blas"), slp_vectorising:
        for future in [_pool.submit(work, k) for k in range(threads)]:
            future.result()


def sum_in_order(partial):
    """Σ_k partial[k], the workers' partial sums added in a fixed order (the same bits on
    every run), into partial[0]."""
    total = partial[0]
    for k in range(1, partial.shape[0]):
        total += partial[k]
    return total
