"""This machine's floating-point peak on one core, measured: chains of multiply-adds held in
registers, as fast as the CPU issues them at the vector width LLVM chooses for it.

The figure is what the calibration's rates are checked against (a GEMM measured far below
it was measured on a busy machine).  It is a measured lower bound of the core's peak: a BLAS
written for a wider vector unit than LLVM chooses may pass it.
"""

from __future__ import annotations

import time

import numpy as np
from numba import njit

# Each round updates every chain once: the inner loops' fixed trip counts let LLVM unroll
# them into vector FMAs on registers.  64 float32 chains are 8 AVX2 registers (two FMA
# pipes × four cycles' latency, within AVX2's sixteen registers); 96 keep wider or
# longer-latency units busy.  The faster of the two is the peak.


@njit(nogil=True, cache=True, fastmath={"contract"})
def _fma_chains_64(rounds, multiplier, addend, chains):  # pragma: no cover - compiled
    for _ in range(rounds):
        for j in range(64):
            chains[j] = chains[j] * multiplier + addend


@njit(nogil=True, cache=True, fastmath={"contract"})
def _fma_chains_96(rounds, multiplier, addend, chains):  # pragma: no cover - compiled
    for _ in range(rounds):
        for j in range(96):
            chains[j] = chains[j] * multiplier + addend


_KERNELS = ((64, _fma_chains_64), (96, _fma_chains_96))


def fma_peak(bursts: int = 20, burst_seconds: float = 2e-4) -> float:
    """float32 floating-point operations per second on one core (a multiply-add is two): the
    best of ``bursts`` short bursts of each chain count, so that a burst the scheduler
    leaves alone sets the figure on a busy machine.  float64's peak is half of it."""
    best = 0.0
    multiplier, addend = np.float32(1 - 2.0 ** -20), np.float32(2.0 ** -20)
    for count, kernel in _KERNELS:
        chains = np.ones(count, np.float32)
        kernel(1, multiplier, addend, chains)                  # compiled (or loaded) here
        start = time.perf_counter()
        kernel(1000, multiplier, addend, chains)
        rounds = max(1, int(1000 * burst_seconds / max(time.perf_counter() - start, 1e-9)))
        for _ in range(bursts):
            start = time.perf_counter()
            kernel(rounds, multiplier, addend, chains)
            elapsed = time.perf_counter() - start
            if elapsed > 0:
                best = max(best, 2 * count * rounds / elapsed)
    return best
