"""``python -m convmm bench``: the layer suite, timed against PyTorch in the same run.

For each layer of ``layers.json`` (a copy of the project's suite, or
``--layers-file``) and each pass — ``forward`` (``conv``), ``transpose``
(``conv_transpose`` back to the layer's input size) and ``backward`` (the
forward pass plus ``conv_backward`` of every gradient) — convmm and, where it
is installed, PyTorch are called alternately, ``--repeats`` times each after
a warm-up, and the medians compared.

``--backend numpy`` (the default) times the CPU engine on NumPy arrays against
PyTorch's CPU convolution (oneDNN), fairly: each library in a process of its
own (a process that has imported torch changes the allocator and OpenMP's
threads for everyone in it), each at its own defaults (convmm's
``get_num_threads()``, PyTorch's ``torch.get_num_threads()``) unless
``--threads`` sets both, on the same data (drawn from the same seed in both
processes), rounds alternating between the two processes (which one goes first
alternates too), medians of ``--repeats``.  Extra memory is measured in
convmm's process on one more, untimed, call: the larger of the tracemalloc peak
and the rise of the peak resident set (``VmHWM``, reset through
``/proc/self/clear_refs``), less the output's own size.  The GEMM section times
``_engines.cpu.gemm.gemm`` (the implicit-GEMM kernel's engine) against
``numpy.matmul`` (OpenBLAS) at 1024³ and 2048³, in convmm's process.

``--backend cupy`` times the CUDA engine on CuPy arrays against PyTorch on
cuDNN in one process (the GPU's work is timed, not the host's), with every
layer's batch raised to 64 (unless ``--batch`` says otherwise).  Each call is timed with CUDA events on the default stream, where
CuPy, numba-cuda's launches and PyTorch all queue their work, after the device
has been synchronised.  TF32 is off on both sides (``CUPY_TF32=0`` for cuBLAS,
``torch.backends.cudnn.allow_tf32`` and ``torch.backends.cuda.matmul.allow_tf32``
False) unless ``--tf32`` allows it on both; convmm's own kernels always
compute in strict float32.  Extra memory is the peak of CuPy's memory pool in
use during the call (a memory hook), less the output.  The GEMM section times
the CUDA engine's block-tiled GEMM against ``cupy.matmul`` (cuBLAS) at 4096³.
Every pass is run twice more after its timing, and the report says whether the
two results hold the same bits.  The large-kernel section times ``method="fft"``
(cuFFT through CuPy) and ``auto`` (a GEMM method on the GPU) against cuDNN.

The small-layer section (CPU only; ``--no-small`` skips it) times calls where
per-call overhead decides: one 8×8 image, two layers of a batch of 32 28×28
images, and a training step of a small CNN written with ``conv`` and
``conv_backward`` (PyTorch's with autograd): each round's figure is the median
of ``SMALL_CALLS`` calls in a row, rounds alternating between the processes.

The start-up section times the import, a cold Numba cache and a warm one, each
in a fresh interpreter.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from importlib import resources

import array_api_compat
import numpy as np

PASSES = ("forward", "transpose", "backward")
PAUSE_S = 0.02
HANDOVER_S = 0.25
"""The CPU bench's pause before each call: longer than a library's idle threads spin
after a call (OpenBLAS's and OpenMP's, up to about 0.2 s), so that neither process's
spinning threads take the cores from the other's timed call."""


# --------------------------------------------------------------------------- layers
def load_layers(path=None):
    source = (resources.files("convmm").joinpath("layers.json").open(encoding="utf-8")
              if path is None else open(path, encoding="utf-8"))
    with source as layers:
        text = layers.read()
    return json.loads(text)["layers"]


def pick(layers, names):
    if not names:
        return layers
    chosen = [layer for layer in layers if any(name in layer["name"] for name in names)]
    if not chosen:
        known = ", ".join(layer["name"] for layer in layers)
        raise SystemExit(f"no layer matches {names}; the suite has: {known}")
    return chosen


class Layer:
    """One row of the suite: shapes, keywords and FLOP counts (channels-first)."""

    def __init__(self, spec, batch=None):
        self.spec = spec
        self.name = spec["name"]
        nd = len(spec["spatial"])
        self.n = batch or spec["N"]
        self.in_channels, self.out_channels = spec["C"], spec["K"]
        self.groups = spec.get("groups", 1)
        self.spatial, self.kernel = tuple(spec["spatial"]), tuple(spec["kernel"])
        self.nd = nd
        self.stride, self.padding, self.dilation = spec["stride"], spec["padding"], spec["dilation"]
        import convmm

        self.output = convmm.conv_output_shape(self.spatial, self.kernel, stride=self.stride,
                                               padding=self.padding, dilation=self.dilation)
        # Multiply-adds of the forward map: N·C_out·L·(C_in/G)·∏K.
        self.macs = (self.n * self.out_channels * math.prod(self.output)
                     * self.in_channels // self.groups * math.prod(self.kernel))

    def keywords(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups)

    def flops(self, which):
        return 2 * self.macs * (3 if which == "backward" else 1)

    def shape(self):
        return ", ".join([f"N={self.n} C={self.in_channels}→{self.out_channels}",
                          "×".join(map(str, self.spatial)), "k" + "×".join(map(str, self.kernel)),
                          f"s{self.stride} p{self.padding} d{self.dilation} g{self.groups}"])


# --------------------------------------------------------------------------- the calls
def convmm_call(layer, which, method, random):
    """A no-argument function that runs one pass with convmm, the pass's calls each with
    its output's bytes (for ``extra_memory``), and the arrays (``random(shape)``: standard
    normal samples of the benchmark's dtype, on the backend's device)."""

    import convmm

    kw = layer.keywords()
    x = random((layer.n, layer.in_channels, *layer.spatial))
    w = random((layer.out_channels, layer.in_channels // layer.groups, *layer.kernel))
    w /= math.sqrt(layer.in_channels * math.prod(layer.kernel))
    b = random((layer.in_channels if which == "transpose" else layer.out_channels,))
    g = random((layer.n, layer.out_channels, *layer.output))
    arrays = x, w, b, g

    def forward():
        return convmm.conv(x, w, b, method=method, **kw)

    def backward():
        return convmm.conv_backward(g, x, w, method=method, **kw)

    if which == "forward":
        return forward, [(forward, g.nbytes)], arrays
    if which == "transpose":
        def transpose():
            return convmm.conv_transpose(g, w, b, output_size=layer.spatial, method=method, **kw)

        return transpose, [(transpose, x.nbytes)], arrays

    def forward_backward():
        forward()
        return backward()

    # The forward output is freed before the backward pass starts: each call's
    # extra memory is measured beyond its own output, and the pass reports the larger.
    return forward_backward, [(forward, g.nbytes), (backward, x.nbytes + w.nbytes + b.nbytes)], arrays


def torch_call(layer, which, arrays):
    """The same pass in PyTorch, on the same memory (NumPy's or CuPy's, through DLPack)."""
    import torch

    x, w, b, g = (torch.from_dlpack(a) for a in arrays)
    kw = layer.keywords()
    conv = getattr(torch.nn.functional, f"conv{layer.nd}d")
    if which == "forward":
        return lambda: conv(x, w, b, **kw)
    if which == "transpose":
        transposed = getattr(torch.nn.functional, f"conv_transpose{layer.nd}d")
        # The output padding that brings conv_transpose back to the layer's input size.
        per_dim = [v if isinstance(v, (list, tuple)) else [v] * layer.nd
                   for v in (layer.stride, layer.padding, layer.dilation)]
        smallest = [(o - 1) * s - 2 * p + d * (k - 1) + 1
                    for o, k, s, p, d in zip(layer.output, layer.kernel, *per_dim)]
        extra = tuple(i - m for i, m in zip(layer.spatial, smallest))
        return lambda: transposed(g, w, b, stride=layer.stride, padding=layer.padding,
                                  output_padding=extra, groups=layer.groups,
                                  dilation=layer.dilation)
    xg, wg, bg = (t.clone().requires_grad_(True) for t in (x, w, b))

    def forward_backward():
        conv(xg, wg, bg, **kw).backward(g)
        xg.grad = wg.grad = bg.grad = None

    return forward_backward


# --------------------------------------------------------------------------- small layers
SMALL_LAYERS = (
    dict(name="one_8x8_image", N=1, C=8, spatial=[8, 8], K=8, kernel=[3, 3], stride=1,
         padding=1, dilation=1, groups=1),
    dict(name="batch32_28x28_1to8", N=32, C=1, spatial=[28, 28], K=8, kernel=[3, 3], stride=1,
         padding=1, dilation=1, groups=1),
    dict(name="batch32_28x28_8to16_s2", N=32, C=8, spatial=[28, 28], K=16, kernel=[3, 3],
         stride=2, padding=1, dilation=1, groups=1),
)
"""The small-layer section: calls where per-call overhead, not arithmetic, decides."""

SMALL_CALLS = 200
"""Calls per timing of a small layer (their median is one round's figure)."""

CNN_STEP = "small_cnn_step"
"""A training step of a small CNN: batch 32, 28×28, 1→8→16 channels (3×3, the second
at stride 2), bias and ReLU after each, the loss Σ y; forward, then every gradient."""


def small_cases():
    """The small-layer section's names: ``SMALL_LAYERS``, then the CNN step."""
    return [spec["name"] for spec in SMALL_LAYERS] + [CNN_STEP]


def small_call(library, name, random):
    """A no-argument function running one small case with ``library`` ("convmm" or
    "torch"), on data from ``random(shape)``."""
    if name != CNN_STEP:
        layer = Layer(next(spec for spec in SMALL_LAYERS if spec["name"] == name))
        forward, _, arrays = convmm_call(layer, "forward", "auto", random)
        return forward if library == "convmm" else torch_call(layer, "forward", arrays)
    x = random((32, 1, 28, 28))
    w1, b1 = random((8, 1, 3, 3)) / 3, random((8,))
    w2, b2 = random((16, 8, 3, 3)) / 8, random((16,))
    if library == "torch":
        import torch
        import torch.nn.functional as F

        x, w1, b1, w2, b2 = (torch.from_dlpack(a) for a in (x, w1, b1, w2, b2))
        for t in (w1, b1, w2, b2):
            t.requires_grad_(True)

        def step():
            h = F.relu(F.conv2d(x, w1, b1, padding=1))
            F.relu(F.conv2d(h, w2, b2, stride=2, padding=1)).sum().backward()
            for t in (w1, b1, w2, b2):
                t.grad = None

        return step
    import convmm

    def step():
        h = np.maximum(convmm.conv(x, w1, b1, padding=1), 0)
        y = convmm.conv(h, w2, b2, stride=2, padding=1)
        g2 = (y > 0).astype(y.dtype)                       # ∂Σ relu(y)/∂y
        second = convmm.conv_backward(g2, h, w2, stride=2, padding=1)
        g1 = second.input * (h > 0)
        first = convmm.conv_backward(g1, x, w1, padding=1, needs=("weight", "bias"))
        return first, second

    return step


# --------------------------------------------------------------------------- large kernels
LARGE_KERNELS = (
    dict(name="blur_512x512_31x31_f32", dtype="float32", peer="scipy", target=1.0,
         x=(1, 1, 512, 512), w=(1, 1, 31, 31), padding="same"),
    dict(name="blur_512x512_31x31_f64", dtype="float64", peer="scipy", target=1.0,
         x=(1, 1, 512, 512), w=(1, 1, 31, 31), padding="same"),
    dict(name="filter_bank_32x4096_16x65", dtype="float32", peer="torch", target=1.0,
         x=(32, 1, 4096), w=(16, 1, 65), padding="same"),
    dict(name="conv1d_16to16_16000_1024", dtype="float32", peer="torch", target=0.3,
         x=(1, 16, 16000), w=(16, 16, 1024), padding="same"),
    dict(name="volume_64^3_9^3", dtype="float32", peer="convmm_gemm", target=0.5,
         x=(1, 1, 64, 64, 64), w=(1, 1, 9, 9, 9), padding="same"),
    dict(name="fwd+bwd_8to8_256x256_31x31", dtype="float32", peer="torch", target=0.5,
         x=(4, 8, 256, 256), w=(8, 8, 31, 31), padding="same", backward=True),
)
"""The large-kernel section: where the FFT lowering should win.  ``peer``: the library
timed against ("scipy": ``scipy.signal.fftconvolve`` on the same padded input, in a
process of its own; "torch"; "convmm_gemm": convmm's fastest GEMM method, in convmm's
process), ``target``: the ratio convmm/peer the FFT issue holds ``auto`` to."""

GEMM_PEER_METHODS = ("tiled_blas", "implicit_gemm", "direct")


def large_cases():
    return [spec["name"] for spec in LARGE_KERNELS]


def large_call(library, name, method="auto", random=None):
    """A no-argument function running one large-kernel case with ``library`` ("convmm",
    "torch" or "scipy"), on the same data in every process; ``random(dtype, seed)``
    makes the arrays (default ``Host.random``: NumPy's; ``Gpu.random``: CuPy's)."""
    spec = next(spec for spec in LARGE_KERNELS if spec["name"] == name)
    random = (random or Host.random)(spec["dtype"], seed=7)
    x, w = random(spec["x"]), random(spec["w"]) / math.prod(spec["w"][1:]) ** 0.5
    same = [((k - 1) // 2, k // 2) for k in spec["w"][2:]]      # convmm's "same", as pairs
    if library == "scipy":
        import scipy.signal

        padded = np.pad(x[0, 0], same)
        flipped = np.ascontiguousarray(w[0, 0, ::-1, ::-1])
        return lambda: scipy.signal.fftconvolve(padded, flipped, mode="valid")
    if library == "torch":
        import torch
        import torch.nn.functional as F

        conv = {3: F.conv1d, 4: F.conv2d, 5: F.conv3d}[len(spec["x"])]
        tx, tw = torch.from_dlpack(x), torch.from_dlpack(w)
        padding = [p for pair in reversed(same) for p in pair]
        if not spec.get("backward"):
            return lambda: conv(F.pad(tx, padding), tw)
        tx.requires_grad_(True)
        tw.requires_grad_(True)

        def forward_backward():
            y = conv(F.pad(tx, padding), tw)
            y.backward(torch.ones_like(y))
            tx.grad = tw.grad = None

        return forward_backward
    import convmm

    if not spec.get("backward"):
        return lambda: convmm.conv(x, w, padding=same, method=method)

    def forward_backward():
        y = convmm.conv(x, w, padding=same, method=method)
        ones = array_api_compat.array_namespace(y).ones_like(y)
        return convmm.conv_backward(ones, x, w, padding=same, method=method)

    return forward_backward


def median_call_seconds(function, calls=SMALL_CALLS):
    """The median wall time of ``calls`` calls (after one warm-up call)."""
    function()
    return statistics.median(_wall_seconds(function) for _ in range(calls))


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


def gemm_share(sizes=(1024, 2048), repeats=5, threads=None):
    """GFLOP/s of convmm's Numba GEMM and of numpy.matmul, per size, in one run."""
    import numpy as np

    from ._engines.cpu import engine

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

    @staticmethod
    def random(dtype, seed):
        rng = np.random.default_rng(seed)
        return lambda shape: rng.standard_normal(shape).astype(dtype)

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
        from ._engines.cuda.engine import unavailable_reason

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
        from ._engines.cuda import engine

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
        from ._engines.cuda.engine import _tiles

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


# --------------------------------------------------------------------------- the command
def _progress(done, total, label):
    width = 24
    filled = width * done // total
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label:<40}")
    sys.stderr.flush()
    if done == total:
        sys.stderr.write("\n")


def run(args):
    if args.worker:
        return _worker(args.worker, json.loads(args.worker_config))
    if args.scaling:
        print(format_scaling(method_scaling(scaling_cases())))
        return 0
    if args.larger_than_memory:
        from . import bench_dask

        return bench_dask.main(["--json", args.json] if args.json else [])
    backend = BACKENDS[args.backend](args)
    batch = args.batch or backend.default_batch
    layers = [Layer(spec, batch) for spec in pick(load_layers(args.layers_file), args.layers)]
    if backend.name == "numpy":
        report = _run_host(args, backend, layers, batch)
    else:
        report = _run_device(args, backend, layers, batch)
    if args.startup:
        import tempfile

        with tempfile.TemporaryDirectory() as cold:
            report["startup_cold"] = startup(cold, backend.name)
            report["startup_warm"] = startup(cold, backend.name)
    print(format_report(report, args.passes))
    if args.plot:
        plot_report(report, args.plot)
        print(f"chart written to {args.plot}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(report, out, indent=1)
        print(f"figures written to {args.json}")
    return 0


def _report(args, backend, batch, results, gemm, torch_version, setting):
    return dict(backend=backend.name, setting=setting, peer=backend.peer, dtype=args.dtype,
                threads=args.threads, method=args.method, batch=batch, torch=torch_version,
                numpy=np.__version__, date=time.strftime("%Y-%m-%d"), results=results,
                gemm=gemm)


# --------------------------------------------------------------------------- the CPU: two processes
class _Worker:
    """A ``python -m convmm.bench --worker LIBRARY`` process, asked one thing a line."""

    def __init__(self, library, config):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "convmm.bench", "--worker", library,
             "--worker-config", json.dumps(config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, **request):
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"a bench worker stopped (exit {self.process.wait()})")
        return json.loads(line)

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.write(json.dumps(dict(op="quit")) + "\n")
        self.process.stdin.close()
        self.process.wait()
        self.process.stdout.close()


def _alternating(ours, theirs, repeats, **request):
    """Medians of ``repeats`` rounds of ``request`` to each worker process (``theirs``
    may be None), the order alternating round by round, a handover before each: the
    two libraries' (median, median or None) seconds."""
    mine, other = [], []
    for round_ in range(repeats):
        order = [(ours, mine), (theirs, other)] if theirs else [(ours, mine)]
        for worker, times in (order if round_ % 2 == 0 else order[::-1]):
            time.sleep(HANDOVER_S)
            times.append(worker.ask(**request)["seconds"])
    return statistics.median(mine), statistics.median(other) if other else None


def _run_host(args, backend, layers, batch):
    import importlib.util

    config = dict(layers=[layer.spec for layer in layers], batch=batch, dtype=args.dtype,
                  method=args.method, threads=args.threads, passes=args.passes)
    ours = _Worker("convmm", config)
    theirs = (None if args.no_torch or importlib.util.find_spec("torch") is None
              else _Worker("torch", config))
    try:
        info = ours.ask(op="info")
        peer_info = theirs.ask(op="info") if theirs else None
        jobs = [(layer, which) for layer in layers for which in args.passes]
        results = []
        for job, (layer, which) in enumerate(jobs):
            _progress(job, len(jobs), f"{layer.name} {which}")
            refused = ours.ask(op="warm", job=job).get("refused")
            if refused:     # a method asked for by name that cannot run this layer
                results.append(dict(layer=layer.name, shape=layer.shape(), which=which,
                                    refused=refused))
                continue
            if theirs:
                theirs.ask(op="warm", job=job)
            t_ours, t_torch = _alternating(ours, theirs, args.repeats, op="time", job=job)
            extra = ours.ask(op="memory", job=job)["bytes"]
            results.append(dict(layer=layer.name, shape=layer.shape(), which=which,
                                seconds=t_ours, gflops=layer.flops(which) / t_ours / 1e9,
                                extra_bytes=extra, torch_seconds=t_torch,
                                ratio=None if t_torch is None else t_ours / t_torch))
        _progress(len(jobs), len(jobs), "done")
        small = []
        for name in (small_cases() if args.small else []):
            t_ours, t_torch = _alternating(ours, theirs, args.repeats, op="small", name=name)
            small.append(dict(case=name, seconds=t_ours, torch_seconds=t_torch,
                              ratio=None if t_torch is None else t_ours / t_torch))
        large = _large_kernels(args, config, ours, theirs) if args.large else []
        gemm = ours.ask(op="gemm", repeats=max(args.repeats, 5))["rows"] if args.gemm else []
    finally:
        ours.close()
        if theirs:
            theirs.close()
    setting = ((f"each library in its own process at its own defaults, rounds alternating, "
                f"medians of {args.repeats}: " if peer_info else
                f"convmm alone (PyTorch not installed, or --no-torch), medians of "
                f"{args.repeats}: ")
               + f"convmm on {info['threads']} thread(s) (BLAS {info['blas_threads']})"
               + (f", torch on {peer_info['threads']} thread(s)" if peer_info else ""))
    report = _report(args, backend, batch, results, gemm,
                     peer_info["version"] if peer_info else None, setting)
    report["convmm_process_imported_torch"] = info["imported_torch"]
    report["small"] = small
    report["large"] = large
    return report


def _large_kernels(args, config, ours, torch_worker):
    """The large-kernel section: convmm's ``auto`` against each case's peer, rounds
    alternating, medians; ``explain``'s first words give the method ``auto`` ran."""
    import convmm

    scipy_worker = _Worker("scipy", config)
    rows = []
    try:
        for name in large_cases():
            spec = next(spec for spec in LARGE_KERNELS if spec["name"] == name)
            _progress(len(rows), len(LARGE_KERNELS), name)
            random = Host.random(spec["dtype"], seed=7)
            x, w = random(spec["x"]), random(spec["w"])
            same = [((k - 1) // 2, k // 2) for k in spec["w"][2:]]
            function = convmm.conv_backward if spec.get("backward") else convmm.conv
            arguments = (np.zeros((spec["x"][0], spec["w"][0], *spec["x"][2:]), x.dtype),) \
                if spec.get("backward") else ()
            method = convmm.explain(function, *arguments, x, w,
                                    padding=same).split(":")[1].split("(")[0].strip()
            if spec["peer"] == "convmm_gemm":     # auto and each GEMM method, alternating
                runs = [m for m in ("auto", *GEMM_PEER_METHODS)
                        if "refused" not in ours.ask(op="large", name=name, method=m)]
                times: dict = {m: [] for m in runs}
                for round_ in range(args.repeats):
                    for m in (runs if round_ % 2 == 0 else runs[::-1]):
                        time.sleep(HANDOVER_S)
                        times[m].append(ours.ask(op="large", name=name, method=m)["seconds"])
                medians = {m: statistics.median(t) for m, t in times.items()}
                best = min(runs[1:], key=medians.get)
                rows.append(dict(case=name, method=method, seconds=medians["auto"],
                                 peer=f"convmm {best}", peer_seconds=medians[best],
                                 ratio=medians["auto"] / medians[best], target=spec["target"]))
                continue
            peer = scipy_worker if spec["peer"] == "scipy" else torch_worker
            if peer is None:
                t_auto, _ = _alternating(ours, None, args.repeats, op="large", name=name)
                rows.append(dict(case=name, method=method, seconds=t_auto, peer=spec["peer"],
                                 peer_seconds=None, ratio=None, target=spec["target"]))
                continue
            t_auto, t_peer = _alternating(ours, peer, args.repeats, op="large", name=name)
            rows.append(dict(case=name, method=method, seconds=t_auto, peer=spec["peer"],
                             peer_seconds=t_peer, ratio=t_auto / t_peer, target=spec["target"]))
        _progress(len(rows), len(LARGE_KERNELS), "done")
    finally:
        scipy_worker.close()
    return rows


def _worker(library, config):
    """The loop of one bench process: convmm's (which never imports torch) or PyTorch's."""
    layers = [Layer(spec, config["batch"]) for spec in config["layers"]]
    jobs = [(layer, which) for layer in layers for which in config["passes"]]
    threads = config["threads"]
    if library == "torch":
        import torch

        if threads:
            torch.set_num_threads(threads)
    elif library == "scipy":
        pass                                # scipy.signal, imported by the first call
    else:
        import convmm

        if threads:
            convmm.set_num_threads(threads)
    built, small_built, large_built = {}, {}, {}

    def calls(job):
        if job not in built:
            layer, which = jobs[job]
            # The same data in both processes: one seed per job.
            random = Host.random(config["dtype"], seed=job)
            ours, memory_calls, arrays = convmm_call(layer, which, config["method"], random)
            built.clear()       # one job's arrays at a time
            built[job] = (torch_call(layer, which, arrays) if library == "torch" else ours,
                          memory_calls)
        return built[job]

    for line in sys.stdin:
        request = json.loads(line)
        op = request["op"]
        if op == "quit":
            break
        if op == "info":
            if library == "torch":
                reply = dict(threads=torch.get_num_threads(), version=torch.__version__)
            else:
                from threadpoolctl import threadpool_info

                blas = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
                reply = dict(threads=convmm.get_num_threads(), blas_threads=blas,
                             imported_torch="torch" in sys.modules)
        elif op == "warm":
            try:
                calls(request["job"])[0]()
                reply = {}
            except ValueError as error:     # e.g. method="winograd" on a strided layer
                if library == "torch":
                    raise
                reply = dict(refused=str(error))
        elif op == "time":
            reply = dict(seconds=_wall_seconds(calls(request["job"])[0]))
        elif op == "memory":
            reply = dict(bytes=max(extra_memory(call, out) for call, out in
                                   calls(request["job"])[1]))
        elif op == "small":
            name = request["name"]
            if name not in small_built:
                small_built[name] = small_call(library, name, Host.random(config["dtype"], seed=0))
            reply = dict(seconds=median_call_seconds(small_built[name]))
        elif op == "large":
            key = (request["name"], request.get("method", "auto"))
            try:
                if key not in large_built:
                    large_built.clear()     # one case's arrays at a time
                    large_built[key] = large_call(library, *key)
                    large_built[key]()      # warm: plans, caches, first-call costs
                reply = dict(seconds=_wall_seconds(large_built[key]))
            except ValueError as error:     # a GEMM method refusing a kernel this large
                if library != "convmm":
                    raise
                reply = dict(refused=str(error))
        elif op == "gemm":
            reply = dict(rows=gemm_share(repeats=request["repeats"], threads=threads))
        else:
            raise ValueError(f"unknown bench request {op!r}")
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    return 0


# --------------------------------------------------------------------------- the GPU: one process
def _run_device(args, backend, layers, batch):
    """The GPU backend: convmm and PyTorch in this process, timed on the device's stream."""
    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            torch = None
    random = backend.random(args.dtype, seed=0)
    results = []
    if torch is not None:
        torch = backend.setup_torch(torch)
    jobs = [(layer, which) for layer in layers for which in args.passes]
    for done, (layer, which) in enumerate(jobs):
        _progress(done, len(jobs), f"{layer.name} {which}")
        ours, calls, arrays = convmm_call(layer, which, args.method, random)
        theirs = torch_call(layer, which, arrays) if torch is not None else None
        t_ours, t_torch = timed_pair(ours, theirs, args.repeats, backend.seconds)
        extra = max(backend.extra_memory(call, out_bytes) for call, out_bytes in calls)
        results.append(dict(layer=layer.name, shape=layer.shape(), which=which,
                            seconds=t_ours, gflops=layer.flops(which) / t_ours / 1e9,
                            extra_bytes=extra, torch_seconds=t_torch,
                            ratio=None if t_torch is None else t_ours / t_torch,
                            repeatable=same_bits(ours(), ours())))
        del ours, theirs, arrays, calls
    _progress(len(jobs), len(jobs), "done")
    large = _large_kernels_device(args, backend, torch) if args.large else []
    gemm = backend.gemm(repeats=max(args.repeats, 5)) if args.gemm else []
    report = _report(args, backend, batch, results, gemm,
                     None if torch is None else torch.__version__, backend.describe())
    report["large"] = large
    if torch is not None:
        report["cudnn"] = torch.backends.cudnn.version()
    return report


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


def _large_kernels_device(args, backend, torch):
    """The large-kernel section on the GPU: convmm's ``method="fft"`` (cuFFT through
    CuPy) and ``auto`` (a GEMM method: ``auto`` takes the FFT on the CPU only), each
    against PyTorch on cuDNN, timed in this process like the suite."""
    import convmm

    rows = []
    for done, name in enumerate(large_cases()):
        _progress(done, len(LARGE_KERNELS), name)
        spec = next(spec for spec in LARGE_KERNELS if spec["name"] == name)
        theirs = None if torch is None else large_call("torch", name, random=backend.random)
        x = backend.random(spec["dtype"], seed=7)(spec["x"])
        w = backend.random(spec["dtype"], seed=7)(spec["w"])
        same = [((k - 1) // 2, k // 2) for k in spec["w"][2:]]
        auto = convmm.explain(convmm.conv, x, w, padding=same).split(":")[1].split("(")[0].strip()
        for method in ("fft", "auto"):
            ours = large_call("convmm", name, method, random=backend.random)
            t_ours, t_peer = timed_pair(ours, theirs, args.repeats, backend.seconds)
            rows.append(dict(case=name, method=auto if method == "auto" else method,
                             seconds=t_ours, peer=backend.peer, peer_seconds=t_peer,
                             ratio=None if t_peer is None else t_ours / t_peer, target=None))
            del ours
        del theirs
    _progress(len(LARGE_KERNELS), len(LARGE_KERNELS), "done")
    return rows


# --------------------------------------------------------------------------- every method's cost
SCALING_METHODS = {"forward": ("im2col", "tiled_blas", "implicit_gemm", "direct"),
                   "transpose": ("im2col", "zero_insertion", "tiled_blas", "implicit_gemm",
                                 "direct"),
                   "weight": ("im2col", "tiled_blas", "implicit_gemm", "direct")}


def scaling_cases(count=40, seed=0):
    """(name, x, weight, keywords): random small configurations (ranks, channels, groups,
    kernels, strides, dilations, padding modes, both data formats) and patch shapes
    (kernel = stride), float32."""
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < count:
        nd = int(rng.integers(1, 4))
        groups = int(rng.choice([1, 1, 2]))
        kernel = tuple(int(k) for k in rng.integers(1, 5, nd))
        stride = tuple(int(v) for v in rng.integers(1, 4, nd))
        dilation = tuple(int(v) for v in rng.integers(1, 3, nd))
        size = tuple(int(v) for v in rng.integers(6, {1: 200, 2: 40, 3: 14}[nd], nd))
        if any(d * (k - 1) + 1 > n for k, d, n in zip(kernel, dilation, size)):
            continue
        mode = str(rng.choice(["zeros", "reflect", "replicate", "circular"]))
        padding = tuple(min(int(p), n - 1) for p, n in zip(rng.integers(0, 3, nd), size))
        c_in, c_out = groups * int(rng.integers(1, 9)), groups * int(rng.integers(1, 9))
        x = rng.standard_normal((2, c_in, *size)).astype(np.float32)
        w = rng.standard_normal((c_out, c_in // groups, *kernel)).astype(np.float32)
        keywords = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                        padding_mode=mode)
        if rng.random() < 0.5:
            x = np.ascontiguousarray(np.moveaxis(x, 1, -1))
            w = np.ascontiguousarray(np.moveaxis(w, (0, 1), (-1, -2)))
            keywords["data_format"] = "channels_last"
        cases.append((f"random {len(cases)}", x, w, keywords))
    for k, channels, size in ((4, 3, 64), (16, 3, 128), (32, 3, 128), (128, 1, 256)):
        x = rng.standard_normal((2, channels, size, size)).astype(np.float32)
        w = rng.standard_normal((8, channels, k, k)).astype(np.float32)
        cases.append((f"patches {k}×{k}, stride {k}", x, w, dict(stride=k)))
    return cases


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


def format_scaling(rows):
    lines = ["every method's time over auto's (best of at least 7 calls and 0.05 s), on "
             f"{len({r['case'] for r in rows})} configurations:",
             f"{'map':<10} {'method':<15} {'median':>7} {'worst':>7}  worst case"]
    for which, methods in SCALING_METHODS.items():
        for method in methods:
            mine = [r for r in rows if r["which"] == which and r["method"] == method]
            if mine:
                worst = max(mine, key=lambda r: r["ratio"])
                lines.append(f"{which:<10} {method:<15} "
                             f"{statistics.median(r['ratio'] for r in mine):7.2f} "
                             f"{worst['ratio']:7.2f}  {worst['case']}")
    over = [r for r in rows if r["ratio"] > 10]
    lines.append(f"over 10× auto: {len(over)}" + "".join(
        f"\n  {r['case']} {r['which']} {r['method']}: {r['ratio']:.1f}×" for r in over))
    return "\n".join(lines)


def geometric_mean(values):
    values = [v for v in values if v]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def plot_report(report, path):
    """A bar chart of convmm/peer ratios: per layer and pass (one colour per pass), and
    the large-kernel cases against their targets; 1.0 marked (below it convmm is faster)."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("bench --plot draws with matplotlib: pip install 'convmm[plot]'") \
            from None
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    rows = [r for r in report["results"] if r.get("ratio") is not None]
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    passes = list(dict.fromkeys(r["which"] for r in rows))
    large = [r for r in report.get("large") or [] if r.get("ratio") is not None]
    figure = Figure(figsize=(max(8, 0.6 * len(layers) * max(len(passes), 1) / 2 + 3), 8 if large
                             else 5), layout="constrained")
    panels = figure.subplots(2 if large else 1, 1, squeeze=False).reshape(-1)
    width = 0.8 / max(len(passes), 1)
    for k, which in enumerate(passes):
        heights = [next((r["ratio"] for r in rows if r["layer"] == layer and r["which"] == which),
                        0.0) for layer in layers]
        panels[0].bar([i + k * width for i in range(len(layers))], heights, width, label=which)
    panels[0].axhline(1.0, color="black", linewidth=0.8)
    panels[0].set_xticks([i + width * (len(passes) - 1) / 2 for i in range(len(layers))],
                         layers, rotation=45, ha="right", fontsize=8)
    panels[0].set_ylabel(f"time convmm / {report['peer']}")
    panels[0].set_title(f"convmm against {report['peer']} ({report['backend']}, {report['dtype']},"
                        f" {report['date']}): below 1, convmm is faster", fontsize=10)
    panels[0].legend(fontsize=8, frameon=False)
    if large:
        names = [r["case"] for r in large]
        panels[1].bar(range(len(large)), [r["ratio"] for r in large], 0.6, label="convmm / peer")
        panels[1].scatter(range(len(large)), [r["target"] for r in large], marker="_", s=400,
                          color="red", label="target", zorder=3)
        panels[1].axhline(1.0, color="black", linewidth=0.8)
        panels[1].set_xticks(range(len(large)),
                             [f"{n}\n({r['peer']})" for n, r in zip(names, large)],
                             rotation=30, ha="right", fontsize=8)
        panels[1].set_ylabel("time convmm / peer")
        panels[1].set_title("large kernels (auto, the FFT lowering)", fontsize=10)
        panels[1].legend(fontsize=8, frameon=False)
    figure.savefig(path, dpi=110)
    return figure


def format_report(report, passes):
    peer = report["peer"]
    lines = [f"convmm bench ({report['backend']}, {report['date']}): {report['dtype']}, "
             f"method={report['method']}, batch {report['batch'] or 'as the suite'}, torch "
             f"{report['torch'] or 'not timed'}"
             + (f", cuDNN {report['cudnn']}" if report.get("cudnn") else ""),
             report["setting"]]
    for which in passes:
        rows = [r for r in report["results"] if r["which"] == which]
        if not rows:
            continue
        lines += ["", f"{which}:",
                  f"{'layer':<19} {'ms':>9} {'GFLOP/s':>8} {'extra MiB':>9} {peer + ' ms':>9} "
                  f"{'ratio':>6}"]
        for r in rows:
            if r.get("refused"):
                lines.append(f"{r['layer']:<19} refused: {r['refused'].split(';')[0]}")
                continue
            torch_ms = "" if r["torch_seconds"] is None else f"{r['torch_seconds'] * 1e3:9.2f}"
            ratio = "" if r["ratio"] is None else f"{r['ratio']:6.2f}"
            lines.append(f"{r['layer']:<19} {r['seconds'] * 1e3:9.2f} {r['gflops']:8.1f} "
                         f"{r['extra_bytes'] / 2 ** 20:9.1f} {torch_ms:>9} {ratio:>6}")
        rows = [r for r in rows if not r.get("refused")]
        mean = geometric_mean([r["ratio"] for r in rows])
        if mean is not None:
            worst = max(rows, key=lambda r: r["ratio"] or 0)
            lines.append(f"geometric mean convmm/{peer}: {mean:.2f}   worst: {worst['layer']} "
                         f"{worst['ratio']:.2f}")
        checked = [r for r in rows if "repeatable" in r]
        if checked:
            differing = [r["layer"] for r in checked if not r["repeatable"]]
            lines.append(f"same bits on a second run: {len(checked) - len(differing)} of "
                         f"{len(checked)} layers" + (f" (differ: {', '.join(differing)})"
                                                     if differing else ""))
    small = report.get("small") or []
    if small:
        lines += ["", f"small layers (per call, the median of {SMALL_CALLS} calls a round):",
                  f"{'case':<24} {'µs':>9} {peer + ' µs':>9} {'ratio':>6}"]
        for r in small:
            torch_us = "" if r["torch_seconds"] is None else f"{r['torch_seconds'] * 1e6:9.1f}"
            ratio = "" if r["ratio"] is None else f"{r['ratio']:6.2f}"
            lines.append(f"{r['case']:<24} {r['seconds'] * 1e6:9.1f} {torch_us:>9} {ratio:>6}")
        lines.append("")
    large = report.get("large") or []
    if large:
        lines += [""] if lines[-1] else []
        lines += ["large kernels (" + ("fft and auto against cuDNN" if report["backend"] == "cupy"
                                       else "auto against each case's peer") + "):",
                  f"{'case':<28} {'method':<14} {'ms':>9} {'peer':<20} {'peer ms':>9} "
                  f"{'ratio':>6} {'target':>6}"]
        for r in large:
            peer_ms = "" if r["peer_seconds"] is None else f"{r['peer_seconds'] * 1e3:9.2f}"
            ratio = "" if r["ratio"] is None else f"{r['ratio']:6.2f}"
            target = "" if r["target"] is None else f"{r['target']:6.2f}"
            lines.append(f"{r['case']:<28} {r['method']:<14} {r['seconds'] * 1e3:9.2f} "
                         f"{r['peer']:<20} {peer_ms:>9} {ratio:>6} {target:>6}")
        lines.append("")
    for row in report.get("gemm", []):
        lines.append(f"GEMM {row['size']}³ float32: convmm {row['convmm_gflops']:.1f} GFLOP/s, "
                     f"{row['peer']} {row['peer_gflops']:.1f} GFLOP/s: convmm at "
                     f"{100 * row['share']:.0f}% (max rel. error {row['relative_error']:.1e})")
    for key, label in (("startup_cold", "cold Numba cache"), ("startup_warm", "warm Numba cache")):
        if key in report:
            s = report[key]
            lines.append(f"start-up, {label}: import {s['import_s']:.2f} s, first calls of "
                         f"every kernel {s['first_call_s']:.2f} s, the same calls on new shapes "
                         f"{s['later_call_s']:.3f} s")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The bench's command-line options (every one with its help text)."""
    parser.add_argument("--backend", default="numpy", choices=tuple(BACKENDS),
                        help="numpy: the CPU engine against PyTorch's CPU convolution; cupy: "
                             "the CUDA engine against PyTorch on cuDNN, N=64 unless --batch")
    parser.add_argument("--tf32", action="store_true",
                        help="with --backend cupy: allow TF32 in cuBLAS (CUPY_TF32=1) and in "
                             "PyTorch (cudnn and matmul allow_tf32); default off on both")
    parser.add_argument("--layers", nargs="*", default=[],
                        help="layer names (or parts of names) to run; default: all (an "
                             "unknown name lists the suite's names)")
    parser.add_argument("--layers-file", help="a layers.json other than the bundled suite")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"),
                        help="the arrays' dtype (default float32)")
    parser.add_argument("--threads", type=int,
                        help="threads for both libraries (default: each library's own default)")
    parser.add_argument("--pass", dest="passes", nargs="*", default=list(PASSES), choices=PASSES,
                        help="the passes to time: forward (conv), transpose (conv_transpose) "
                             "and backward (forward+backward); default all three")
    parser.add_argument("--method", default="auto",
                        help="convmm's method: auto (the default), im2col, tiled_blas, "
                             "implicit_gemm, direct or winograd; layers it cannot run are "
                             "listed as refused")
    parser.add_argument("--batch", type=int, help="replace every layer's N")
    parser.add_argument("--repeats", type=int, default=7,
                        help="timed rounds per layer and pass, alternating between the two "
                             "libraries; the report gives medians (default 7)")
    parser.add_argument("--json", help="write the figures to this JSON file")
    parser.add_argument("--plot", metavar="FILE",
                        help="draw a bar chart of the ratios into this image file (PNG, SVG, "
                             "...; needs the plot extra, matplotlib)")
    parser.add_argument("--no-torch", action="store_true", help="time convmm alone")
    parser.add_argument("--no-gemm", dest="gemm", action="store_false",
                        help="skip the GEMM kernel against numpy.matmul (cupy.matmul on the GPU)")
    parser.add_argument("--no-small", dest="small", action="store_false",
                        help="skip the small-layer section (per-call overhead; CPU only)")
    parser.add_argument("--no-large", dest="large", action="store_false",
                        help="skip the large-kernel section (on the CPU, auto against "
                             "scipy.signal.fftconvolve, PyTorch and convmm's GEMM methods; on "
                             "the GPU, method='fft' on cuFFT and auto against cuDNN)")
    parser.add_argument("--no-startup", dest="startup", action="store_false",
                        help="skip the start-up and cold-compile timings")
    parser.add_argument("--larger-than-memory", action="store_true",
                        help="instead of the suite: a 2 GiB Zarr volume convolved (3×3×3, 1 → 8 "
                             "channels, stride 2, reflect) and transposed back on Dask clusters "
                             "of 1 and 2 workers of 1 GiB each; peak memory per worker, "
                             "time and throughput (needs the dask extra; several minutes)")
    parser.add_argument("--scaling", action="store_true",
                        help="instead of the suite: every method's time over auto's, on random "
                             "small configurations and patch shapes (kernel = stride)")
    # The processes the CPU bench times each library in (not for users).
    parser.add_argument("--worker", choices=("convmm", "torch", "scipy"), help=argparse.SUPPRESS)
    parser.add_argument("--worker-config", help=argparse.SUPPRESS)


if __name__ == "__main__":     # a bench worker: python -m convmm.bench --worker LIBRARY
    _parser = argparse.ArgumentParser(prog="python -m convmm.bench")
    add_arguments(_parser)
    sys.exit(run(_parser.parse_args()))
