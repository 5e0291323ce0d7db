"""Every method on every backend against the literal definitions in convmm.reference.

Each test draws a random configuration from its seed (1/2/3-d, stride, every
padding form and mode, dilation, groups, bias, both data formats, unbatched
inputs, float and complex dtypes), so a failure names a reproducible case.
"""

import numpy as np
import pytest

import convmm
from convmm import reference
from helpers import (_same_pairs, assert_close, make_conv_inputs, random_array, random_config,
                     random_transpose_case, to_layout, to_xp, weight_to_layout, wide)

SEEDS = range(40)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("method", ["auto", "im2col"])
def test_conv(xp, seed, method):
    rng = np.random.default_rng(seed)
    cfg = random_config(rng)
    x, w, b = make_conv_inputs(rng, cfg)
    got = convmm.conv(to_xp(xp, x), to_xp(xp, w), to_xp(xp, b), method=method,
                      padding_mode=cfg.padding_mode, **cfg.kwargs())
    want = reference.conv(wide(x), wide(w), wide(b), padding_mode=cfg.padding_mode, **cfg.kwargs())
    assert_close(got, want, xp, dtype=cfg.dtype)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("method", ["auto", "im2col", "zero_insertion"])
def test_conv_transpose(xp, seed, method):
    rng = np.random.default_rng(seed)
    cfg, x, w, b, kw = random_transpose_case(rng)
    got = convmm.conv_transpose(to_xp(xp, x), to_xp(xp, w), to_xp(xp, b), method=method, **kw)
    want = reference.conv_transpose(wide(x), wide(w), wide(b), **kw)
    assert_close(got, want, xp, dtype=cfg.dtype)


@pytest.mark.parametrize("seed", range(8))
def test_conv_transpose_output_size_matches_output_padding(xp, seed):
    rng = np.random.default_rng(100 + seed)
    cfg, x, w, b, kw = random_transpose_case(rng)
    by_padding = convmm.conv_transpose(to_xp(xp, x), to_xp(xp, w), to_xp(xp, b), **kw)
    full_shape = tuple(by_padding.shape)
    nd = cfg.nd
    spatial = full_shape[-nd:] if cfg.data_format == "channels_first" else full_shape[-nd - 1:-1]
    kw.pop("output_padding", None)
    by_size = convmm.conv_transpose(to_xp(xp, x), to_xp(xp, w), to_xp(xp, b),
                                    output_size=spatial, **kw)
    assert_close(by_size, by_padding, xp)


@pytest.mark.parametrize("seed", SEEDS)
def test_im2col_and_col2im(xp, seed):
    rng = np.random.default_rng(seed)
    cfg = random_config(rng)
    x, _, _ = make_conv_inputs(rng, cfg)
    kw = dict(stride=cfg.stride, padding=cfg.padding, dilation=cfg.dilation,
              padding_mode=cfg.padding_mode, data_format=cfg.data_format)
    cols = convmm.im2col(to_xp(xp, x), cfg.kernel, **kw)
    want = reference.im2col(x, cfg.kernel, **kw)
    assert_close(cols, want, xp)

    c = random_array(rng, want.shape, cfg.dtype)
    image = convmm.col2im(to_xp(xp, c), cfg.size, cfg.kernel, **kw)
    assert_close(image, reference.col2im(wide(c), cfg.size, cfg.kernel, **kw), xp, dtype=cfg.dtype)


@pytest.mark.parametrize("seed", SEEDS)
def test_conv_backward(xp, seed):
    rng = np.random.default_rng(seed)
    cfg = random_config(rng)
    x, w, _ = make_conv_inputs(rng, cfg)
    y = reference.conv(x, w, padding_mode=cfg.padding_mode, **cfg.kwargs())
    g = random_array(rng, y.shape, cfg.dtype)
    got = convmm.conv_backward(to_xp(xp, g), to_xp(xp, x), to_xp(xp, w),
                               padding_mode=cfg.padding_mode, **cfg.kwargs())
    want = reference.conv_backward(wide(g), wide(x), wide(w), padding_mode=cfg.padding_mode,
                                   **cfg.kwargs())
    for actual, desired in zip(got, want):
        assert_close(actual, desired, xp, dtype=cfg.dtype)


@pytest.mark.parametrize("seed", SEEDS)
def test_conv_transpose_backward(xp, seed):
    rng = np.random.default_rng(seed)
    cfg, x, w, _, kw = random_transpose_case(rng)
    z = reference.conv_transpose(x, w, **kw)
    g = random_array(rng, z.shape, cfg.dtype)
    got = convmm.conv_transpose_backward(to_xp(xp, g), to_xp(xp, x), to_xp(xp, w), **kw)
    want = reference.conv_transpose_backward(wide(g), wide(x), wide(w), **kw)
    for actual, desired in zip(got, want):
        assert_close(actual, desired, xp, dtype=cfg.dtype)


@pytest.mark.parametrize("needs", [("input",), ("weight",), ("bias",), ("input", "bias"), "weight"])
def test_backward_returns_only_what_is_needed(needs):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((4, 3, 3, 3))
    g = rng.standard_normal((2, 4, 3, 3))
    asked = {needs} if isinstance(needs, str) else set(needs)
    for grads in (convmm.conv_backward(g, x, w, needs=needs),
                  convmm.conv_transpose_backward(rng.standard_normal((2, 3, 5, 5)), g,
                                                 rng.standard_normal((4, 3, 3, 3)), needs=needs)):
        assert isinstance(grads, convmm.ConvGrads)
        for name in ("input", "weight", "bias"):
            assert (getattr(grads, name) is not None) == (name in asked)
