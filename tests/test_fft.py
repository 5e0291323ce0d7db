"""The FFT lowering (``method="fft"``) on every backend against the literal definitions.

An FFT's rounding error is normwise, not elementwise: about ε·log₂(n) relative to the
largest values that meet in a sum, not to each output.  So these tests bound

    max |got − want|  ≤  FFT_ERROR_FACTOR · ε · log₂(transform points) · scale,

with ``scale`` the largest sum of magnitudes that can meet in one output (for conv,
max|x|·max_o Σ_{c,t}|W[o, c, t]| + max|b|), ``want`` computed in double precision from
the same rounded inputs.  Seeded random configurations as in test_reference.py.
"""

import math

import numpy as np
import pytest
import scipy.signal

import convmm
from convmm import reference
from convmm._core import fft
from convmm._core.validation import prepare
from helpers import (make_conv_inputs, random_array, random_config, random_transpose_case,
                     to_numpy, to_xp, wide)

FFT_ERROR_FACTOR = 4
"""Measured worst ratio of the error to ε·log₂(points)·scale: 0.6 over 300 configurations."""

SEEDS = range(30)


def _points(x, w, transposed, **keywords):
    call = prepare(x, w, None, None, transposed=transposed, method="auto", **keywords)
    return math.prod(fft.fft_geometry(call.geometry).length), call


def assert_normwise(got, want, xp, dtype, scale, points):
    """got is in xp's namespace, with want's shape and ``dtype``, within the FFT's normwise bound."""
    assert type(got) is type(xp.zeros(1)), f"result in the wrong namespace: {type(got)}"
    got = to_numpy(got)
    assert got.dtype == np.dtype(dtype), f"dtype {got.dtype}, expected {dtype}"
    assert got.shape == want.shape, f"shape {got.shape}, expected {want.shape}"
    eps = np.finfo(np.dtype(dtype)).eps
    bound = FFT_ERROR_FACTOR * eps * math.log2(max(points, 2)) * scale
    error = float(np.max(np.abs(got - want))) if want.size else 0.0
    assert error <= bound, f"error {error:.3g} over the normwise bound {bound:.3g}"


def _forward_weight(w, data_format):
    """A weight as (O, C_g, *K) whatever its data format."""
    if data_format == "channels_first":
        return w
    return np.moveaxis(np.moveaxis(w, -1, 0), -1, 1)


def _row_sum(w):
    """max over the first axis of the sum of magnitudes over the others."""
    w = np.abs(wide(w))
    return float(np.max(w.reshape(w.shape[0], -1).sum(axis=1))) if w.size else 0.0


def _max(a):
    return float(np.max(np.abs(a))) if a is not None and a.size else 0.0


@pytest.mark.parametrize("seed", SEEDS)
def test_conv(xp, seed):
    rng = np.random.default_rng(seed)
    cfg = random_config(rng)
    x, w, b = make_conv_inputs(rng, cfg)
    keywords = dict(padding_mode=cfg.padding_mode, **cfg.kwargs())
    got = convmm.conv(to_xp(xp, x), to_xp(xp, w), to_xp(xp, b), method="fft", **keywords)
    want = reference.conv(wide(x), wide(w), wide(b), **keywords)
    points, _ = _points(x, w, False, **keywords)
    scale = _max(x) * _row_sum(_forward_weight(w, cfg.data_format)) + _max(b)
    assert_normwise(got, want, xp, cfg.dtype, scale, points)


@pytest.mark.parametrize("seed", SEEDS)
def test_conv_transpose(xp, seed):
    rng = np.random.default_rng(seed)
    cfg, x, w, b, keywords = random_transpose_case(rng)
    got = convmm.conv_transpose(to_xp(xp, x), to_xp(xp, w), to_xp(xp, b), method="fft",
                                **keywords)
    want = reference.conv_transpose(wide(x), wide(w), wide(b), **keywords)
    points, _ = _points(x, w, True, **keywords)
    # Each output sums at most one product per (input channel, tap), and a padding mode
    # folds at most three padded positions per axis onto one sample.
    weight = np.swapaxes(_forward_weight(w, cfg.data_format), 0, 1)
    scale = 3 ** cfg.nd * _max(x) * _row_sum(weight) + _max(b)
    assert_normwise(got, want, xp, cfg.dtype, scale, points)


@pytest.mark.parametrize("seed", SEEDS)
def test_conv_backward(xp, seed):
    rng = np.random.default_rng(seed)
    cfg = random_config(rng)
    x, w, _ = make_conv_inputs(rng, cfg)
    keywords = dict(padding_mode=cfg.padding_mode, **cfg.kwargs())
    y = reference.conv(wide(x), wide(w), **keywords)
    g = random_array(rng, y.shape, cfg.dtype)
    got = convmm.conv_backward(to_xp(xp, g), to_xp(xp, x), to_xp(xp, w), method="fft",
                               **keywords)
    want = reference.conv_backward(wide(g), wide(x), wide(w), **keywords)
    points, call = _points(x, w, False, **keywords)
    forward = _forward_weight(w, cfg.data_format)
    assert_normwise(got.input, want[0], xp, cfg.dtype,
                    3 ** cfg.nd * _max(g) * _row_sum(np.swapaxes(forward, 0, 1)), points)
    terms = (cfg.batch or 1) * call.geometry.n_positions
    assert_normwise(got.weight, want[1], xp, cfg.dtype, _max(g) * _max(x) * terms, points)
    assert_normwise(got.bias, want[2], xp, cfg.dtype, _max(g) * terms, points)


@pytest.mark.parametrize("seed", SEEDS)
def test_conv_transpose_backward(xp, seed):
    rng = np.random.default_rng(seed)
    cfg, x, w, _, keywords = random_transpose_case(rng)
    y = reference.conv_transpose(wide(x), wide(w), **keywords)
    g = random_array(rng, y.shape, cfg.dtype)
    got = convmm.conv_transpose_backward(to_xp(xp, g), to_xp(xp, x), to_xp(xp, w),
                                         method="fft", **keywords)
    want = reference.conv_transpose_backward(wide(g), wide(x), wide(w), **keywords)
    points, call = _points(x, w, True, **keywords)
    forward = _forward_weight(w, cfg.data_format)
    assert_normwise(got.input, want[0], xp, cfg.dtype, _max(g) * _row_sum(forward), points)
    terms = (cfg.batch or 1) * math.prod(call.geometry.output_size) * 3 ** cfg.nd
    assert_normwise(got.weight, want[1], xp, cfg.dtype, _max(g) * _max(x) * terms, points)


@pytest.mark.parametrize("dtype", ["float64", "complex64"])
def test_many_channels_mix_by_batched_matrix_products(dtype):
    """With at least ``fft.MATMUL_MIN`` images, input and output channels, each frequency's
    channel mixing is a batched ``matmul`` (``uses_matmul``), not broadcast products: every
    map of the FFT lowering through it, against the definitions."""
    rng = np.random.default_rng(11)
    n, c_in, c_out = fft.MATMUL_MIN, fft.MATMUL_MIN + 1, fft.MATMUL_MIN + 2
    x = random_array(rng, (n, c_in, 11, 10), dtype)
    w = random_array(rng, (c_out, c_in, 4, 3), dtype)
    keywords = dict(padding=2, stride=2, dilation=1, groups=1, data_format="channels_first",
                    padding_mode="reflect")
    points, call = _points(x, w, False, **keywords)
    assert fft.uses_matmul(n, c_in, c_out)
    got = convmm.conv(x, w, method="fft", **keywords)
    want = reference.conv(wide(x), wide(w), **keywords)
    assert_normwise(got, want, np, dtype, _max(x) * _row_sum(w), points)
    g = random_array(rng, want.shape, dtype)
    grads = convmm.conv_backward(g, x, w, method="fft", **keywords)
    wanted = reference.conv_backward(wide(g), wide(x), wide(w), **keywords)
    assert_normwise(grads.input, wanted[0], np, dtype,
                    9 * _max(g) * _row_sum(np.swapaxes(w, 0, 1)), points)
    terms = n * call.geometry.n_positions
    assert_normwise(grads.weight, wanted[1], np, dtype, _max(g) * _max(x) * terms, points)


@pytest.mark.parametrize("seed", range(40))
def test_chunks_and_overlap_save_blocks_give_the_whole_result(seed):
    """The three maps cut into chunks of the batch and blocks of rows (budgets of one
    byte, 4 KiB and 1 GiB) against the definitions: every block boundary, the last
    short block, rows no output reaches."""
    rng = np.random.default_rng(1000 + seed)
    cfg = random_config(rng, dtypes=("float64", "complex128"))
    x, w, _ = make_conv_inputs(rng, cfg)
    keywords = dict(padding_mode=cfg.padding_mode, **cfg.kwargs())
    call = prepare(x, w, None, None, transposed=False, method="auto", **keywords)
    xp, geometry, n = call.xp, call.geometry, call.x.shape[0]
    g = random_array(rng, reference.conv(wide(x), wide(w), **keywords).shape, cfg.dtype)
    gb = g if cfg.batch is not None else g[None]
    transforms = fft.Transforms(xp, call.x)
    complex_input = np.dtype(cfg.dtype).kind == "c"
    for budget in (1, 4096, 1 << 30):
        blocks = {op: fft.fft_blocks(geometry, op, n, cfg.in_channels, cfg.out_channels,
                                     cfg.groups, 16 if complex_input else 8, complex_input,
                                     budget)
                  for op in ("forward", "adjoint", "weight_grad")}
        y = fft.forward(xp, transforms, call.x, call.weight, geometry, call.padding_mode, call.groups,
                        call.layout, blocks["forward"])
        z = fft.adjoint(xp, transforms, gb, np.conj(call.weight), geometry, call.padding_mode,
                        call.groups, call.layout, blocks["adjoint"])
        r = fft.weight_gradient(xp, transforms, gb, np.conj(call.x), geometry, call.padding_mode,
                                call.groups, call.layout, blocks["weight_grad"])
        want = reference.conv_backward(g, x, w, **keywords)
        y_want = reference.conv(x, w, **keywords)
        np.testing.assert_allclose(y if cfg.batch is not None else y[0], y_want, atol=1e-11)
        np.testing.assert_allclose(z if cfg.batch is not None else z[0], want[0], atol=1e-11)
        np.testing.assert_allclose(r, want[1], atol=1e-10)


def test_a_long_signal_runs_in_overlap_save_blocks_within_the_budget():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 1, 1 << 21)).astype(np.float32)
    w = rng.standard_normal((2, 1, 65)).astype(np.float32)
    plan = convmm.explain(convmm.conv, x, w, padding="same", method="fft")
    assert "overlap-save blocks" in plan, plan
    got = convmm.conv(x, w, padding="same", method="fft")
    want = convmm.conv(x, w, padding="same", method="im2col")
    scale = _max(x) * _row_sum(w)
    assert float(np.max(np.abs(got - want))) <= FFT_ERROR_FACTOR * 2 * 1.2e-7 * 22 * scale
    from convmm._engines import policy
    from convmm._engines import fft_blocks
    from convmm._engines.tunables import TUNABLES

    call = prepare(x, w, None, None, transposed=False, method="fft", stride=1, padding="same",
                   dilation=1, groups=1, padding_mode="zeros", data_format="channels_first")
    fft_plan = policy.plan(call, "forward")
    assert fft_plan.fft.rows > 0
    assert fft_plan.workspace_bytes <= fft_blocks.fft_budget(call, fft_plan.patch_matrix_bytes,
                                                              4, TUNABLES)


def test_fft_is_refused_where_the_kernels_spectrum_alone_would_not_fit():
    x = np.zeros((1, 512, 64, 64), np.float32)
    w = np.zeros((512, 512, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"method='fft' would need .*kernel's spectrum"):
        convmm.conv(x, w, padding=1, method="fft")
    with pytest.raises(ValueError, match=r"method='fft' would need"):
        convmm.explain(convmm.conv, x, w, padding=1, method="fft")


@pytest.mark.parametrize("mode", ["full", "valid", "same"])
@pytest.mark.parametrize("shape, kernel", [((200,), (31,)), ((40, 33), (9, 8)),
                                           ((12, 10, 9), (5, 4, 3))])
def test_correlate_and_convolve_match_scipy(mode, shape, kernel):
    rng = np.random.default_rng(len(shape))
    a, v = rng.standard_normal(shape), rng.standard_normal(kernel)
    np.testing.assert_allclose(convmm.correlate(a, v, mode, method="fft"),
                               scipy.signal.correlate(a, v, mode, method="direct"), atol=1e-12)
    np.testing.assert_allclose(convmm.convolve(a, v, mode, method="fft"),
                               scipy.signal.fftconvolve(a, v, mode), atol=1e-12)


def test_the_operator_applies_the_fft_both_ways():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((3, 2, 4, 3))
    op = convmm.ConvOperator(w, (2, 9, 8), stride=2, padding=1, padding_mode="reflect",
                             method="fft")
    dense = convmm.toeplitz(w, (2, 9, 8), stride=2, padding=1, padding_mode="reflect",
                            format="dense")
    v, u = rng.standard_normal(op.shape[1]), rng.standard_normal(op.shape[0])
    np.testing.assert_allclose(op.matvec(v), dense @ v, atol=1e-12)
    np.testing.assert_allclose(op.rmatvec(u), dense.T @ u, atol=1e-12)


def test_explain_describes_the_transforms():
    x, w = np.ones((2, 3, 64, 64), np.float32), np.ones((4, 3, 15, 15), np.float32)
    plan = convmm.explain(convmm.conv, x, w, padding="same", method="fft")
    assert plan.startswith("conv: fft: transforms of 80×80 points, whole images, 2 per chunk")
    assert "kernel's spectrum" in plan
    lines = convmm.explain(convmm.conv_backward, np.ones((2, 4, 64, 64), np.float32), x, w,
                           padding="same", method="fft").splitlines()
    assert [line.split(":")[0:2] for line in lines] == [["input", " fft"], ["weight", " fft"]]


# --------------------------------------------------------------------------- auto
def test_auto_takes_the_fft_for_large_kernels_and_says_why(machine_rates):
    x, w = np.ones((1, 1, 512, 512), np.float32), np.ones((1, 1, 31, 31), np.float32)
    plan = convmm.explain(convmm.conv, x, w, padding="same")
    assert plan.startswith("conv: fft (961-tap kernel: modelled "), plan
    assert "by GEMM at this machine's calibrated rates for float32" in plan
    volume, cube = np.ones((1, 1, 64, 64, 64), np.float32), np.ones((1, 1, 9, 9, 9), np.float32)
    assert convmm.explain(convmm.conv, volume, cube, padding="same").startswith("conv: fft")


@pytest.mark.parametrize("kernel", [(3, 3), (4, 3), (15,), (2, 2, 3)])
def test_auto_never_takes_the_fft_for_small_kernels(kernel):
    """Below ``fft_min_taps`` taps the FFT's normwise error would show, however cheap it is."""
    from convmm._engines import tunables

    assert math.prod(kernel) < tunables.TUNABLES.fft_min_taps
    x = np.ones((1, 1, *(256 if len(kernel) < 3 else 32 for _ in kernel)), np.float32)
    w = np.ones((1, 1, *kernel), np.float32)
    assert "fft" not in convmm.explain(convmm.conv, x, w, padding="same").split("(")[0]


def test_auto_leaves_other_namespaces_to_their_array_api_path():
    torch = pytest.importorskip("torch")
    plan = convmm.explain(convmm.conv, torch.ones(1, 1, 128, 128), torch.ones(1, 1, 31, 31))
    assert plan.startswith("conv: im2col"), plan


def test_the_operator_takes_the_fft_where_auto_would(machine_rates):
    """``ConvOperator`` applies C and Cᵀ by the map ``auto`` plans: the FFT for a blur on a
    machine whose GEMM is slow against its FFT (injected rates: the choice follows them,
    not this machine's speed), the GEMM methods where the GEMM is fast."""
    from convmm._engines import policy

    rng = np.random.default_rng(5)
    w = rng.standard_normal((1, 1, 17, 17))
    machine_rates(gemm=1e12)
    op = convmm.ConvOperator(w, (1, 96, 96), padding="same", padding_mode="reflect")
    assert policy.main_plan(op._call, "forward").method != "fft"
    machine_rates(gemm=2e10)
    op = convmm.ConvOperator(w, (1, 96, 96), padding="same", padding_mode="reflect")
    assert policy.main_plan(op._call, "forward").method == "fft"
    assert policy.main_plan(op._call, "adjoint").method == "fft"
    dense = convmm.toeplitz(w, (1, 96, 96), padding="same", padding_mode="reflect")
    v, u = rng.standard_normal(op.shape[1]), rng.standard_normal(op.shape[0])
    points = math.prod(fft.fft_geometry(op._call.geometry).length)
    bound = FFT_ERROR_FACTOR * np.finfo(np.float64).eps * math.log2(points)
    assert np.max(np.abs(op.matvec(v) - dense @ v)) <= bound * _max(v) * _row_sum(w) * 9
    assert np.max(np.abs(op.rmatvec(u) - dense.T @ u)) <= bound * _max(u) * _row_sum(w) * 9


def test_auto_keeps_non_finite_and_huge_inputs_off_the_fft(machine_rates):
    """One NaN or inf would spread over a whole transform (a GEMM keeps it to the outputs
    it reaches), and values near float32's limit overflow the transforms' sums: where
    ``auto`` chose the FFT, such inputs run by the GEMM methods instead."""
    w = np.full((1, 1, 31, 31), 1 / 961, np.float32)
    x = np.ones((1, 1, 256, 256), np.float32)
    assert convmm.explain(convmm.conv, x, w, padding="same").startswith("conv: fft")
    x[0, 0, 0, 0] = np.nan
    assert np.isnan(convmm.conv(x, w, padding="same")).sum() == 16 * 16
    x[0, 0, 0, 0] = np.inf
    y = convmm.conv(x, w, padding="same")
    assert np.isinf(y).sum() == 16 * 16 and not np.isnan(y).any()
    big = np.full((1, 1, 256, 256), 1e34, np.float32)
    np.testing.assert_allclose(convmm.conv(big, w, padding="same")[0, 0, 128, 128], 1e34,
                               rtol=1e-5)
    grads = convmm.conv_backward(np.ones((1, 1, 256, 256), np.float32), x, w, padding="same")
    assert np.isinf(grads.weight).any() and np.isfinite(grads.input).all()


