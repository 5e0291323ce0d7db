"""Robust under every input and every caller: empty batches, plans bounded by the work,
concurrent callers, long float32 sums."""

import itertools

import numpy as np
import pytest

import convmm
from helpers import to_numpy, tune

ENGINE_METHODS = ("tiled_blas", "implicit_gemm", "direct")


# --------------------------------------------------------------------------- empty batches
def _empty_case(xp, nd, data_format, groups, dtype="float32"):
    """x (0, C_in, *S), w and bias of an empty batch, in ``data_format``."""
    size, channels = (7, 6, 5)[:nd], 4
    out_channels = 6 if groups == 1 else 4
    x = np.zeros((0, channels, *size), dtype)
    w = np.ones((out_channels, channels // groups) + (3,) * nd, dtype)
    if data_format == "channels_last":
        x = np.moveaxis(x, 1, -1)
        w = np.moveaxis(w, (0, 1), (-1, -2))
    return (xp.asarray(np.ascontiguousarray(x)), xp.asarray(np.ascontiguousarray(w)),
            xp.asarray(np.ones(out_channels, dtype)))


def check_empty_batches(xp, methods, nd, data_format, groups):
    """N = 0 through every public map: empty results of the right shape, zero weight and
    bias gradients, for each method in ``methods``."""
    x, w, b = _empty_case(xp, nd, data_format, groups)
    kw = dict(stride=(1, 2, 1)[:nd], padding=1, groups=groups, data_format=data_format)
    one = convmm.conv(xp.asarray(np.zeros((1, *x.shape[1:]), np.float32)), w, method="im2col", **kw)
    y_shape = (0, *one.shape[1:])     # what a batch of one gives, less its image
    g = xp.zeros(y_shape, dtype=xp.float32)
    for method in methods:
        if method != "zero_insertion":
            y = convmm.conv(x, w, b, method=method, **kw)
            assert tuple(y.shape) == y_shape and y.dtype == xp.float32
            grads = convmm.conv_backward(g, x, w, method=method, **kw)
            assert tuple(grads.input.shape) == tuple(x.shape)
            assert tuple(grads.weight.shape) == tuple(w.shape)
            assert not np.any(to_numpy(grads.weight)) and not np.any(to_numpy(grads.bias))
            assert tuple(grads.bias.shape) == (b.shape[0],)
            assert convmm.explain(convmm.conv_backward, g, x, w, method=method, **kw).count(
                "an empty batch") == 2
        spatial = tuple(x.shape[1:-1] if data_format == "channels_last" else x.shape[2:])
        t = convmm.conv_transpose(g, w, method=method, output_size=spatial, **kw)
        assert tuple(t.shape) == tuple(x.shape)
        grads = convmm.conv_transpose_backward(x, g, w, method=method, output_size=spatial, **kw)
        assert tuple(grads.input.shape) == tuple(g.shape)
        assert not np.any(to_numpy(grads.weight))


@pytest.mark.parametrize("groups", [1, 4])
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_empty_batch_on_the_cpu_engine(nd, data_format, groups):
    methods = ("auto", "im2col", "zero_insertion", "tiled_blas", "implicit_gemm")
    check_empty_batches(np, methods + (("direct",) if groups > 1 else ()), nd, data_format, groups)


@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_empty_batch_on_every_namespace(xp, data_format):
    check_empty_batches(xp, ("auto", "im2col", "zero_insertion"), 2, data_format, 1)


def test_empty_batch_im2col_col2im_and_operator():
    x = np.zeros((0, 5, 5, 3))
    cols = convmm.im2col(x, (2, 2), data_format="channels_last")
    assert cols.shape == (0, 16, 12)
    assert convmm.col2im(cols, (5, 5), 2, data_format="channels_last").shape == (0, 5, 5, 3)
    assert convmm.im2col(np.zeros((0, 3, 5)), 2).shape == (0, 6, 4)
    op = convmm.ConvOperator(np.ones((2, 3, 3)), (3, 8))
    assert op.matmat(np.zeros((24, 0))).shape == (12, 0)
    assert convmm.upsample_bilinear(np.zeros((0, 2, 3, 3)), 2).shape == (0, 2, 5, 5)


# --------------------------------------------------------------------------- concurrent callers
def _blas_state():
    from threadpoolctl import threadpool_info

    return sorted((info["filepath"], info["num_threads"]) for info in threadpool_info()
                  if info["user_api"] == "blas")


def _mixed_calls():
    """Calls through every engine method and map, each returning a tuple of arrays."""
    rng = np.random.default_rng(1)

    def arrays(*shapes, dtype="float64"):
        return [rng.standard_normal(s).astype(dtype) for s in shapes]

    x, w, g = arrays((3, 6, 30, 28), (8, 6, 3, 3), (3, 8, 28, 26))
    xf, wf = arrays((2, 16, 20, 20), (32, 16, 3, 3), dtype="float32")
    gf = arrays((2, 32, 20, 20), dtype="float32")[0]
    xd, wd, gd = arrays((2, 8, 17, 15), (8, 1, 5, 5), (2, 8, 9, 8))
    xp_, wp = arrays((4, 24, 9, 9), (12, 24, 1, 1))
    gp = arrays((4, 12, 9, 9))[0]
    x1, w1 = arrays((4, 64, 28, 28), (128, 64, 1, 1), dtype="float32")   # BLAS's bits vary
    g1 = arrays((4, 128, 28, 28), dtype="float32")[0]                   # with its threads
    return [
        lambda: tuple(convmm.conv_backward(g, x, w)),
        lambda: (convmm.conv(xf, wf, padding=1),) + tuple(convmm.conv_backward(gf, xf, wf, padding=1)),
        lambda: (convmm.conv_transpose(g, w, method="tiled_blas", stride=1),),
        lambda: tuple(convmm.conv_backward(gd, xd, wd, stride=2, padding=2, groups=8,
                                           padding_mode="reflect")),
        lambda: (convmm.conv(xp_, wp),) + tuple(convmm.conv_backward(gp, xp_, wp)),
        lambda: (convmm.conv(xf, wf, padding=1, method="tiled_blas"),
                 convmm.conv_transpose(gf, wf, padding=1, stride=2, method="implicit_gemm")),
        lambda: (convmm.conv(x1, w1), convmm.conv_transpose(g1, w1),
                 convmm.conv_backward(g1, x1, w1).weight),
    ]


@pytest.mark.parametrize("threads", [None, 1, 3])
def test_concurrent_callers_get_the_serial_bits_and_leave_blas_as_it_was(threads):
    """Six threads, mixed functions and shapes, 30 s at most: every result is bit for bit
    the serial one, BLAS's thread counts are what they were, and explain still plans for
    the setting's threads."""
    import threading
    import time

    previous = convmm.set_num_threads(threads)
    try:
        calls = _mixed_calls()
        expected = [call() for call in calls]
        before = _blas_state()          # every library the calls load is loaded by now
        plan_before = convmm.explain(convmm.conv, *_plan_probe())
        mismatches, failures = [], []
        deadline = time.monotonic() + 30

        def worker(seed):
            try:
                for round_ in range(8):
                    if time.monotonic() > deadline:
                        return
                    index = (seed + 5 * round_) % len(calls)
                    for got, want in zip(calls[index](), expected[index]):
                        if want is not None and not np.array_equal(got, want):
                            mismatches.append(index)
            except Exception as error:      # reported below, with the thread's failure
                failures.append(repr(error))

        workers = [threading.Thread(target=worker, args=(seed,)) for seed in range(6)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join(timeout=max(1.0, deadline - time.monotonic() + 30))
        assert not any(thread.is_alive() for thread in workers), "a caller hung"
        assert not failures, failures
        assert not mismatches, f"calls {sorted(set(mismatches))} differ from their serial bits"
        assert _blas_state() == before
        assert convmm.explain(convmm.conv, *_plan_probe()) == plan_before
    finally:
        convmm.set_num_threads(previous)


def _plan_probe():
    return np.ones((2, 16, 20, 20), np.float32), np.ones((32, 16, 3, 3), np.float32)


def test_the_thread_setting():
    previous = convmm.set_num_threads(3)
    try:
        assert convmm.get_num_threads() == 3
        assert "on 3 thread(s)" in convmm.explain(convmm.conv, *_plan_probe())
        convmm.set_num_threads(1)
        assert "on 1 thread(s)" in convmm.explain(convmm.conv, *_plan_probe())
        convmm.set_num_threads(None)
        assert convmm.get_num_threads() >= 1
        with pytest.raises(ValueError, match="n must be between 1 and"):
            convmm.set_num_threads(0)
        with pytest.raises(ValueError, match="n must be between 1 and"):
            convmm.set_num_threads(10 ** 6)
        with pytest.raises(TypeError, match="n must be an integer"):
            convmm.set_num_threads(2.5)
    finally:
        convmm.set_num_threads(previous)


def test_thread_count_from_the_environment():
    import subprocess
    import sys

    code = ("import convmm, numpy as np; print(convmm.get_num_threads()); "
            "print(convmm.explain(convmm.conv, np.ones((8, 16, 40, 40), np.float32), "
            "np.ones((32, 16, 3, 3), np.float32)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**__import__("os").environ, "CONVMM_NUM_THREADS": "5"})
    assert done.returncode == 0, done.stderr
    count, plan = done.stdout.splitlines()[:2]
    assert count == "5" and "on 5 thread(s)" in plan
    bad = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "CONVMM_NUM_THREADS": "many"})
    assert bad.returncode != 0 and "CONVMM_NUM_THREADS must be a positive integer" in bad.stderr


# --------------------------------------------------------------------------- bounded pieces
@pytest.mark.parametrize("budget", ["slabs of one row", "one image at a time"])
@pytest.mark.parametrize("seed", range(12))
def test_array_api_path_in_pieces_agrees_with_the_whole(xp, seed, budget, monkeypatch):
    """The array-API path with its patch matrix cut into pieces (slabs of output rows, or
    single images) gives what the whole matrix gives, for every map and both of
    conv_transpose's methods, on random configurations."""
    from convmm._core import algorithms
    from helpers import assert_close, make_conv_inputs, random_array, random_config, to_xp
    from helpers import random_transpose_case

    rng = np.random.default_rng(9100 + seed)
    cfg = random_config(rng)
    x, w, b = make_conv_inputs(rng, cfg)
    kw = cfg.kwargs(padding_mode=cfg.padding_mode)
    y = convmm.conv(x, w, b, method="im2col", **kw)
    g = random_array(rng, y.shape, cfg.dtype)
    whole = [y, *convmm.conv_backward(g, x, w, method="im2col", **kw)]
    tcfg, tx, tw, tb, tkw = random_transpose_case(rng)
    transposed = {m: convmm.conv_transpose(tx, tw, tb, method=m, **tkw)
                  for m in ("im2col", "zero_insertion")}
    tg = random_array(rng, transposed["im2col"].shape, tcfg.dtype)
    twhole = convmm.conv_transpose_backward(tg, tx, tw, method="im2col", **tkw)

    positions = int(np.prod(y.shape[1:-1] if cfg.data_format == "channels_last" else
                            y.shape[2:] if cfg.batch else y.shape[1:]))
    one_image = (np.dtype(cfg.dtype).itemsize * cfg.in_channels * int(np.prod(cfg.kernel))
                 * positions)
    monkeypatch.setattr(algorithms, "PATCH_BYTES", 1 if budget.startswith("slabs") else one_image)
    X, W, B, G = (to_xp(xp, a) for a in (x, w, b, g))
    pieces = [convmm.conv(X, W, B, method="im2col", **kw),
              *convmm.conv_backward(G, X, W, method="im2col", **kw)]
    for got, want in zip(pieces, whole):
        assert_close(got, want, xp)
    TX, TW, TB, TG = (to_xp(xp, a) for a in (tx, tw, tb, tg))
    for method, want in transposed.items():
        assert_close(convmm.conv_transpose(TX, TW, TB, method=method, **tkw), want, xp)
    for got, want in zip(convmm.conv_transpose_backward(TG, TX, TW, method="im2col", **tkw),
                         twhole):
        assert_close(got, want, xp)


# --------------------------------------------------------------------------- large kernels and strides
_BOUNDED = r"""
import json, resource, sys, tracemalloc
import numpy as np
resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))   # an 8 GiB plan cannot even be asked for
import convmm
from convmm._core.algorithms import PATCH_BYTES
from convmm._engines.tunables import TUNABLES

INDEX_TABLE_BYTES, WORKSPACE_BYTES = TUNABLES.index_table_bytes, TUNABLES.workspace_bytes

kind, x_shape, w_shape, keywords, methods = json.loads(sys.argv[1])
rng = np.random.default_rng(0)
x = rng.standard_normal(x_shape).astype(np.float32)
w = rng.standard_normal(w_shape).astype(np.float32)

def run(method, x, w, **keywords):
    if kind == "forward":
        return convmm.conv(x, w, method=method, **keywords)
    if kind == "transpose":
        return convmm.conv_transpose(x, w, method=method, **keywords)
    g = convmm.conv(x, w, **keywords)
    return convmm.conv_backward(g, x, w, method=method, **keywords).weight

report = {}
for method in methods:
    small = tuple(slice(0, s if i < 2 else 5) for i, s in enumerate(x_shape))
    run(method, x[small], w[tuple(slice(0, s if i < 2 else 2) for i, s in enumerate(w_shape))])
    tracemalloc.start()       # the kernels are compiled by now; plans of this size are not
    out = run(method, x, w, **keywords)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    bound = (x.nbytes + w.nbytes + 3 * out.nbytes + PATCH_BYTES + 3 * INDEX_TABLE_BYTES
             + WORKSPACE_BYTES + (64 << 20))
    report[method] = [peak, bound, float(np.abs(out).max())]
print(json.dumps(report))
"""

_LARGE = {   # (map, x, weight, keywords, methods)
    "FCN-32s head": ("transpose", (1, 21, 16, 16), (21, 21, 64, 64), dict(stride=32, padding=16),
                     ["auto", "im2col", "tiled_blas", "implicit_gemm", "direct"]),
    "FCN-16s head": ("transpose", (1, 21, 32, 32), (21, 21, 32, 32), dict(stride=16, padding=8),
                     ["auto", "im2col", "tiled_blas", "implicit_gemm", "direct"]),
    "FCN-8s head": ("transpose", (1, 21, 64, 64), (21, 21, 16, 16), dict(stride=8, padding=4),
                    ["auto", "im2col", "tiled_blas", "implicit_gemm", "direct", "zero_insertion"]),
    "patchify transpose, kernel = stride = 128": (
        "transpose", (1, 1, 2, 2), (1, 1, 128, 128), dict(stride=128),
        ["auto", "im2col", "tiled_blas", "implicit_gemm", "direct"]),
    "patchify, kernel = stride = 16": ("forward", (2, 3, 224, 224), (96, 3, 16, 16), dict(stride=16),
                                       ["auto", "im2col", "tiled_blas", "implicit_gemm", "direct"]),
    "1-d, 2048 taps": ("forward", (1, 4, 16000), (4, 4, 2048), dict(padding="same"),
                       ["auto", "im2col", "implicit_gemm", "direct"]),
    "1-d, 2048 taps, transposed": ("transpose", (1, 4, 16000), (4, 4, 2048), dict(padding=1024),
                                   ["auto", "im2col", "implicit_gemm", "direct", "zero_insertion"]),
    "1-d, 2048 taps, weight gradient": ("weight_grad", (1, 4, 16000), (4, 4, 2048),
                                        dict(padding="same"), ["auto", "im2col", "direct"]),
}


@pytest.mark.parametrize("case", sorted(_LARGE))
def test_large_kernels_and_strides_stay_within_their_bounds(case):
    """Under a 6 GiB address-space limit, every method's first call (plans built, kernels
    already compiled) stays within the bound tracemalloc sees: inputs, the output three
    times, PATCH_BYTES, three times INDEX_TABLE_BYTES (an index table's build), WORKSPACE_BYTES and 64 MiB."""
    import json
    import subprocess
    import sys

    kind, x_shape, w_shape, keywords, methods = _LARGE[case]
    done = subprocess.run([sys.executable, "-c", _BOUNDED,
                           json.dumps([kind, x_shape, w_shape, keywords, methods])],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.splitlines()[-1])
    for method, (peak, bound, largest) in report.items():
        assert peak <= bound, f"{method}: peak {peak / 2**20:.0f} MiB over {bound / 2**20:.0f} MiB"
        assert np.isfinite(largest) and largest > 0, method


def test_an_engine_method_whose_index_table_would_not_fit_is_refused_and_auto_fits(monkeypatch,
                                                                          machine_rates):
    x, w = np.ones((1, 4, 16000), np.float32), np.ones((4, 4, 2048), np.float32)
    # auto takes the FFT for kernels this long; without it, the GEMM methods' own fallback.
    assert convmm.explain(convmm.conv, x, w, padding="same").startswith("conv: fft")
    tune(monkeypatch, fft_min_taps=1 << 62)
    with pytest.raises(ValueError, match=r"method='tiled_blas' would build a 250 MiB index table"
                                         r".*method='auto' takes one that needs none "
                                         r"\('implicit_gemm' here\)"):
        convmm.conv(x, w, padding="same", method="tiled_blas")
    g = convmm.conv(x, w, padding="same")
    with pytest.raises(ValueError, match=r"method='implicit_gemm' would build .*weight_grad"
                                         r".*\('im2col' here\)"):
        convmm.conv_backward(g, x, w, padding="same", method="implicit_gemm", needs="weight")
    assert "implicit_gemm would need a 250 MiB index table: im2col needs none" in convmm.explain(
        convmm.conv_backward, g, x, w, padding="same", needs="weight")
    grads = convmm.conv_backward(g, x, w, padding="same")        # auto: every map fits
    assert grads.weight.shape == w.shape and np.isfinite(grads.weight).all()
    # The adjoint of a strided long kernel: zero insertion, which needs no plan.
    t = convmm.conv_transpose(np.ones((1, 4, 4000), np.float32), w, stride=2, padding=1024)
    assert "zero_insertion needs none" in convmm.explain(
        convmm.conv_transpose, np.ones((1, 4, 4000), np.float32), w, stride=2, padding=1024)
    np.testing.assert_allclose(t, convmm.conv_transpose(np.ones((1, 4, 4000), np.float32), w,
                                                        stride=2, padding=1024,
                                                        method="im2col"), rtol=1e-5)


# --------------------------------------------------------------------------- long float32 sums
def _accuracy_cases():
    rng = np.random.default_rng(2024)

    def normal(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    return {
        "512 channels of 0.1, 3×3 ones (C·∏K = 4608)": (
            np.full((1, 512, 16, 16), np.float32(0.1)), np.ones((16, 512, 3, 3), np.float32),
            ("forward",)),
        "random 512→16, 3×3": (normal(2, 512, 16, 16), normal(16, 512, 3, 3),
                               ("forward", "transpose", "weight")),
        "random 1024→32, 3×3 (C·∏K = 9216)": (normal(1, 1024, 12, 12), normal(32, 1024, 3, 3),
                                             ("forward", "transpose", "weight")),
        "random 64→64, 3×3": (normal(2, 64, 28, 28), normal(64, 64, 3, 3),
                              ("forward", "transpose", "weight")),
    }


@pytest.mark.parametrize("case", sorted(_accuracy_cases()))
def test_float32_sums_are_as_accurate_as_pytorchs(case):
    """Every method's float32 error against a float64 oracle is at most twice PyTorch's on
    the same input: forward, transpose (the input gradient) and weight gradient."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, w, maps = _accuracy_cases()[case]
    g = np.random.default_rng(7).standard_normal((x.shape[0], w.shape[0], *x.shape[2:])) \
        .astype(np.float32)

    def error(got, exact):
        return float(np.abs(np.asarray(got, np.float64) - exact).max() / np.abs(exact).max())

    def t(a, double=False):
        return torch.from_numpy(a).double() if double else torch.from_numpy(a)

    methods = ("auto", "im2col", "tiled_blas", "implicit_gemm", "direct")
    failures = []
    if "forward" in maps:
        exact = F.conv2d(t(x, True), t(w, True), padding=1).numpy()
        peer = error(F.conv2d(t(x), t(w), padding=1).numpy(), exact)
        for method in methods:
            ours = error(convmm.conv(x, w, padding=1, method=method), exact)
            if ours > 2 * peer:
                failures.append(f"forward {method}: {ours:.2e} against PyTorch's {peer:.2e}")
    if "transpose" in maps:
        exact = F.conv_transpose2d(t(g, True), t(w, True), padding=1).numpy()
        peer = error(F.conv_transpose2d(t(g), t(w), padding=1).numpy(), exact)
        for method in methods + ("zero_insertion",):
            ours = error(convmm.conv_transpose(g, w, padding=1, method=method), exact)
            if ours > 2 * peer:
                failures.append(f"transpose {method}: {ours:.2e} against PyTorch's {peer:.2e}")
    if "weight" in maps:
        def weight_grad(double):
            weight = t(w, double).requires_grad_(True)
            F.conv2d(t(x, double), weight, padding=1).backward(t(g, double))
            return weight.grad.numpy()

        exact, peer = weight_grad(True), None
        peer = error(weight_grad(False), exact)
        for method in methods:
            ours = error(convmm.conv_backward(g, x, w, padding=1, method=method,
                                              needs="weight").weight, exact)
            if ours > 2 * peer:
                failures.append(f"weight gradient {method}: {ours:.2e} against {peer:.2e}")
    assert not failures, failures


@pytest.mark.parametrize("seed", range(40))
def test_pairs_per_sample_bounds_the_inverse_table(seed):
    """The col2im plan's pairs per sample, which decide its size before it is built, are
    at most the bound computed from the geometry."""
    from convmm._core import index_tables
    from convmm._core.geometry import conv_geometry
    from helpers import random_config

    cfg = random_config(np.random.default_rng(3300 + seed))
    geometry = conv_geometry(cfg.size, cfg.kernel, cfg.stride, cfg.pairs, cfg.dilation,
                             cfg.padding_mode)
    ranks = index_tables.gather_index_adjoint(geometry, cfg.padding_mode).shape[1]
    bound = index_tables.pairs_per_sample(geometry, cfg.padding_mode)
    assert ranks <= bound


@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
@pytest.mark.parametrize("method", ["auto", "tiled_blas", "implicit_gemm", "direct",
                                    "zero_insertion"])
def test_pointwise_transposes_keep_their_output_padding(method, data_format):
    """A 1×1 kernel's transpose with output padding (allowed below the dilation) or an
    output_size past the last sample read: the extra samples are zeros, as with im2col."""
    rng = np.random.default_rng(4)
    for nd, stride, dilation, extra in itertools.product((1, 2, 3), (1, 2), (1, 2, 3), (0, 1, 2)):
        if extra >= max(stride, dilation):
            continue
        groups = 2 if method == "direct" else 1
        x = rng.standard_normal((2, 4, *(5,) * nd))
        w = rng.standard_normal((4, 4 // groups, *(1,) * nd))
        if data_format == "channels_last":
            x = np.ascontiguousarray(np.moveaxis(x, 1, -1))
            w = np.ascontiguousarray(np.moveaxis(w, (0, 1), (-1, -2)))
        kw = dict(stride=stride, dilation=dilation, output_padding=extra, groups=groups,
                  data_format=data_format)
        want = convmm.conv_transpose(x, w, method="im2col", **kw)
        got = convmm.conv_transpose(x, w, method=method, **kw)
        assert got.shape == want.shape, (nd, stride, dilation, extra)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", range(10))
def test_col2im_by_gather_agrees_with_the_tap_loop(xp, seed, monkeypatch):
    """The gather form of col2im (chosen for many taps and few per sample) against the
    tap-by-tap loop, on random configurations of every padding mode and both formats."""
    from convmm._core import lowering
    from helpers import assert_close, random_array, random_config, to_layout, to_xp

    rng = np.random.default_rng(5100 + seed)
    cfg = random_config(rng, dtypes=("float64", "complex128"))
    x = to_layout(random_array(rng, (2, cfg.in_channels, *cfg.size), cfg.dtype), cfg)
    kw = dict(stride=cfg.stride, padding=cfg.pairs, dilation=cfg.dilation,
              padding_mode=cfg.padding_mode, data_format=cfg.data_format)
    cols = convmm.im2col(x, cfg.kernel, **kw)
    monkeypatch.setattr(lowering, "GATHER_MIN_TAPS", 10 ** 9)
    loop = convmm.col2im(to_xp(xp, cols), cfg.size, cfg.kernel, **kw)
    monkeypatch.setattr(lowering, "GATHER_MIN_TAPS", 0)
    monkeypatch.setattr(lowering, "pairs_per_sample", lambda geometry, mode: 0)
    gathered = convmm.col2im(to_xp(xp, cols), cfg.size, cfg.kernel, **kw)
    assert_close(gathered, to_numpy(loop), xp)


def test_the_first_engine_call_leaves_every_blas_on_its_threads():
    """Numba's first compilation loads SciPy's BLAS; loaded from a pinned worker it
    counted one CPU and kept one thread for good."""
    import subprocess
    import sys

    code = ("import numpy as np, convmm\n"
            "from threadpoolctl import threadpool_info\n"
            "convmm.set_num_threads(2)\n"
            "x = np.ones((8, 32, 40, 40), np.float32); w = np.ones((32, 32, 3, 3), np.float32)\n"
            "convmm.conv(x, w, padding=1)\n"
            "print(sorted((i['filepath'], i['num_threads']) for i in threadpool_info()\n"
            "             if i['user_api'] == 'blas'))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env={**__import__("os").environ,
                                            "OMP_NUM_THREADS": "2"})
    assert done.returncode == 0, done.stderr
    counts = eval(done.stdout.strip().splitlines()[-1])   # [(path, threads), ...]
    assert counts and all(threads == 2 for _, threads in counts), counts


def test_the_padded_grid_tables_of_a_long_signal_count_against_the_table_limit():
    """The engine's direct and implicit-GEMM paths map the padded grid with int64 tables
    as long as the signal: over INDEX_TABLE_BYTES, a method asked for by name is refused and
    auto takes one that needs none (a 5-million-sample signal, 15 taps: below the FFT's
    16)."""
    x = np.ones((1, 1, 5_000_000), np.float32)
    w = np.ones((1, 1, 15), np.float32)
    with pytest.raises(ValueError, match=r"method='direct' would build a \d+ MiB index table"):
        convmm.conv(x, w, padding="same", method="direct")
    plan = convmm.explain(convmm.conv, x, w, padding="same")
    assert plan.startswith("conv: im2col") and "index table" in plan, plan
    y = convmm.conv(x, w, padding="same")
    assert y.shape == x.shape and float(y[0, 0, 100]) == 15.0


def test_index_tables_kept_between_calls_are_bounded_in_bytes():
    """A long-running process (a Dask worker convolving blocks of many shapes) keeps at
    most TABLE_CACHE_BYTES of index tables, however many geometries it has seen."""
    import numpy as np

    import convmm
    from convmm._core import index_tables

    w = np.ones((2, 1, 3, 3, 3), np.float32)
    limit = index_tables.TABLE_CACHE_BYTES
    try:
        index_tables.TABLE_CACHE_BYTES = 4 << 20
        index_tables.clear_tables()
        kept = []
        for n in range(12, 26):
            convmm.conv(np.ones((1, 1, n, n, 16), np.float32), w, method="tiled_blas")
            kept.append(index_tables.cached_table_bytes())
        assert max(kept) <= 4 << 20 and max(kept) > 2 << 20, kept
    finally:
        index_tables.TABLE_CACHE_BYTES = limit
        index_tables.clear_tables()
