"""Properties: adjointness (dot tests), gradients against finite differences, shape arithmetic."""

import math

import numpy as np
import pytest

import convmm
from helpers import make_conv_inputs, random_array, random_config, to_layout, to_numpy, to_xp

SEEDS = range(20)


def _dot(a, b):
    """The bilinear form Σ a·b (no conjugation: conv_transpose is the transpose)."""
    return np.sum(to_numpy(a) * to_numpy(b))


def _assert_equal_forms(left, right):
    assert abs(left - right) <= 1e-10 * max(1.0, abs(left)), (left, right)


@pytest.mark.parametrize("seed", SEEDS)
def test_conv_transpose_is_the_transpose(xp, seed):
    """⟨conv(x), y⟩ = ⟨x, conv_transpose(y)⟩ with the same weight and parameters."""
    rng = np.random.default_rng(seed)
    cfg = random_config(rng, modes=("zeros",), dtypes=("float64", "complex128"))
    x, w, _ = make_conv_inputs(rng, cfg)
    cx = convmm.conv(to_xp(xp, x), to_xp(xp, w), **cfg.kwargs())
    y = random_array(rng, tuple(cx.shape), cfg.dtype)
    spatial = x.shape[-cfg.nd:] if cfg.data_format == "channels_first" else x.shape[-cfg.nd - 1:-1]
    for method in ("im2col", "zero_insertion"):
        cty = convmm.conv_transpose(to_xp(xp, y), to_xp(xp, w), output_size=spatial,
                                    method=method, **cfg.kwargs())
        _assert_equal_forms(_dot(cx, y), _dot(x, cty))


@pytest.mark.parametrize("seed", SEEDS)
def test_col2im_is_the_adjoint_of_im2col(xp, seed):
    """⟨im2col(x), c⟩ = ⟨x, col2im(c)⟩ for every padding mode."""
    rng = np.random.default_rng(seed)
    cfg = random_config(rng, dtypes=("float64",))
    x, _, _ = make_conv_inputs(rng, cfg)
    kw = dict(stride=cfg.stride, padding=cfg.padding, dilation=cfg.dilation,
              padding_mode=cfg.padding_mode, data_format=cfg.data_format)
    cols = convmm.im2col(to_xp(xp, x), cfg.kernel, **kw)
    c = random_array(rng, tuple(cols.shape), cfg.dtype)
    _assert_equal_forms(_dot(cols, c), _dot(x, convmm.col2im(to_xp(xp, c), cfg.size, cfg.kernel, **kw)))


@pytest.mark.parametrize("seed", SEEDS)
def test_input_gradient_is_the_adjoint_for_every_padding_mode(xp, seed):
    """⟨conv(x), g⟩ = ⟨x, conv_backward(g).input⟩: the padding's adjoint folds the taps back."""
    rng = np.random.default_rng(seed)
    cfg = random_config(rng, dtypes=("float64",))
    x, w, _ = make_conv_inputs(rng, cfg)
    kw = cfg.kwargs(padding_mode=cfg.padding_mode)
    cx = convmm.conv(to_xp(xp, x), to_xp(xp, w), **kw)
    g = random_array(rng, tuple(cx.shape), cfg.dtype)
    grad = convmm.conv_backward(to_xp(xp, g), to_xp(xp, x), to_xp(xp, w), needs="input", **kw)
    _assert_equal_forms(_dot(cx, g), _dot(x, grad.input))


def _directional(f, a, v, h=1e-5):
    """Central difference: truncation O(h²) and rounding O(ε/h) both near 1e-10 here."""
    return (f(a + h * v) - f(a - h * v)) / (2 * h)


@pytest.mark.parametrize("seed", range(12))
def test_conv_backward_against_finite_differences(seed):
    rng = np.random.default_rng(seed)
    cfg = random_config(rng, dtypes=("float64",))
    cfg.bias = True
    x, w, b = make_conv_inputs(rng, cfg)
    kw = cfg.kwargs(padding_mode=cfg.padding_mode)
    g = random_array(rng, convmm.conv(x, w, b, **kw).shape, "float64")

    def loss(x_, w_, b_):  # a smooth nonlinear loss, so the check is not linear algebra alone
        return np.sum(np.sin(convmm.conv(x_, w_, b_, **kw)) * g)

    y = convmm.conv(x, w, b, **kw)
    grads = convmm.conv_backward(np.cos(y) * g, x, w, **kw)
    for arg, grad in ((0, grads.input), (1, grads.weight), (2, grads.bias)):
        args = [x, w, b]
        v = rng.standard_normal(args[arg].shape)

        def along(a, arg=arg):
            moved = list(args)
            moved[arg] = a
            return loss(*moved)

        np.testing.assert_allclose(np.sum(grad * v), _directional(along, args[arg], v), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("seed", range(12))
def test_conv_transpose_backward_against_finite_differences(seed):
    rng = np.random.default_rng(seed)
    cfg = random_config(rng, modes=("zeros",), dtypes=("float64",))
    cfg.padding = 0
    n = cfg.batch or 1
    x = to_layout(random_array(rng, (n, cfg.in_channels, *cfg.size), "float64"), cfg)
    w = rng.standard_normal((cfg.in_channels, cfg.out_channels // cfg.groups, *cfg.kernel))
    if cfg.data_format == "channels_last":
        w = np.moveaxis(np.moveaxis(w, 0, -1), 0, -2)
    b = rng.standard_normal(cfg.out_channels)
    kw = cfg.kwargs(output_padding=cfg.output_padding)
    z = convmm.conv_transpose(x, w, b, **kw)
    g = rng.standard_normal(z.shape)
    grads = convmm.conv_transpose_backward(np.cos(z) * g, x, w, **kw)
    args = [x, w, b]
    for arg, grad in ((0, grads.input), (1, grads.weight), (2, grads.bias)):
        v = rng.standard_normal(args[arg].shape)

        def along(a, arg=arg):
            moved = list(args)
            moved[arg] = a
            return np.sum(np.sin(convmm.conv_transpose(*moved, **kw)) * g)

        np.testing.assert_allclose(np.sum(grad * v), _directional(along, args[arg], v), rtol=1e-6, atol=1e-8)


# --- Dumoulin & Visin, "A guide to convolution arithmetic for deep learning" --------
CASES = [(i, k, s, p) for i in range(3, 12) for k in range(1, 6) for s in range(1, 4) for p in range(0, 4)
         if k <= i + 2 * p]


@pytest.mark.parametrize("i, k, s, p", CASES)
def test_dumoulin_visin_relationships(i, k, s, p):
    o = convmm.conv_output_shape((i,), k, stride=s, padding=p)[0]
    # Relationship 6 (the general one; 1, 2 and 5 are its special cases)
    assert o == (i + 2 * p - k) // s + 1
    if s == 1 and p == 0:
        assert o == i - k + 1                                              # R1
    if s == 1:
        assert o == i - k + 2 * p + 1                                      # R2
    if p == 0:
        assert o == (i - k) // s + 1                                       # R5
    # Transposed: the conv's output fed back gives i again with the right output padding.
    a = (i + 2 * p - k) % s
    if a < s:  # R13 (R7, R8, R11, R12 are its special cases)
        assert convmm.conv_transpose_output_shape((o,), k, stride=s, padding=p,
                                                  output_padding=a)[0] == s * (o - 1) + a + k - 2 * p == i
    if s == 1:
        assert convmm.conv_transpose_output_shape((o,), k, padding=p)[0] == o + (k - 1) - 2 * p  # R8


@pytest.mark.parametrize("i", range(1, 12))
@pytest.mark.parametrize("k", [1, 3, 5])
def test_half_and_full_padding(i, k):
    assert convmm.conv_output_shape((i,), k, padding="same") == (i,)                    # R3
    assert convmm.conv_output_shape((i,), k, padding="full") == (i + k - 1,)            # R4
    assert convmm.conv_transpose_output_shape((i,), k, padding="same") == (i,)          # R9
    if i >= k:
        assert convmm.conv_transpose_output_shape((i,), k, padding="full") == (i - (k - 1),)  # R10


@pytest.mark.parametrize("i", range(1, 14))
@pytest.mark.parametrize("k, s, d", [(1, 1, 1), (2, 2, 1), (3, 2, 1), (3, 3, 2), (4, 2, 3), (2, 3, 1)])
def test_same_padding_any_stride(i, k, s, d):
    """"same" gives ⌈i/s⌉ outputs with the odd extra sample at the end."""
    (before, after), = convmm.resolve_padding((i,), k, stride=s, dilation=d, padding="same")
    assert 0 <= after - before <= 1
    assert convmm.conv_output_shape((i,), k, stride=s, dilation=d, padding="same") == (math.ceil(i / s),)
    # and the transposed "same" maps ⌈i/s⌉ back to i·s (TensorFlow's convention)
    assert convmm.conv_transpose_output_shape((i,), k, stride=s, dilation=d, padding="same") == (i * s,)


@pytest.mark.parametrize("i, k, s, p, d", [(7, 3, 1, 0, 2), (9, 3, 2, 1, 2), (12, 4, 3, 2, 3), (5, 2, 1, 1, 4)])
def test_dilated_relationship(i, k, s, p, d):
    """R15: o = ⌊(i + 2p − k − (k − 1)(d − 1)) / s⌋ + 1."""
    o = (i + 2 * p - k - (k - 1) * (d - 1)) // s + 1
    assert convmm.conv_output_shape((i,), k, stride=s, padding=p, dilation=d) == (o,)
    x = np.zeros((1, 1, i))
    assert convmm.conv(x, np.zeros((1, 1, k)), stride=s, padding=p, dilation=d).shape == (1, 1, o)
