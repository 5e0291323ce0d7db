"""The SciPy-style front door: ``correlate`` and ``convolve`` on plain 1-3-d arrays equal
``scipy.signal.correlate`` / ``convolve`` (every mode, odd and even kernels, either array
the larger, every dtype) and ``np.pad`` + "valid" for the other boundaries, on every
namespace."""

import numpy as np
import pytest
import scipy.signal

import convmm
from helpers import assert_close, signal_pair, to_numpy

NUMPY_PAD = {"reflect": "reflect", "replicate": "edge", "circular": "wrap",
             "symmetric": "symmetric"}


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("function", ["correlate", "convolve"])
def test_equals_scipy_signal(seed, function, xp):
    rng = np.random.default_rng(seed)
    dtype = ["float32", "float64", "complex64", "complex128"][seed % 4]
    x, k = signal_pair(rng, dtype, larger_in2=seed % 3 == 0)
    wide = np.complex128 if np.dtype(dtype).kind == "c" else np.float64
    for mode in ("full", "same", "valid"):
        try:
            want = getattr(scipy.signal, function)(x.astype(wide), k.astype(wide), mode=mode,
                                                   method="direct")
        except ValueError:      # "valid" with neither array the larger everywhere
            with pytest.raises(ValueError, match="at least as large"):
                getattr(convmm, function)(xp.asarray(x), xp.asarray(k), mode)
            continue
        got = getattr(convmm, function)(xp.asarray(x), xp.asarray(k), mode)
        assert_close(got, want, xp, dtype=dtype)


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("boundary", sorted(NUMPY_PAD))
def test_other_boundaries_are_numpys_padding_then_valid(seed, boundary):
    rng = np.random.default_rng(100 + seed)
    nd = int(rng.integers(1, 4))
    k = rng.standard_normal(tuple(int(v) for v in rng.integers(1, 5, nd)))
    x = rng.standard_normal(tuple(int(v) + n for v, n in zip(rng.integers(1, 6, nd), k.shape)))
    for mode in ("full", "same"):
        pads = [(n - 1, n - 1) if mode == "full" else (n // 2, (n - 1) // 2) for n in k.shape]
        if boundary == "reflect" and any(p >= s for (p, _), s in zip(pads, x.shape)):
            continue
        want = scipy.signal.correlate(np.pad(x, pads, mode=NUMPY_PAD[boundary]), k, "valid")
        np.testing.assert_allclose(convmm.correlate(x, k, mode, boundary=boundary), want,
                                   rtol=1e-12, atol=1e-12)
        flipped = np.flip(k)
        np.testing.assert_allclose(convmm.convolve(x, k, mode, boundary=boundary),
                                   convmm.correlate(x, flipped, mode, boundary=boundary))


@pytest.mark.parametrize("boundary, scipy_name", [("zeros", "fill"), ("circular", "wrap"),
                                                  ("symmetric", "symm")])
@pytest.mark.parametrize("kernel", [(3, 3), (2, 2), (4, 3), (2, 5)])
def test_correlate2d_same_ports_as_the_readme_says(boundary, scipy_name, kernel):
    """``scipy.signal.correlate2d(..., "same")`` centres an even kernel one sample later
    than ``correlate`` (which convmm follows); the README's port is the correlation of
    both arrays flipped, flipped back.  ``convolve2d`` centres as ``convolve``."""
    rng = np.random.default_rng(sum(kernel))
    x, k = rng.standard_normal((7, 6)), rng.standard_normal(kernel)
    want = scipy.signal.correlate2d(x, k, "same", boundary=scipy_name)
    got = np.flip(convmm.correlate(np.flip(x), np.flip(k), "same", boundary=boundary))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    if any(n % 2 == 0 for n in kernel):     # the plain port is one sample off
        assert not np.allclose(convmm.correlate(x, k, "same", boundary=boundary), want)
    np.testing.assert_allclose(convmm.convolve(x, k, "same", boundary=boundary),
                               scipy.signal.convolve2d(x, k, "same", boundary=scipy_name),
                               rtol=1e-12, atol=1e-12)


def test_engines_agree_on_plain_arrays():
    rng = np.random.default_rng(7)
    x, k = rng.standard_normal((40, 33)), rng.standard_normal((5, 4))
    want = scipy.signal.correlate(x, k, "same")
    for method in ("auto", "im2col", "tiled_blas", "implicit_gemm", "direct", "winograd"):
        np.testing.assert_allclose(convmm.correlate(x, k, "same", method=method), want,
                                   rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("call, error, match", [
    (lambda: convmm.correlate(np.ones((1, 2, 3, 4)), np.ones(2)), ValueError, "in1 must be a plain"),
    (lambda: convmm.correlate(np.ones(3), np.ones((2, 2))), ValueError, "same number of dimensions"),
    (lambda: convmm.correlate(np.ones((3, 5)), np.ones((4, 2)), "valid"), ValueError, "at least as large"),
    (lambda: convmm.correlate(np.ones(3), np.ones(2), "ful"), ValueError, "did you mean 'full'"),
    (lambda: convmm.correlate(np.ones(3), np.ones(2), boundary="nearest"), ValueError,
     "boundary must be one of .*did you mean 'replicate'"),
    (lambda: convmm.correlate(np.ones(3, int), np.ones(2)), TypeError, "cast"),
    (lambda: convmm.convolve(np.ones(0), np.ones(2)), ValueError, "in1 must not be empty"),
    (lambda: convmm.convolve([1.0, 2.0], np.ones(2)), TypeError, "in1 must be an array"),
])
def test_bad_input_names_the_parameter(call, error, match):
    with pytest.raises(error, match=match):
        call()
