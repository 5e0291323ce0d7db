"""The bench's measurements: wall-clock timings (medians of alternating calls, a pause
before each), extra memory (the tracemalloc peak and the rise of the peak resident set),
the GEMM section, the start-up section, whether two results hold the same bits, and every
method's time over ``auto``'s (``--scaling``); and the two backends, ``Host`` (the CPU
engine, the wall clock) and ``Gpu`` (the CUDA engine on CuPy, CUDA events, the peak of
CuPy's pool), each with its way of drawing data, timing a call and measuring its memory."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import tracemalloc

import array_api_compat
import numpy as np

from .cases import SCALING_METHODS, SMALL_CALLS, numpy_random

PAUSE_S = 0.02
HANDOVER_S = 0.25
"""The CPU bench's pause before each call: longer than a library's idle threads spin
after a call (OpenBLAS's and OpenMP's, up to about 0.2 s), so that neither process's
spinning threads take the cores from the other's timed call."""


# --------------------------------------------------------------------------- measuring
def _wall_seconds(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def timed_pair(ours, theirs, repeats, seconds=_wall_seconds, pause=PAUSE_S):
    """Medians of ``repeats`` alternating calls (after one warm-up call each), each
    call timed by ``seconds(function)`` after ``pause`` seconds."""
    ours()
    if theirs is not None:
        theirs()
    mine, other = [], []
    for _ in range(repeats):
        time.sleep(pause)
        mine.append(seconds(ours))
        if theirs is not None:
            time.sleep(pause)
            other.append(seconds(theirs))
    return statistics.median(mine), (statistics.median(other) if other else None)


def _peak_rss():
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _current_rss():
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


def _reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def extra_memory(function, output_bytes):
    """Bytes a call needs beyond its inputs and its output (tracemalloc and peak RSS)."""
    tracemalloc.start()
    function()
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    resident = 0
    if _reset_peak_rss():
        before = _current_rss()
        function()
        after = _peak_rss()
        if before is not None and after is not None:
            resident = after - before
    return max(traced, resident) - output_bytes


def median_call_seconds(function, calls=SMALL_CALLS):
    """The median wall time of ``calls`` calls (after one warm-up call)."""
    function()
    return statistics.median(_wall_seconds(function) for _ in range(calls))


def gemm_share(sizes=(1024, 2048), repeats=5, threads=None):
    """GFLOP/s of convmm's Numba GEMM and of numpy.matmul, per size, in one run."""
    import numpy as np

    from .._engines.cpu import engine

    rng = np.random.default_rng(0)
    rows = []
    for n in sizes:
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        c = np.empty((n, n), dtype=np.float32)

        def ours():
            engine.gemm(a, b, c, threads)

        # A handover pause: OpenBLAS's threads spin after its call and would take the
        # cores from ours (measured: convmm's GEMM at 75 % of OpenBLAS's with 0.02 s,
        # 130 % apart).
        t_ours, t_blas = timed_pair(ours, lambda: np.matmul(a, b), repeats, pause=HANDOVER_S)
        exact = a.astype(np.float64) @ b
        rows.append(_gemm_row(n, t_ours, t_blas, "numpy.matmul (OpenBLAS)",
                              float(np.abs(c - exact).max() / np.abs(exact).max())))
    return rows


def _gemm_row(n, t_ours, t_peer, peer, relative_error):
    flops = 2 * n ** 3
    return dict(size=n, convmm_gflops=flops / t_ours / 1e9, peer=peer,
                peer_gflops=flops / t_peer / 1e9, share=t_peer / t_ours,
                relative_error=relative_error)


class Host:
    """``--backend numpy``: the CPU engine, timed by the wall clock, against PyTorch's CPU
    convolution with the same threads."""

    name = "numpy"
    peer = "torch"
    default_batch = None

    def __init__(self, args):
        if args.tf32:
            raise SystemExit("--tf32 applies to --backend cupy (TF32 is a GPU format)")
        self.threads = args.threads     # None: each library's own default

    random = staticmethod(numpy_random)
    seconds = staticmethod(_wall_seconds)
    extra_memory = staticmethod(extra_memory)

    def setup_torch(self, torch):
        if self.threads:
            torch.set_num_threads(self.threads)
        return torch

    def gemm(self, repeats):
        return gemm_share(repeats=repeats, threads=self.threads)


class Gpu:
    """``--backend cupy``: the CUDA engine on CuPy arrays, timed with CUDA events, against
    PyTorch on cuDNN, with TF32 off (or, with ``--tf32``, allowed) on both sides."""

    name = "cupy"
    peer = "cuDNN"
    default_batch = 64
    GEMM_SIZE = 4096

    def __init__(self, args):
        # cuBLAS's float32 compute type is read from CUPY_TF32 at CuPy's first float32
        # matmul, which is later than this.
        os.environ["CUPY_TF32"] = "1" if args.tf32 else "0"
        self.tf32 = args.tf32
        try:
            import cupy

            cupy.cuda.runtime.getDeviceCount()
        except Exception as error:      # no CuPy, no driver, no device
            raise SystemExit(f"--backend cupy needs CuPy and a GPU: {error}") from None
        from .._engines.cuda.engine import unavailable_reason

        self.cupy = cupy
        self.engine_missing = unavailable_reason()
        properties = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        self.device_name = properties["name"].decode() if isinstance(
            properties["name"], bytes) else str(properties["name"])

    def random(self, dtype, seed):
        """Samples drawn on the device: the suite at N=64 holds 10⁹ of them per pass."""
        rng = self.cupy.random.default_rng(seed)
        return lambda shape: rng.standard_normal(shape, dtype=dtype)

    def synchronize(self):
        self.cupy.cuda.runtime.deviceSynchronize()

    def seconds(self, function):
        """CUDA events around the call on the default stream, the device idle before."""
        cuda = self.cupy.cuda
        self.synchronize()
        start, end = cuda.Event(), cuda.Event()
        start.record()
        function()
        end.record()
        end.synchronize()
        return cuda.get_elapsed_time(start, end) / 1e3

    def extra_memory(self, function, output_bytes):
        """The peak of CuPy's pool in use during the call, less the output."""
        hook = _pool_peak_hook(self.cupy)
        self.synchronize()
        with hook:
            function()
            self.synchronize()
        return hook.peak - output_bytes

    def setup_torch(self, torch):
        if not torch.cuda.is_available():
            return None
        torch.backends.cudnn.allow_tf32 = self.tf32
        torch.backends.cuda.matmul.allow_tf32 = self.tf32
        # convmm's work and PyTorch's must share the stream the events are recorded on.
        if torch.cuda.current_stream().cuda_stream != self.cupy.cuda.get_current_stream().ptr:
            raise SystemExit("PyTorch and CuPy are on different CUDA streams: the events "
                             "would not time PyTorch's kernels")
        return torch

    def gemm(self, repeats):
        """convmm's block-tiled GEMM kernel against cupy.matmul (cuBLAS) at 4096³."""
        if self.engine_missing:
            return []
        from .._engines.cuda import engine

        cupy, n = self.cupy, self.GEMM_SIZE
        random = self.random("float32", seed=0)
        a, b = random((n, n)), random((n, n))
        c, blas = cupy.empty((n, n), cupy.float32), cupy.empty((n, n), cupy.float32)
        t_ours, t_blas = timed_pair(lambda: engine.gemm(a, b, c),
                                    lambda: cupy.matmul(a, b, out=blas), repeats, self.seconds)
        exact = cupy.matmul(a.astype(cupy.float64), b.astype(cupy.float64))
        error = float(cupy.abs(c - exact).max() / cupy.abs(exact).max())
        return [_gemm_row(n, t_ours, t_blas, "cupy.matmul (cuBLAS)", error)]

    def describe(self):
        from .._engines.cuda.engine import _tiles

        engine = (f"CUDA engine missing: {self.engine_missing}" if self.engine_missing
                  else f"CUDA engine tiles {tuple(_tiles())}")
        return (f"{self.device_name}, CuPy {self.cupy.__version__}, TF32 "
                f"{'allowed' if self.tf32 else 'off'} (CUPY_TF32={os.environ['CUPY_TF32']}), "
                f"{engine}")


def _pool_peak_hook(cupy):
    """A CuPy memory hook that follows the pool's bytes in use and keeps their peak."""

    class PoolPeak(cupy.cuda.MemoryHook):
        name = "convmm_bench_pool_peak"

        def __init__(self):
            self.in_use = self.peak = 0

        def malloc_postprocess(self, **kw):
            self.in_use += kw["mem_size"]
            self.peak = max(self.peak, self.in_use)

        def free_postprocess(self, **kw):
            self.in_use -= kw["mem_size"]

    return PoolPeak()


BACKENDS = {"numpy": Host, "cupy": Gpu}


_STARTUP = r"""
import time, sys
t0 = time.perf_counter()
import convmm
t1 = time.perf_counter()
import numpy as np
if sys.argv[1] == "cupy":
    import cupy
    put, sync = cupy.asarray, cupy.cuda.runtime.deviceSynchronize
else:
    put, sync = (lambda a: a), (lambda: None)
x = put(np.random.default_rng(0).standard_normal((2, 8, 12, 12)).astype(np.float32))
w = put(np.ones((8, 8, 3, 3), np.float32))
dw = put(np.ones((8, 1, 3, 3), np.float32))
methods = ("tiled_blas", "implicit_gemm")
def everything(x):
    for m in methods:
        convmm.conv(x, w, padding=1, method=m)
    convmm.conv(x, dw, padding=1, groups=8, method="direct")
    g = convmm.conv(x, w, padding=1)
    for m in methods:
        convmm.conv_backward(g, x, w, padding=1, method=m)
    convmm.conv_backward(g, x, dw, padding=1, groups=8, method="direct")
    sync()
t2 = time.perf_counter(); everything(x); t3 = time.perf_counter()
t4 = time.perf_counter(); everything(x[:1, :, :9, :10]); t5 = time.perf_counter()
print(t1 - t0, t3 - t2, t5 - t4)
"""


def startup(cache_dir, backend="numpy"):
    """Import time, first call and a later call (new shapes) in a fresh interpreter."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    out = subprocess.run([sys.executable, "-c", _STARTUP, backend], env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    return dict(import_s=float(out[0]), first_call_s=float(out[1]), later_call_s=float(out[2]))


def same_bits(first, second) -> bool:
    """Whether two results of one call (an array, or a tuple of arrays and Nones) hold
    the same bits: the repeatability the engines promise (no atomics, fixed orders)."""
    if first is None or second is None:
        return first is second
    if isinstance(first, tuple):
        return len(first) == len(second) and all(map(same_bits, first, second))
    if first.shape != second.shape or first.dtype != second.dtype:
        return False
    module = np if array_api_compat.is_numpy_array(first) else __import__("cupy")
    a, b = (module.ascontiguousarray(v).view(module.uint8) for v in (first, second))
    return bool((a == b).all())


def method_scaling(cases, repeats=7, seconds=0.05):
    """For each case, map and method: its time over ``auto``'s, each the best of at least
    ``repeats`` calls and of ``seconds`` of calls (sub-millisecond cases need many to be
    stable on a shared machine)."""
    import convmm

    def best(function):
        function()
        times, start = [], time.perf_counter()
        while len(times) < repeats or time.perf_counter() - start < seconds:
            times.append(_wall_seconds(function))
        return min(times)

    rows = []
    for name, x, w, keywords in cases:
        g = np.ones_like(convmm.conv(x, w, **keywords))
        maps = {"forward": lambda m: convmm.conv(x, w, method=m, **keywords),
                "transpose": lambda m: convmm.conv_transpose(g, w, method=m,
                                                             output_size=x.shape, **keywords),
                "weight": lambda m: convmm.conv_backward(g, x, w, method=m, needs="weight",
                                                         **keywords)}
        for which, call in maps.items():
            auto = best(lambda: call("auto"))
            for method in SCALING_METHODS[which]:
                try:
                    ratio = best(lambda: call(method)) / auto
                except ValueError:      # a method that does not apply (or would not fit)
                    continue
                rows.append(dict(case=name, which=which, method=method, ratio=ratio,
                                 auto_seconds=auto))
    return rows
