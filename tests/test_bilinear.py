"""Bilinear upsampling as a depthwise transposed convolution, against the formula and PyTorch."""

import numpy as np
import pytest

import convmm
from helpers import assert_close, random_array, to_numpy, to_xp


def _interpolated(image, factors):
    """Linear interpolation along each spatial axis of (N, C, *S), input sample i at output i·f."""
    out = image
    for axis, f in enumerate(factors, start=2):
        n = out.shape[axis]
        at = np.arange(f * (n - 1) + 1) / f
        out = np.apply_along_axis(lambda v: np.interp(at, np.arange(n), v.real)
                                  + 1j * np.interp(at, np.arange(n), v.imag)
                                  if np.iscomplexobj(v) else np.interp(at, np.arange(n), v),
                                  axis, out)
    return out


def test_the_lecture_kernel():
    k = convmm.bilinear_kernel(2, 3)
    assert k.shape == (3, 1, 3, 3) and k.dtype == np.float64
    assert k.flags.writeable and convmm.bilinear_kernel(2, 1).flags.writeable   # not a view
    lecture = np.array([[1 / 4, 1 / 2, 1 / 4], [1 / 2, 1, 1 / 2], [1 / 4, 1 / 2, 1 / 4]])
    for c in range(3):
        np.testing.assert_array_equal(k[c, 0], lecture)
    np.testing.assert_allclose(convmm.bilinear_kernel((3,), 1)[0, 0], [1 / 3, 2 / 3, 1, 2 / 3, 1 / 3])
    last = convmm.bilinear_kernel((2, 3, 1), 2, data_format="channels_last", dtype=np.float32)
    assert last.shape == (3, 5, 1, 1, 2) and last.dtype == np.float32
    np.testing.assert_array_equal(last[..., 0, 1],
                                  convmm.bilinear_kernel((2, 3, 1), 2, dtype=np.float32)[1, 0])


@pytest.mark.sweep
# (the first cases, which the namespaces with a budget run, upsample in 1, 2 and 3 dimensions)
@pytest.mark.parametrize("factors", [(2,), (4, 3), (2, 2, 2), (1,), (5,), (2, 2), (3, 1), (3, 1, 2)])
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
@pytest.mark.parametrize("dtype", ["float64", "complex128"])
def test_upsampling_is_linear_interpolation(xp, factors, data_format, dtype):
    rng = np.random.default_rng(len(factors) * 10 + sum(factors))
    sizes = tuple(int(s) for s in rng.integers(1, 6, len(factors)))
    image = random_array(rng, (2, 3, *sizes), dtype)
    x = image if data_format == "channels_first" else np.moveaxis(image, 1, -1)
    up = convmm.upsample_bilinear(to_xp(xp, np.ascontiguousarray(x)), factors if len(factors) != 2
                                  or factors[0] != factors[1] else factors[0],
                                  data_format=data_format)
    want = _interpolated(image, factors)
    if data_format == "channels_last":
        want = np.moveaxis(want, 1, -1)
    assert_close(up, want, xp)


@pytest.mark.sweep
@pytest.mark.parametrize("nd,mode", [(1, "linear"), (2, "bilinear"), (3, "trilinear")])
@pytest.mark.parametrize("factor", [2, 1, 3, 4])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_against_torch_interpolate_align_corners(xp, nd, mode, factor, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(nd * 10 + factor)
    sizes = tuple(int(s) for s in rng.integers(2, {1: 9, 2: 7, 3: 5}[nd], nd))
    x = random_array(rng, (2, 3, *sizes), dtype)
    want = torch.nn.functional.interpolate(torch.from_numpy(x),
                                           size=tuple(factor * (n - 1) + 1 for n in sizes),
                                           mode=mode, align_corners=True)
    up = convmm.upsample_bilinear(to_xp(xp, x), (factor,) * nd)
    assert_close(up, want.numpy(), xp)
    # channels-last too, and unbatched with the rank given by the factors
    last = convmm.upsample_bilinear(to_xp(xp, np.ascontiguousarray(np.moveaxis(x, 1, -1))),
                                    (factor,) * nd, data_format="channels_last")
    assert_close(last, np.moveaxis(want.numpy(), 1, -1), xp)
    single = convmm.upsample_bilinear(to_xp(xp, x[0]), (factor,) * nd)
    assert_close(single, want.numpy()[0], xp)


def test_kernel_in_another_namespace():
    torch = pytest.importorskip("torch")
    k = convmm.bilinear_kernel(2, 4, xp=torch)
    assert isinstance(k, torch.Tensor) and k.dtype == torch.get_default_dtype()
    assert k.shape == (4, 1, 3, 3)
    np.testing.assert_array_equal(to_numpy(k)[0, 0], convmm.bilinear_kernel(2, 1)[0, 0])


def test_bad_arguments():
    with pytest.raises(ValueError, match="factor must be >= 1"):
        convmm.bilinear_kernel(0, 3)
    with pytest.raises(ValueError, match="factor must give 1, 2 or 3"):
        convmm.bilinear_kernel((2, 2, 2, 2), 3)
    with pytest.raises(ValueError, match="channels must be >= 1"):
        convmm.bilinear_kernel(2, 0)
    with pytest.raises(TypeError, match="factor must be an integer"):
        convmm.upsample_bilinear(np.ones((1, 1, 4, 4)), 1.5)
    with pytest.raises(TypeError, match="cast"):
        convmm.upsample_bilinear(np.ones((1, 1, 4, 4), dtype=np.int32), 2)
    with pytest.raises(ValueError, match="must have 4 dimensions"):
        convmm.upsample_bilinear(np.ones((4, 4)), (2, 2))
