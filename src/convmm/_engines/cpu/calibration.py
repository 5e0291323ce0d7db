"""This machine's speeds, measured once and cached: what ``auto`` weighs the FFT against
the GEMM methods with.

The crossover between the FFT lowering and the GEMM methods depends on the machine:
a CPU with twice the vector width per cycle doubles the GEMM's speed and barely moves
the FFT's.  So the cost model's rates are measured here, on a few small kernels
(about a fifth of a second in all), once per CPU model, library versions and
thread setting, and kept in a JSON file under ``$CONVMM_CACHE_DIR`` (default
``$XDG_CACHE_HOME/convmm``, ``~/.cache/convmm``).  Every later process reads them
back, so ``auto`` makes the same choice, and gives the same bits, from run to run on
one machine.  Where the file cannot be written the rates are measured once per
process.

Rates, per second:

* ``gemm``: real multiply-adds of a single-threaded GEMM (NumPy's BLAS, which the
  engine's GEMM matches within a few tens of percent) times the thread count;
* ``fft``: points·log₂(points) of real transforms on the thread setting's workers (a
  batch of 64 transforms of 16384 points: out of cache, as a convolution's are; a
  complex transform costs twice as much);
* ``bandwidth``: bytes written to freshly allocated memory and read back (the copies,
  spectra and products around the transforms, page faults included);
* ``mix``: complex multiply-adds of the per-frequency channel products (batched
  ``matmul``) and ``mix_small`` of the broadcast products that replace it for small
  matrices.
"""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from pathlib import Path

import array_api_compat
import numpy as np

from ..._core.fft import channel_products

VERSION = 3
"""Bumped when what is measured changes: older cache entries are then ignored."""

_rates: dict = {}
_lock = threading.Lock()


def cache_path() -> Path:
    root = os.environ.get("CONVMM_CACHE_DIR")
    if root is None:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME",
                                           os.path.join(os.path.expanduser("~"), ".cache")),
                            "convmm")
    return Path(root) / "calibration.json"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _key(dtype: np.dtype, threads: int) -> str:
    import scipy

    return (f"v{VERSION}|{_cpu_model()}|{os.cpu_count()}|numpy {np.__version__}|"
            f"scipy {scipy.__version__}|{np.dtype(dtype).name}|{threads} threads")


def _best_of(run, repeats=5) -> float:
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def _measure(dtype: np.dtype, threads: int) -> dict:
    """The rates for ``dtype`` (float32 or float64) on ``threads`` threads."""
    import scipy.fft
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    complex_dtype = np.result_type(dtype, np.complex64)
    a = rng.standard_normal((256, 256)).astype(dtype)
    with threadpool_limits(limits=1, user_api="blas"):
        gemm = 256 ** 3 / _best_of(lambda: a @ a) * threads
        batch = rng.standard_normal((64, 16384)).astype(dtype)
        fft = batch.size * 14 / _best_of(lambda: scipy.fft.rfft(batch, workers=threads))
        large = np.ones(4 << 20, dtype=dtype)
        bandwidth = 2 * large.nbytes / _best_of(lambda: large * 2)
        # The FFT lowering's own products: 16×16·16×16 matrices (matmul) and 1×16·16×16
        # ones (broadcast products), at 1024 frequencies.
        xp = array_api_compat.array_namespace(batch)
        square = (rng.standard_normal((16, 1, 16, 1024)) + 1j).astype(complex_dtype)
        kernel = (rng.standard_normal((1, 16, 16, 1024)) + 1j).astype(complex_dtype)
        mix = 16 ** 3 * 1024 / _best_of(lambda: channel_products(xp, square, kernel))
        mix_small = 16 ** 2 * 1024 / _best_of(lambda: channel_products(xp, square[:1], kernel))
    return {"gemm": gemm, "fft": fft, "bandwidth": bandwidth, "mix": mix,
            "mix_small": mix_small}


RATES = ("gemm", "fft", "bandwidth", "mix", "mix_small")


def _valid(found) -> bool:
    """Whether a cache entry holds every rate as a positive, finite number (anything else,
    a hand-edited or corrupted file, is measured again)."""
    return (isinstance(found, dict) and set(found) == set(RATES)
            and all(isinstance(found[name], (int, float)) and not isinstance(found[name], bool)
                    and 0 < found[name] < float("inf") for name in RATES))


def rates(dtype, threads: int) -> dict:
    """The cost model's rates for real ``dtype`` arrays on ``threads`` threads (see above)."""
    dtype = np.dtype(dtype)
    dtype = np.dtype(np.float32) if dtype in (np.float32, np.complex64) else np.dtype(np.float64)
    key = _key(dtype, threads)
    with _lock:
        if key in _rates:
            return _rates[key]
        path = cache_path()
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            stored = {}
        if not isinstance(stored, dict):
            stored = {}
        found: dict = stored.get(key)  # type: ignore[assignment]  # checked by _valid
        if not _valid(found):
            found = _measure(dtype, threads)
            stored[key] = found
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                partial = path.with_suffix(f".{os.getpid()}.tmp")
                partial.write_text(json.dumps(stored, indent=1, sort_keys=True))
                partial.replace(path)       # atomic: a concurrent reader sees old or new
            except OSError:
                pass                        # unwritable: measured once per process
        _rates[key] = found
        return found
