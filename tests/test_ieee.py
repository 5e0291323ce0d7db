"""IEEE values: every method makes the products its definition names, and no other.

The definitions are ``convmm.reference``'s loops: the padding of ``padding_mode="zeros"``
is a sample of value zero (``0·inf`` is NaN there, as in PyTorch), while the zeros that a
method inserts (zero insertion's gaps, a phase's missing taps, the flipped convolution's
padding in a transpose, GEMM panels' padding) are never multiplied.  ``correlate`` and
``convolve`` sum over the overlap of in1 and in2, as ``numpy.convolve`` does, so an inf
or NaN of in2 reaches only the outputs it overlaps.  The GEMM and direct methods give the
definition's NaN, inf (with its sign) and finite values; the transform methods (Winograd,
the FFT, documented) may spread a non-finite value within a tile or a transform, but
never hide one.
"""

import itertools

import numpy as np
import pytest
import scipy.signal

import convmm
from convmm import reference
from helpers import (make_conv_inputs, random_config, random_transpose_case, signal_pair,
                     to_numpy, wide)

EXACT_METHODS = ("auto", "im2col", "tiled_blas", "implicit_gemm", "direct")
TRANSPOSE_EXACT_METHODS = (*EXACT_METHODS, "zero_insertion")
TRANSFORM_METHODS = ("winograd", "fft")
SPECIALS = (np.inf, -np.inf, np.nan)

# NumPy warns of the NaN an inf makes (in a matmul, a product, a transform): here it is
# the point.
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning",
                                        "ignore:overflow encountered:RuntimeWarning")


def _spoiled(rng, a, count=2):
    """A copy of ``a`` with ``count`` entries set to inf, −inf or NaN."""
    a = np.array(a)
    for _ in range(count):
        index = tuple(int(rng.integers(0, n)) for n in a.shape)
        a[index] = SPECIALS[int(rng.integers(0, 3))]
    return a


def _one_spoiled(rng, where, grad_output, x, weight):
    """(grad_output, x, weight) with the one named spoiled."""
    arrays = {"grad_output": grad_output, "x": x, "weight": weight}
    arrays[where] = _spoiled(rng, arrays[where])
    return arrays["grad_output"], arrays["x"], arrays["weight"]


def assert_same_ieee(got, want, dtype):
    """NaN where the definition has NaN, inf of its sign where it has inf (finite and
    non-finite only, for complex: how a complex product splits inf into its parts is
    the multiplication's, not the method's), finite values close."""
    got, want = to_numpy(got), np.asarray(want)
    assert got.shape == want.shape
    if got.dtype.kind == "c":
        np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want))
    else:
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want))
        np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))
    finite = np.isfinite(want)
    tol = 2e-5 if np.dtype(dtype) in (np.float32, np.complex64) else 1e-12
    scale = max(1.0, float(np.max(np.abs(want[finite])))) if finite.any() else 1.0
    np.testing.assert_allclose(got[finite], want[finite], rtol=tol, atol=tol * scale)


def assert_nothing_hidden(got, want):
    """Every output the definition makes non-finite is non-finite (a transform method may
    make more of them)."""
    got, want = to_numpy(got), np.asarray(want)
    assert got.shape == want.shape
    assert np.isfinite(got)[~np.isfinite(want)].sum() == 0


def _run(function, method, *args, **kwargs):
    """The call by ``method``, or None where the method does not serve this configuration
    (Winograd off stride 1, an engine method on a dtype it has no kernel for)."""
    try:
        return function(*args, method=method, **kwargs)
    except ValueError as error:
        if method in ("winograd", "fft") and "method=" in str(error):
            return None
        raise


def _check_methods(function, exact, args, kwargs, want, dtype, pick=lambda r: (r,)):
    for method in exact + TRANSFORM_METHODS:
        got = _run(function, method, *args, **kwargs)
        if got is None:
            continue
        for g, w in zip(pick(got), pick(want)):
            if method in TRANSFORM_METHODS:
                assert_nothing_hidden(g, w)
            else:
                assert_same_ieee(g, w, dtype)


# --------------------------------------------------------------------------- the maps
@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("where", ["x", "weight"])
def test_conv_makes_only_the_definitions_products(seed, where):
    rng = np.random.default_rng(seed)
    cfg = random_config(rng, nd=1 + seed % 3)
    x, w, b = make_conv_inputs(rng, cfg)
    x, w = (_spoiled(rng, x), w) if where == "x" else (x, _spoiled(rng, w))
    kw = cfg.kwargs(padding_mode=cfg.padding_mode)
    want = reference.conv(wide(x), wide(w), wide(b), **kw)
    _check_methods(convmm.conv, EXACT_METHODS, (x, w, b), kw, want, cfg.dtype)


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("where", ["x", "weight"])
def test_conv_transpose_makes_only_the_definitions_products(seed, where):
    """Cᵀ scatters products: no zero of padding, insertion or a flipped map enters."""
    rng = np.random.default_rng(1000 + seed)
    cfg, x, w, b, kw = random_transpose_case(rng)
    x, w = (_spoiled(rng, x), w) if where == "x" else (x, _spoiled(rng, w))
    want = reference.conv_transpose(wide(x), wide(w), wide(b), **kw)
    _check_methods(convmm.conv_transpose, TRANSPOSE_EXACT_METHODS, (x, w, b), kw, want,
                   cfg.dtype)


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("where", ["grad_output", "x", "weight"])
def test_conv_backward_makes_only_the_definitions_products(seed, where):
    rng = np.random.default_rng(2000 + seed)
    cfg = random_config(rng, nd=1 + seed % 3)
    x, w, _ = make_conv_inputs(rng, cfg)
    kw = cfg.kwargs(padding_mode=cfg.padding_mode)
    g = np.asarray(reference.conv(x, w, **kw)).astype(cfg.dtype)
    g, x, w = _one_spoiled(rng, where, g, x, w)
    want = reference.conv_backward(wide(g), wide(x), wide(w), **kw)
    _check_methods(convmm.conv_backward, EXACT_METHODS, (g, x, w), kw, want, cfg.dtype,
                   pick=tuple)


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("where", ["grad_output", "x", "weight"])
def test_conv_transpose_backward_makes_only_the_definitions_products(seed, where):
    rng = np.random.default_rng(3000 + seed)
    cfg, x, w, _, kw = random_transpose_case(rng)
    g = np.asarray(reference.conv_transpose(x, w, **kw)).astype(cfg.dtype)
    g, x, w = _one_spoiled(rng, where, g, x, w)
    want = reference.conv_transpose_backward(wide(g), wide(x), wide(w), **kw)
    _check_methods(convmm.conv_transpose_backward, TRANSPOSE_EXACT_METHODS, (g, x, w), kw,
                   want, cfg.dtype, pick=tuple)


@pytest.mark.parametrize("seed", range(8))
def test_the_engines_panels_pad_no_zero_into_a_product(seed):
    """Channels and positions that are no multiple of the micro-kernel's register tile or
    of a reduction block: the GEMM's panels are padded, and their zeros must meet only
    each other (or be discarded), never an inf of x or the weight."""
    rng = np.random.default_rng(9000 + seed)
    in_channels, out_channels = int(rng.integers(9, 40)), int(rng.integers(9, 70))
    x = rng.standard_normal((2, in_channels, 11, 13)).astype(np.float32)
    w = rng.standard_normal((out_channels, in_channels, 3, 3)).astype(np.float32)
    x, w = _spoiled(rng, x, count=3), _spoiled(rng, w, count=2)
    kw = dict(padding=1, stride=1 + seed % 2)
    want = reference.conv(wide(x), wide(w), **kw)
    g = _spoiled(rng, np.asarray(want, np.float32), count=3)
    grads = reference.conv_backward(wide(g), wide(x), wide(w), **kw)
    for method in EXACT_METHODS:
        assert_same_ieee(convmm.conv(x, w, method=method, **kw), want, "float32")
        for got, expected in zip(convmm.conv_backward(g, x, w, method=method, **kw), grads):
            assert_same_ieee(got, expected, "float32")


@pytest.mark.parametrize("seed", range(6))
def test_every_namespace_makes_only_the_definitions_products(seed, xp):
    """The array-API path (im2col, zero insertion) on every namespace."""
    rng = np.random.default_rng(4000 + seed)
    cfg = random_config(rng, dtypes=("float64",))
    x, w, _ = make_conv_inputs(rng, cfg)
    w = _spoiled(rng, w)
    kw = cfg.kwargs(padding_mode=cfg.padding_mode)
    want = reference.conv(x, w, **kw)
    assert_same_ieee(convmm.conv(xp.asarray(x), xp.asarray(w), method="im2col", **kw), want,
                     "float64")
    _, x, w, _, kw = random_transpose_case(np.random.default_rng(5000 + seed))
    x, w = (np.real(_spoiled(rng, a)).astype(np.float64) for a in (x, w))
    want = reference.conv_transpose(x, w, **kw)
    for method in ("im2col", "zero_insertion"):
        got = convmm.conv_transpose(xp.asarray(x), xp.asarray(w), method=method, **kw)
        assert_same_ieee(got, want, "float64")


def test_zero_insertion_never_multiplies_an_inserted_zero():
    """The public report: [1, inf, 1] at stride 2 gave a NaN beside the infs."""
    x, w = np.array([[[1., np.inf, 1.]]]), np.ones((1, 1, 3))
    want = [[[1., 1., np.inf, np.inf, np.inf, 1., 1.]]]
    for method in TRANSPOSE_EXACT_METHODS:
        np.testing.assert_array_equal(convmm.conv_transpose(x, w, stride=2, method=method),
                                      want)


def test_the_flipped_map_of_a_stride_1_transpose_gives_way_for_a_non_finite_weight():
    """At stride 1 the engines run Cᵀ as a convolution of y padded with zeros, which an inf
    tap would turn into NaN: such a weight runs the plan's fallback (PyTorch's values)."""
    x, w = np.ones((1, 1, 4)), np.array([[[np.inf, 1., 1.]]])
    for method in TRANSPOSE_EXACT_METHODS:
        np.testing.assert_array_equal(convmm.conv_transpose(x, w, method=method),
                                      [[[np.inf] * 4 + [2., 1.]]])
        np.testing.assert_array_equal(convmm.conv_transpose(x, w, padding=1, method=method),
                                      [[[np.inf] * 3 + [2.]]])


def test_zero_padding_is_a_sample_as_in_pytorch():
    """conv's zero padding is part of x̃: 0·inf is NaN there, as PyTorch computes it."""
    torch = pytest.importorskip("torch")
    x, w = np.ones((1, 1, 3)), np.array([[[np.inf, 1., 1.]]])
    want = torch.nn.functional.conv1d(torch.from_numpy(x), torch.from_numpy(w), padding=1)
    for method in EXACT_METHODS:
        np.testing.assert_array_equal(convmm.conv(x, w, padding=1, method=method),
                                      want.numpy())
    g = np.ones((1, 1, 3))
    g[0, 0, 0] = np.inf
    for method in EXACT_METHODS:
        np.testing.assert_array_equal(
            convmm.conv_backward(g, x, np.ones((1, 1, 3)), padding=1, method=method).weight,
            [[[np.nan, np.inf, np.inf]]])


# --------------------------------------------------------------------------- correlate
SIGNAL_METHODS = ("auto", "im2col", "tiled_blas", "implicit_gemm", "direct")
BOUNDARIES = ("zeros", "reflect", "replicate", "circular", "symmetric")


def _overlap_loop(a, k, mode):
    """``z[k] = Σ_l a[k + l − (N − 1)]·k[l]`` over the overlap, then ``mode``'s window."""
    m, n = a.shape, k.shape
    full = tuple(i + j - 1 for i, j in zip(m, n))
    z = np.zeros(full, np.result_type(a, k))
    for out in itertools.product(*map(range, full)):
        for tap in itertools.product(*map(range, n)):
            i = tuple(o + t - (j - 1) for o, t, j in zip(out, tap, n))
            if all(0 <= v < size for v, size in zip(i, m)):
                z[out] += a[i] * k[tap]
    if mode == "full":
        return z
    if mode == "same":
        start, size = [(j - 1) // 2 for j in n], m
    elif all(i >= j for i, j in zip(m, n)):
        start, size = [j - 1 for j in n], [i - j + 1 for i, j in zip(m, n)]
    else:
        start, size = [i - 1 for i in m], [j - i + 1 for i, j in zip(m, n)]
    return z[tuple(slice(b, b + c) for b, c in zip(start, size))]


def _signal_pair(rng, nd, larger_in2, dtype="float64"):
    """Small enough for the loop: in1 up to 8, 5 or 3 samples a side, in2 up to 6, 4, 3."""
    return signal_pair(rng, dtype, larger_in2, nd=nd, in1_top={1: 9, 2: 6, 3: 4}[nd],
                       in2_top={1: 7, 2: 5, 3: 4}[nd])


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("function", ["correlate", "convolve"])
def test_valid_with_in2_larger_reads_no_boundary(seed, boundary, function):
    """"valid" with in2 the larger is where in1 lies inside in2: in1's extension, of any
    boundary, never enters the sum (SciPy swaps the inputs)."""
    rng = np.random.default_rng(6000 + seed)
    nd = 1 + seed % 3
    x, k = _signal_pair(rng, nd, larger_in2=True)
    if x.shape == k.shape:
        k = np.pad(k, [(0, 1)] * nd)
    want = getattr(scipy.signal, function)(x, k, "valid", method="direct")
    for method in SIGNAL_METHODS + TRANSFORM_METHODS:
        got = _run(getattr(convmm, function), method, x, k, "valid", boundary=boundary)
        if got is None:
            continue
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10 * np.abs(want).max())


@pytest.mark.parametrize("boundary, scipy_name", [("circular", "wrap"), ("symmetric", "symm"),
                                                  ("zeros", "fill")])
def test_valid_with_in2_larger_equals_scipy_2d_functions(boundary, scipy_name):
    """The public report's cases, against ``correlate2d``/``convolve2d`` and their names."""
    a, b = np.array([[1., 2, 3]]), np.array([[1., 10, 100, 1000]])
    np.testing.assert_array_equal(convmm.correlate(a[0], b[0], "valid", boundary=boundary),
                                  [3210, 321])
    np.testing.assert_array_equal(convmm.convolve(a[0], b[0], "valid", boundary=boundary),
                                  [123, 1230])
    big, small = np.arange(1., 17).reshape(4, 4), np.arange(1., 13).reshape(4, 3)
    for function, peer in (("correlate", scipy.signal.correlate2d),
                           ("convolve", scipy.signal.convolve2d)):
        np.testing.assert_array_equal(
            getattr(convmm, function)(small, big, "valid", boundary=boundary),
            peer(small, big, "valid", boundary=scipy_name))
        np.testing.assert_array_equal(getattr(convmm, function)(a, b, "valid",
                                                                boundary=boundary),
                                      peer(a, b, "valid", boundary=scipy_name))


@pytest.mark.parametrize("seed", range(24))
@pytest.mark.parametrize("function", ["correlate", "convolve"])
def test_a_non_finite_in2_reaches_only_the_outputs_it_overlaps(seed, function):
    rng = np.random.default_rng(7000 + seed)
    nd = 1 + seed % 3
    dtype = ("float64", "float32", "complex128")[seed % 3 if seed % 4 else 0]
    x, k = _signal_pair(rng, nd, larger_in2=seed % 2 == 1, dtype=dtype)
    k = _spoiled(rng, k, count=1 + seed % 2)
    if seed % 5 == 0:
        x = _spoiled(rng, x, count=1)
    kernel = np.conj(k) if function == "correlate" else np.flip(k)
    for mode in ("full", "same", "valid"):
        if mode == "valid" and not (all(i >= j for i, j in zip(x.shape, k.shape))
                                    or all(i <= j for i, j in zip(x.shape, k.shape))):
            continue
        want = _overlap_loop(wide(x), wide(kernel), mode)
        for method in SIGNAL_METHODS + TRANSFORM_METHODS:
            got = _run(getattr(convmm, function), method, x, k, mode)
            if got is None:
                continue
            if method in TRANSFORM_METHODS:     # they spread it, as documented
                assert_nothing_hidden(got, want)
            else:
                assert_same_ieee(got, want, dtype)


def test_a_non_finite_in2_as_numpy_convolve():
    """The public report: in2 = [1, 2, inf, 4, nan, 6] against one sample."""
    k = np.array([1, 2, np.inf, 4, np.nan, 6])
    for method in SIGNAL_METHODS:
        got = _run(convmm.convolve, method, np.array([3.]), k)
        if got is not None:
            np.testing.assert_array_equal(got, np.convolve([3.], k))
    np.testing.assert_array_equal(convmm.correlate(np.array([1., 1]), np.array([1, np.nan, 1])),
                                  np.correlate([1., 1], [1, np.nan, 1], "full"))


@pytest.mark.parametrize("seed", range(4))
def test_a_non_finite_in2_on_every_namespace(seed, xp):
    rng = np.random.default_rng(8000 + seed)
    x, k = _signal_pair(rng, 1 + seed % 3, larger_in2=seed % 2 == 0)
    k = _spoiled(rng, k)
    got = convmm.convolve(xp.asarray(x), xp.asarray(k), "same")
    assert_same_ieee(got, _overlap_loop(x, np.flip(k), "same"), "float64")
