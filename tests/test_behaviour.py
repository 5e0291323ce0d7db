"""What users rely on: namespaces, dtypes, unbatched and empty inputs, memory layouts, no mutation."""

import numpy as np
import pytest

import convmm
from convmm import reference
from helpers import assert_close, namespace, to_numpy, to_xp

rng = np.random.default_rng(7)


def test_result_namespace_and_promotion(xp):
    x32 = to_xp(xp, rng.standard_normal((2, 3, 5)).astype(np.float32))
    w64 = to_xp(xp, rng.standard_normal((4, 3, 2)))
    w_c64 = to_xp(xp, rng.standard_normal((4, 3, 2)).astype(np.complex64))
    want = reference.conv(to_numpy(x32).astype(np.float64), to_numpy(w64))
    assert_close(convmm.conv(x32, w64), want, xp, dtype=np.float64)
    assert_close(convmm.conv(x32, w_c64), reference.conv(to_numpy(x32), to_numpy(w_c64)), xp,
                 dtype=np.complex64)
    assert_close(convmm.conv(xp.astype(x32, xp.float64), w_c64),
                 reference.conv(to_numpy(x32).astype(np.float64), to_numpy(w_c64)), xp,
                 dtype=np.complex128)


def test_complex_is_not_conjugated(xp):
    x = np.array([[[1j, 2.0]]], dtype=np.complex128)
    w = np.array([[[1j]]], dtype=np.complex128)
    assert_close(convmm.conv(to_xp(xp, x), to_xp(xp, w)), np.array([[[-1.0, 2j]]]), xp)
    assert_close(convmm.conv_transpose(to_xp(xp, x), to_xp(xp, w)), np.array([[[-1.0, 2j]]]), xp)


@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_unbatched_matches_batched(xp, data_format):
    x = rng.standard_normal((1, 3, 6, 5))
    w = rng.standard_normal((4, 3, 3, 2))
    if data_format == "channels_last":
        x, w = np.moveaxis(x, 1, -1), np.moveaxis(np.moveaxis(w, 0, -1), 0, -2)
    kw = dict(stride=2, padding=1, data_format=data_format)
    batched = convmm.conv(to_xp(xp, x), to_xp(xp, w), **kw)
    assert_close(convmm.conv(to_xp(xp, x[0]), to_xp(xp, w), **kw), to_numpy(batched)[0], xp)
    y = to_numpy(batched)
    tw = w  # the forward weight is the transposed convolution's weight, in both formats
    unbatched = convmm.conv_transpose(to_xp(xp, y[0]), to_xp(xp, tw), **kw)
    assert_close(unbatched, to_numpy(convmm.conv_transpose(to_xp(xp, y), to_xp(xp, tw), **kw))[0], xp)
    grads = convmm.conv_backward(to_xp(xp, y[0]), to_xp(xp, x[0]), to_xp(xp, w), **kw)
    full = convmm.conv_backward(to_xp(xp, y), to_xp(xp, x), to_xp(xp, w), **kw)
    assert_close(grads.input, to_numpy(full.input)[0], xp)
    assert_close(grads.weight, to_numpy(full.weight), xp)


def test_zero_size_batch(xp):
    x = to_xp(xp, np.zeros((0, 3, 6, 6)))
    w = to_xp(xp, rng.standard_normal((4, 3, 3, 3)))
    y = convmm.conv(x, w, stride=2, padding=1, padding_mode="reflect")
    assert tuple(y.shape) == (0, 4, 3, 3)
    assert tuple(convmm.conv_transpose(y, w, stride=2, padding=1, output_padding=1).shape) == (0, 3, 6, 6)
    grads = convmm.conv_backward(y, x, w, stride=2, padding=1, padding_mode="reflect")
    assert tuple(grads.input.shape) == (0, 3, 6, 6)
    assert_close(grads.weight, np.zeros((4, 3, 3, 3)), xp)
    assert tuple(convmm.im2col(x, 3).shape) == (0, 27, 16)


def _layouts(a):
    """The same values in memory layouts that a careless strided view would get wrong."""
    fortran = np.asfortranarray(a)
    reversed_twice = np.ascontiguousarray(a[..., ::-1])[..., ::-1]
    read_only = a.copy()
    read_only.flags.writeable = False
    strided = np.repeat(a, 2, axis=-1)[..., ::2]
    transposed = np.ascontiguousarray(np.swapaxes(a, -1, -2)).swapaxes(-1, -2)
    return {"fortran": fortran, "negative_strides": reversed_twice, "read_only": read_only,
            "strided": strided, "transposed": transposed}


@pytest.mark.parametrize("layout", ["fortran", "negative_strides", "read_only", "strided", "transposed"])
@pytest.mark.parametrize("padding, mode", [(0, "zeros"), (1, "zeros"), (2, "reflect")])
def test_memory_layouts_give_the_same_answer(layout, padding, mode):
    x = rng.standard_normal((2, 3, 7, 6))
    w = rng.standard_normal((4, 3, 3, 2))
    xv, wv = _layouts(x)[layout], _layouts(w)[layout]
    kw = dict(stride=(2, 1), padding=padding, dilation=(1, 2), padding_mode=mode)
    np.testing.assert_allclose(convmm.conv(xv, wv, **kw), convmm.conv(x, w, **kw), rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(convmm.im2col(xv, (3, 2), **kw), convmm.im2col(x, (3, 2), **kw), rtol=0, atol=0)
    y = convmm.conv(x, w, **kw)
    yv = _layouts(y)[layout]
    grads, want = convmm.conv_backward(yv, xv, wv, **kw), convmm.conv_backward(y, x, w, **kw)
    for got, expected in zip(grads, want):
        np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-13)
    ct = dict(stride=(2, 1), padding=padding, dilation=(1, 2))
    for method in ("im2col", "zero_insertion"):
        np.testing.assert_allclose(convmm.conv_transpose(yv, wv, method=method, **ct),
                                   convmm.conv_transpose(y, w, method=method, **ct), rtol=1e-13, atol=1e-13)


def test_torch_non_contiguous():
    torch = pytest.importorskip("torch")
    seeded = torch.Generator().manual_seed(96)
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64, generator=seeded).transpose(-1, -2)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, generator=seeded)
    got = convmm.conv(x, w, padding=1, padding_mode="circular")
    want = reference.conv(x.contiguous().numpy(), w.numpy(), padding=1, padding_mode="circular")
    # The suite's tolerance, relative to the largest output (a plain rtol failed, now and
    # then, on an output that cancels to nearly zero; the inputs were not seeded then).
    assert_close(got, want, namespace("torch"))


def test_inputs_are_never_modified(xp):
    arrays = {name: rng.standard_normal(shape) for name, shape in
              [("x", (2, 4, 6, 6)), ("w", (6, 2, 3, 3)), ("b", (6,)), ("g", (2, 6, 3, 3))]}
    originals = {k: v.copy() for k, v in arrays.items()}
    a = {k: to_xp(xp, v) for k, v in arrays.items()}
    kw = dict(stride=2, padding=1, groups=2)
    convmm.conv(a["x"], a["w"], a["b"], padding_mode="replicate", **kw)
    convmm.conv_backward(a["g"], a["x"], a["w"], padding_mode="reflect", **kw)
    for method in ("im2col", "zero_insertion"):
        convmm.conv_transpose(a["g"], a["w"], output_padding=1, method=method, **kw)
    convmm.conv_transpose_backward(a["x"], a["g"], a["w"], output_padding=1, **kw)
    cols = convmm.im2col(a["x"], 3, stride=2, padding=1, padding_mode="circular")
    cols_copy = to_numpy(cols).copy()
    convmm.col2im(cols, (6, 6), 3, stride=2, padding=1, padding_mode="circular")
    for name, original in originals.items():
        np.testing.assert_array_equal(to_numpy(a[name]), original, err_msg=name)
    np.testing.assert_array_equal(to_numpy(cols), cols_copy)


def test_convolution_of_a_3d_volume_channels_last(xp):
    """The seed's NHWC formula, in 3-d: Y[n, z, y, x, o] = Σ X[n, z+i, y+j, x+k, c]·F[i, j, k, c, o]."""
    x = rng.standard_normal((2, 5, 4, 6, 3))
    f = rng.standard_normal((2, 3, 2, 3, 5))
    want = np.zeros((2, 4, 2, 5, 5))
    for i, j, k in np.ndindex(2, 3, 2):
        want += np.einsum("nzyxc,co->nzyxo", x[:, i:i + 4, j:j + 2, k:k + 5], f[i, j, k])
    assert_close(convmm.conv(to_xp(xp, x), to_xp(xp, f), data_format="channels_last"), want, xp)


def test_result_stays_on_the_input_device():
    """array_api_strict has several devices: every path must allocate on the input's."""
    strict = pytest.importorskip("array_api_strict")
    dev = strict.Device("device1")
    x = strict.asarray(rng.standard_normal((2, 4, 6, 6)), device=dev)
    w = strict.asarray(rng.standard_normal((6, 2, 3, 3)), device=dev)
    y = convmm.conv(x, w, stride=2, padding=1, groups=2, padding_mode="reflect")
    results = [
        y,
        convmm.conv_transpose(y, w, stride=2, padding=1, groups=2, output_padding=1),
        convmm.conv_transpose(convmm.conv(x, w, groups=2), w, groups=2),  # zero insertion
        convmm.conv_backward(y, x, w, stride=2, padding=1, groups=2, padding_mode="reflect").input,
        convmm.col2im(convmm.im2col(x, 3, padding=1, padding_mode="circular"), (6, 6), 3,
                      padding=1, padding_mode="circular"),
    ]
    for r in results:
        assert r.device == dev
