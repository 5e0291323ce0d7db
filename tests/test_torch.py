"""Against PyTorch (CPU): conv*d, conv_transpose*d, unfold, fold and autograd.

PyTorch pads symmetrically inside its convolutions, so asymmetric padding and
the padding modes go through ``torch.nn.functional.pad`` first, which is what
``torch.nn.Conv*d(padding_mode=...)`` does.
"""

import numpy as np
import pytest

import convmm
from helpers import make_conv_inputs, random_array, random_config, to_layout, weight_to_layout

torch = pytest.importorskip("torch")
F = torch.nn.functional

SEEDS = range(30)
TORCH_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate",
              "circular": "circular"}


def _first(a, data_format, batched=True):
    """An image in channels-first order (PyTorch's)."""
    if data_format == "channels_first":
        return a
    return np.moveaxis(a, -1, 1 if batched else 0)


def _weight_first(w, data_format):
    if data_format == "channels_first":
        return w
    return np.moveaxis(np.moveaxis(w, -1, 0), -1, 1)


def _torch_pad(t, pairs, mode):
    flat = tuple(v for before_after in reversed(pairs) for v in before_after)
    if not any(flat):
        return t
    if mode == "zeros":
        return F.pad(t, flat)
    return F.pad(t, flat, mode=TORCH_MODE[mode])


def _torch_conv(x, w, b, cfg):
    fn = (F.conv1d, F.conv2d, F.conv3d)[cfg.nd - 1]
    return fn(_torch_pad(x, cfg.pairs, cfg.padding_mode), w, b, stride=cfg.stride,
              dilation=cfg.dilation, groups=cfg.groups)


def _tensor(a, grad=False):
    return None if a is None else torch.tensor(a, requires_grad=grad)


def _close(ours, theirs, dtype):
    tol = 2e-5 if np.dtype(dtype) in (np.float32, np.complex64) else 1e-12
    theirs = theirs.detach().numpy()
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    np.testing.assert_allclose(ours, theirs, rtol=tol, atol=tol * max(1, np.abs(theirs).max()))


@pytest.mark.parametrize("seed", SEEDS)
def test_conv_and_autograd(seed):
    rng = np.random.default_rng(1000 + seed)
    cfg = random_config(rng, modes=tuple(TORCH_MODE))
    cfg.batch = cfg.batch or 1  # torch's padding modes need a batch axis
    x, w, b = make_conv_inputs(rng, cfg)
    tx, tw, tb = (_tensor(_first(x, cfg.data_format), True), _tensor(_weight_first(w, cfg.data_format), True),
                  _tensor(b, True))
    ty = _torch_conv(tx, tw, tb, cfg)
    y = convmm.conv(x, w, b, padding_mode=cfg.padding_mode, **cfg.kwargs())
    _close(_first(y, cfg.data_format), ty, cfg.dtype)

    g = random_array(rng, tuple(ty.shape), cfg.dtype)
    ty.backward(torch.tensor(g))
    grads = convmm.conv_backward(to_layout(g, cfg), x, w, padding_mode=cfg.padding_mode,
                                 **cfg.kwargs())
    _close(_first(grads.input, cfg.data_format), tx.grad, cfg.dtype)
    _close(_weight_first(grads.weight, cfg.data_format), tw.grad, cfg.dtype)
    if b is not None:
        _close(grads.bias, tb.grad, cfg.dtype)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("method", ["im2col", "zero_insertion"])
def test_conv_transpose_and_autograd(seed, method):
    rng = np.random.default_rng(2000 + seed)
    while True:  # PyTorch takes symmetric integer padding only
        cfg = random_config(rng, modes=("zeros",))
        pad = tuple(int(p) for p in rng.integers(0, 3, cfg.nd))
        smallest = [(i - 1) * s - 2 * p + d * (k - 1) + 1 for i, s, p, d, k
                    in zip(cfg.size, cfg.stride, pad, cfg.dilation, cfg.kernel)]
        if min(smallest) >= 1:
            break
    n = cfg.batch or 1
    x = random_array(rng, (n, cfg.in_channels, *cfg.size), cfg.dtype)
    w = random_array(rng, (cfg.in_channels, cfg.out_channels // cfg.groups, *cfg.kernel), cfg.dtype)
    b = random_array(rng, (cfg.out_channels,), cfg.dtype) if cfg.bias else None
    kw = dict(stride=cfg.stride, padding=pad, output_padding=cfg.output_padding,
              dilation=cfg.dilation, groups=cfg.groups)
    tx, tw, tb = _tensor(x, True), _tensor(w, True), _tensor(b, True)
    fn = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[cfg.nd - 1]
    tz = fn(tx, tw, tb, **kw)
    layout_x = to_layout(x, cfg)
    layout_w = weight_to_layout(w, cfg.data_format)
    z = convmm.conv_transpose(layout_x, layout_w, b, data_format=cfg.data_format, method=method, **kw)
    _close(_first(z, cfg.data_format), tz, cfg.dtype)

    g = random_array(rng, tuple(tz.shape), cfg.dtype)
    tz.backward(torch.tensor(g))
    grads = convmm.conv_transpose_backward(to_layout(g, cfg), layout_x, layout_w,
                                           data_format=cfg.data_format, method=method, **kw)
    _close(_first(grads.input, cfg.data_format), tx.grad, cfg.dtype)
    _close(_weight_first(grads.weight, cfg.data_format), tw.grad, cfg.dtype)
    if b is not None:
        _close(grads.bias, tb.grad, cfg.dtype)


@pytest.mark.parametrize("seed", SEEDS)
def test_unfold_and_fold(seed):
    """torch's unfold/fold are 2-d, channels-first, zero-padded and symmetric."""
    rng = np.random.default_rng(3000 + seed)
    while True:  # symmetric padding with which the kernel fits
        cfg = random_config(rng, nd=2, modes=("zeros",), formats=("channels_first",))
        pad = tuple(int(p) for p in rng.integers(0, 3, 2))
        if all(d * (k - 1) + 1 <= i + 2 * p
               for d, k, i, p in zip(cfg.dilation, cfg.kernel, cfg.size, pad)):
            break
    x = random_array(rng, (2, cfg.in_channels, *cfg.size), cfg.dtype)
    kw = dict(stride=cfg.stride, padding=pad, dilation=cfg.dilation)
    cols = convmm.im2col(x, cfg.kernel, **kw)
    _close(cols, F.unfold(torch.tensor(x), cfg.kernel, **kw), cfg.dtype)
    c = random_array(rng, cols.shape, cfg.dtype)
    _close(convmm.col2im(c, cfg.size, cfg.kernel, **kw),
           F.fold(torch.tensor(c), cfg.size, cfg.kernel, **kw), cfg.dtype)


@pytest.mark.parametrize("seed", range(6))
def test_autograd_differentiates_through_convmm_on_torch_tensors(seed):
    """convmm on torch tensors that require gradients runs the array-API path in torch's
    own operations: the result carries a grad_fn, and torch.autograd's gradients equal
    F.conv2d's (and convmm.conv_backward's)."""
    rng = np.random.default_rng(700 + seed)
    x = torch.from_numpy(rng.standard_normal((2, 4, 9, 8))).requires_grad_(True)
    w = torch.from_numpy(rng.standard_normal((6, 2, 3, 3))).requires_grad_(True)
    b = torch.from_numpy(rng.standard_normal(6)).requires_grad_(True)
    kw = dict(stride=int(rng.integers(1, 3)), padding=1, dilation=int(rng.integers(1, 3)),
              groups=2)
    y = convmm.conv(x, w, b, **kw)
    assert y.grad_fn is not None
    g = torch.from_numpy(rng.standard_normal(tuple(y.shape)))
    ours = torch.autograd.grad(y, (x, w, b), g)
    theirs = torch.autograd.grad(F.conv2d(x, w, b, **kw), (x, w, b), g)
    for a, e in zip(ours, theirs):
        np.testing.assert_allclose(a.numpy(), e.numpy(), rtol=1e-10, atol=1e-10)
    explicit = convmm.conv_backward(g.numpy(), x.detach().numpy(), w.detach().numpy(), **kw)
    np.testing.assert_allclose(ours[1].numpy(), explicit.weight, rtol=1e-10, atol=1e-10)
