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

from .cases import PASSES, Layer, load_layers, pick, scaling_cases
from .measure import BACKENDS, method_scaling, startup
from .reports import format_report, format_scaling, plot_report, write_json
from .runs import _run_device, _run_host


def run(args):
    if args.scaling:
        print(format_scaling(method_scaling(scaling_cases())))
        return 0
    if args.larger_than_memory:
        from . import larger_than_memory

        return larger_than_memory.main(["--json", args.json] if args.json else [])
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
        write_json(report, args.json)
        print(f"figures written to {args.json}")
    return 0


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
