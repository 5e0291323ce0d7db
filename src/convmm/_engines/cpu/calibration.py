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

A busy machine must not set them for good.  Each rate is the best of five runs, and the
GEMM's is checked against this core's measured peak (``peak.fma_peak``, the best of many
short bursts, and the best ever measured on this CPU model is kept): a single-threaded
GEMM below ``PLAUSIBLE_FRACTION`` of it was measured while something else ran.  Such a
measurement is repeated, up to ``ROUNDS`` times in the process, each rate keeping its
best; a record still implausible is kept, marked so, and measured again by the next
``ATTEMPTS - 1`` processes before it is trusted as it stands (a slow BLAS is slow in
every process).  ``python -m convmm calibrate`` measures afresh; ``explain`` shows the
record where ``auto`` weighed the FFT.

Rates, per second:

* ``gemm``: real multiply-adds of a single-threaded GEMM (NumPy's BLAS, which the
  engine's GEMM matches within a few tens of percent) times the thread count;
* ``fft``: points·log₂(points) of real transforms on the thread setting's workers (a
  batch of 64 transforms of 16384 points: out of cache, as a convolution's are; a
  complex transform costs twice as much);
* ``bandwidth``: bytes written to a new 16 MiB array and read back, for either dtype (the
  copies, spectra and products around the transforms; the best of five runs, so with the
  allocator's reuse and without page faults);
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

VERSION = 5
"""Bumped when what is measured or stored changes: older cache entries are then ignored."""

PLAUSIBLE_FRACTION = 0.7
"""A single-threaded GEMM (float32 or float64) reaching less than this fraction of the
core's measured peak for its dtype was measured while something else ran.  Measured on a
2-core AMD EPYC (Zen 4), idle: NumPy's OpenBLAS runs the 256³ GEMM at 0.73-0.90 of
``peak.fma_peak`` (``python -m convmm calibrate``, float32 and float64, one and two
threads; above 1 where a BLAS uses wider vectors than LLVM chooses); the records a busy
machine had left there were at 0.5 (the 104 GFLOP/s of issue 28 against 180 idle) and
0.63.  A measurement near the line is taken again, and each rate keeps its best."""

ROUNDS = 3
"""Measurements one process makes of an implausible record before keeping it."""

ATTEMPTS = 3
"""Processes that measure an implausible record before it is trusted as it stands."""

ROUND_PAUSE_SECONDS = 0.1
"""The pause between rounds: a busy spell, or another library's spinning threads, pass."""

_records: dict = {}
_unwritten: set = set()         # keys of records this process measured but could not store
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


def _peak_key() -> str:
    import numba

    return f"v{VERSION}|peak|{_cpu_model()}|{os.cpu_count()}|numba {numba.__version__}"


def _best_of(run, repeats=5) -> float:
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def _measure(dtype: np.dtype, threads: int) -> dict:
    """The rates for ``dtype`` (float32 or float64) on ``threads`` threads, each the best
    of five runs."""
    import scipy.fft
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    complex_dtype = np.result_type(dtype, np.complex64)
    a = rng.standard_normal((256, 256)).astype(dtype)
    with threadpool_limits(limits=1, user_api="blas"):
        gemm = 256 ** 3 / _best_of(lambda: a @ a) * threads
        batch = rng.standard_normal((64, 16384)).astype(dtype)
        fft = batch.size * 14 / _best_of(lambda: scipy.fft.rfft(batch, workers=threads))
        large = np.ones((16 << 20) // np.dtype(dtype).itemsize, dtype=dtype)
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


def _measure_peak() -> float:
    """This core's float32 peak in floating-point operations per second (``peak``)."""
    from .peak import fma_peak
    from .threads import slp_vectorising

    with slp_vectorising:       # one compilation switch for every kernel of the engine
        return fma_peak()


RATES = ("gemm", "fft", "bandwidth", "mix", "mix_small")


def _positive(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and 0 < value < float("inf"))


def _valid(found) -> bool:
    """Whether a cache entry holds every rate as a positive, finite number (anything else,
    a hand-edited or corrupted file, is measured again)."""
    return (isinstance(found, dict) and set(found) == set(RATES)
            and all(_positive(found[name]) for name in RATES))


def _valid_record(found, dtype: np.dtype, threads: int) -> bool:
    """Whether a cache entry is a whole record of ``dtype`` on ``threads`` threads
    (``_record``'s fields, rates valid)."""
    return (isinstance(found, dict) and _valid(found.get("rates")) and _positive(found.get("peak"))
            and isinstance(found.get("plausible"), bool)
            and isinstance(found.get("attempts"), int) and found["attempts"] >= 1
            and found.get("dtype") == dtype.name and found.get("threads") == threads
            and isinstance(found.get("measured"), str))


def plausible(gemm: float, threads: int, peak: float, dtype) -> bool:
    """Whether a GEMM rate (multiply-adds per second, single-threaded × ``threads``) is at
    least ``PLAUSIBLE_FRACTION`` of a core's float32 ``peak`` (operations per second) for
    ``dtype``: float64's peak is half float32's, a multiply-add two operations."""
    lanes = 1.0 if np.dtype(dtype) == np.float32 else 0.5
    return 2 * gemm / threads >= PLAUSIBLE_FRACTION * peak * lanes


def _record(dtype: np.dtype, threads: int, earlier: dict | None, best_peak: float) -> dict:
    """A measured record: up to ``ROUNDS`` rounds until the GEMM is plausible against the
    best peak known, every rate the best of the rounds and of ``earlier`` (an implausible
    record of an earlier process), with the peak it was held to and the attempt count."""
    found = dict(earlier["rates"]) if earlier else None
    for round_ in range(ROUNDS):
        if round_:
            time.sleep(ROUND_PAUSE_SECONDS)
        best_peak = max(best_peak, _measure_peak())
        measured = _measure(dtype, threads)
        found = measured if found is None else {name: max(found[name], measured[name])
                                                for name in RATES}
        if plausible(found["gemm"], threads, best_peak, dtype):
            break
    assert found is not None
    return {"rates": found, "peak": best_peak, "dtype": dtype.name, "threads": threads,
            "plausible": plausible(found["gemm"], threads, best_peak, dtype),
            "attempts": (earlier["attempts"] if earlier else 0) + 1,
            "measured": time.strftime("%Y-%m-%d %H:%M:%S")}


def _read() -> dict:
    try:
        stored = json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return stored if isinstance(stored, dict) else {}


def _write(cache: dict) -> bool:
    """Store the records, dropping those of earlier ``VERSION``s; whether that worked
    (where it cannot, each process measures once, and nothing is left behind)."""
    cache = {key: value for key, value in cache.items() if key.startswith(f"v{VERSION}|")}
    path = cache_path()
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(cache, indent=1, sort_keys=True))
        partial.replace(path)       # atomic: a concurrent reader sees old or new
    except OSError:
        try:
            partial.unlink(missing_ok=True)
        except OSError:
            pass
        return False
    return True


def _best_peak(cache: dict) -> float:
    """The best peak measured on this CPU model so far (0 where none is stored)."""
    peak = cache.get(_peak_key())
    return float(peak) if peak is not None and _positive(peak) else 0.0


def _normalised(dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype in (np.float32, np.complex64) else np.dtype(np.float64)


def record(dtype, threads: int, fresh: bool = False) -> dict:
    """The calibration record for real ``dtype`` arrays on ``threads`` threads: ``rates``
    (see above), the ``peak`` the GEMM was held to, whether it was ``plausible``, the
    ``attempts`` that measured it and when it was ``measured``.  Read from the cache, or
    measured (``fresh``: always, and held to the peak measured with it) and stored
    (``stored`` says whether that worked)."""
    dtype = _normalised(dtype)
    key = _key(dtype, threads)
    with _lock:
        if key in _records and not fresh:
            return _records[key]
        cache = _read()
        found: dict = cache.get(key)  # type: ignore[assignment]  # checked by _valid_record
        whole = _valid_record(found, dtype, threads)
        if fresh or not whole or (not found["plausible"] and found["attempts"] < ATTEMPTS):
            # Asked afresh (on an idle machine, as ``calibrate`` says), the peak is this
            # measurement's: a peak stored from another machine of the same name goes.
            found = _record(dtype, threads, found if whole and not fresh else None,
                            0.0 if fresh else _best_peak(cache))
            cache = _read()         # another process may have written meanwhile
            cache[key] = found
            cache[_peak_key()] = found["peak"] if fresh else max(found["peak"],
                                                                  _best_peak(cache))
            _unwritten.discard(key)
            if not _write(cache):
                _unwritten.add(key)
        _records[key] = found
        return found


def stored(dtype, threads: int) -> bool:
    """Whether the record for ``dtype`` on ``threads`` threads is in the cache file (False
    where this process measured it and could not write it)."""
    return _key(_normalised(dtype), threads) not in _unwritten


def rates(dtype, threads: int) -> dict:
    """The cost model's rates for real ``dtype`` arrays on ``threads`` threads (see above)."""
    return record(dtype, threads)["rates"]


def describe(found: dict) -> str:
    """One line on a record, for ``explain`` and ``python -m convmm calibrate``."""
    rates_ = found["rates"]
    peak = found["peak"] * (1.0 if found["dtype"] == "float32" else 0.5)
    text = (f"rates for {found['dtype']} on {found['threads']} thread(s), measured "
            f"{found['measured']}: GEMM {2 * rates_['gemm'] / 1e9:.0f} GFLOP/s, "
            f"{2 * rates_['gemm'] / found['threads'] / peak:.0%} of one core's measured peak "
            f"({peak / 1e9:.0f} GFLOP/s) per thread; FFT {rates_['fft'] / 1e9:.2g} G "
            f"points·log₂(points)/s; memory {rates_['bandwidth'] / 1e9:.0f} GB/s")
    if found["plausible"]:
        return text
    return (text + f"; below {PLAUSIBLE_FRACTION:.0%} of the measured peak after "
            f"{found['attempts']} attempt(s): measured again by later processes up to "
            f"{ATTEMPTS}, or now by `python -m convmm calibrate`")
