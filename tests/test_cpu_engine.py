"""The CPU engine (Numba patch tiles × BLAS) on NumPy arrays, against the definition."""

import numpy as np
import pytest

import convmm
from convmm import _engine, reference
from helpers import assert_close, make_conv_inputs, random_config, wide

SEEDS = range(40)


@pytest.fixture(params=["one_tile", "tiny_tiles"])
def workspace(request, monkeypatch):
    """The default budget (mostly one tile) and a tiny one: many tiles, some across images."""
    if request.param == "tiny_tiles":
        monkeypatch.setattr(_engine, "WORKSPACE_BYTES", 600)
    return request.param


@pytest.mark.parametrize("seed", SEEDS)
def test_tiled_blas_conv(seed, workspace):
    rng = np.random.default_rng(seed)
    cfg = random_config(rng)
    x, w, b = make_conv_inputs(rng, cfg)
    kept = x.copy(), w.copy()
    kw = cfg.kwargs(padding_mode=cfg.padding_mode)
    got = convmm.conv(x, w, b, method="tiled_blas", **kw)
    want = reference.conv(wide(x), wide(w), wide(b), **kw)
    assert_close(got, want, np, dtype=cfg.dtype)
    np.testing.assert_array_equal(x, kept[0])
    np.testing.assert_array_equal(w, kept[1])


@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
@pytest.mark.parametrize("groups", [1, 3])
def test_tiles_of_whole_images(data_format, groups):
    """A batch of small images: tiles hold several whole images, the last one fewer."""
    rng = np.random.default_rng(groups)
    x = rng.standard_normal((9, 6, 5, 4))
    w = rng.standard_normal((6, 6 // groups, 2, 3))
    if data_format == "channels_last":
        x, w = np.moveaxis(x, 1, -1), np.moveaxis(np.moveaxis(w, 0, -1), 0, -2)
    kw = dict(padding=1, groups=groups, data_format=data_format)
    call = _call(x, w, **kw)
    plan = _engine.plan(call, "forward")
    image = call.geometry.n_positions                       # 6·4 output positions
    assert plan.tile % image == 0 and plan.tile > image and plan.positions % plan.tile
    assert_close(convmm.conv(x, w, method="tiled_blas", **kw), reference.conv(x, w, **kw), np)


@pytest.mark.parametrize("seed", range(10))
def test_non_contiguous_input(seed):
    rng = np.random.default_rng(seed)
    cfg = random_config(rng, dtypes=("float32", "float64"))
    x, w, b = make_conv_inputs(rng, cfg)
    strided = np.repeat(x, 2, axis=-1)[..., ::2]           # same values, every other element
    reversed_ = np.flip(np.flip(x, axis=0).copy(), axis=0)  # negative strides
    for view in (strided, reversed_):
        got = convmm.conv(view, w, b, method="tiled_blas", **cfg.kwargs(padding_mode=cfg.padding_mode))
        assert_close(got, convmm.conv(x, w, b, method="im2col",
                                      **cfg.kwargs(padding_mode=cfg.padding_mode)), np)


def _call(x, w, **keywords):
    kw = dict(stride=1, padding=1, dilation=1, groups=1, padding_mode="zeros",
              data_format="channels_first", method="tiled_blas")
    kw.update(keywords)
    return convmm._api._prepare(x, w, None, None, transposed=False, **kw)


def test_tiles_fit_the_workspace_and_cut_images_evenly():
    x = np.ones((3, 8, 40, 40), dtype=np.float32)
    plan = _engine.plan(_call(x, np.ones((8, 8, 3, 3), dtype=np.float32)), "forward")
    assert plan.method == "tiled_blas" and plan.rows == 72 and plan.positions == 3 * 1600
    assert plan.workspace_bytes <= _engine.WORKSPACE_BYTES
    assert plan.workspace_bytes == plan.threads * plan.rows * plan.tile * 4
    assert plan.patch_matrix_bytes == 72 * 4800 * 4
    tiles = _engine._tiles(plan.positions, 1600, plan.tile)
    assert sum(count for _, count in tiles) == plan.positions
    assert all(start // 1600 == (start + count - 1) // 1600 or count % 1600 == 0
               for start, count in tiles)
    assert "tiled_blas" in plan.describe() and "workspace" in plan.describe()


def test_engine_methods_need_numpy():
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="runs on NumPy arrays only"):
        convmm.conv(torch.ones(1, 1, 5), torch.ones(1, 1, 3), method="tiled_blas")


@pytest.mark.parametrize("seed", range(12))
def test_against_torch(seed):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(500 + seed)
    while True:   # PyTorch pads symmetrically
        cfg = random_config(rng, nd=2, modes=("zeros",), formats=("channels_first",),
                            dtypes=("float32",))
        if all(b == a for b, a in cfg.pairs):
            break
    cfg.padding = tuple(b for b, _ in cfg.pairs)
    x, w, b = make_conv_inputs(rng, cfg)
    got = convmm.conv(x, w, b, method="tiled_blas", **cfg.kwargs())
    want = torch.nn.functional.conv2d(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(w),
                                      None if b is None else torch.from_numpy(b),
                                      stride=cfg.stride, padding=cfg.padding,
                                      dilation=cfg.dilation, groups=cfg.groups)
    assert_close(got, want.numpy(), np)
