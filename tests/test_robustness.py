"""Robust under every input and every caller: empty batches, plans bounded by the work,
concurrent callers, long float32 sums."""

import itertools

import numpy as np
import pytest

import convmm
from helpers import to_numpy

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
