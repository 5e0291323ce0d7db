"""The CPU engine on NumPy arrays (every method, every map) against the definition."""

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

import convmm
from convmm import reference
from convmm._engines import policy, tunables
from convmm._engines.cpu import engine as cpu_engine
from convmm._engines.cpu import threads
from helpers import (assert_close, make_conv_inputs, random_array, random_config,
                     random_transpose_case, tune, wide)

SEEDS = range(40)


@pytest.fixture(params=["one_tile", "tiny_tiles"])
def workspace(request, monkeypatch):
    """The default budget (mostly one tile) and a tiny one: many tiles, some across images."""
    if request.param == "tiny_tiles":
        tune(monkeypatch, workspace_bytes=600)
    return request.param


def test_tiny_tiles_get_tiny_tiles_after_a_plan_of_one_tile(monkeypatch):
    """The workspace budget is in the plan's key: a signature planned under the default
    budget is planned again under the tiny one (``workspace``'s cases do tile)."""
    x, w = np.ones((2, 8, 9, 9), np.float32), np.ones((8, 8, 3, 3), np.float32)
    def tile():
        return policy.plan(_call(x, w, padding=1, method="tiled_blas"), "forward").tile

    threads = convmm.get_num_threads()
    convmm.set_num_threads(1)      # one worker: the whole budget's tile, on any machine
    try:
        assert tile() == 2 * 9 * 9
        tune(monkeypatch, workspace_bytes=600)
        assert tile() <= 2
        assert f"tiles of {tile()} (image, position) pairs" in convmm.explain(
            convmm.conv, x, w, padding=1, method="tiled_blas")
    finally:
        convmm.set_num_threads(threads)


@pytest.mark.parametrize("name", [field.name for field in dataclasses.fields(tunables.Tunables)]
                         + ["PATCH_BYTES"])
def test_every_knob_a_plan_reads_is_in_its_key(name, monkeypatch):
    """Every field of the record of tunables (and the array-API path's ``PATCH_BYTES``)
    is in the plan's key: changing one plans the call again."""
    from convmm._core import algorithms

    x, w = np.ones((2, 8, 9, 9), np.float32), np.ones((8, 8, 3, 3), np.float32)
    convmm.conv(x, w, padding=1)
    planned = []
    real = policy._planned
    monkeypatch.setattr(policy, "_planned", lambda *a, **k: planned.append(1) or real(*a, **k))
    convmm.conv(x, w, padding=1)
    assert planned == []                                   # the same key: the cached plan
    if name == "PATCH_BYTES":
        monkeypatch.setattr(algorithms, name, algorithms.PATCH_BYTES * 2 + 1)
    else:
        value = getattr(tunables.TUNABLES, name)
        changed = (not value) if isinstance(value, bool) else value * 2 + 1
        if name == "numpy_on_cuda":     # would run the CUDA engine: its record alone is checked
            assert dataclasses.replace(tunables.TUNABLES, **{name: changed}) != tunables.TUNABLES
            return
        tune(monkeypatch, **{name: changed})
    convmm.conv(x, w, padding=1)
    assert planned == [1], f"{name} changed and the plan was not made again"


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
    plan = policy.plan(call, "forward")
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
    plan = policy.plan(_call(x, np.ones((8, 8, 3, 3), dtype=np.float32)), "forward")
    assert plan.method == "tiled_blas" and plan.rows == 72 and plan.positions == 3 * 1600
    assert plan.workspace_bytes <= tunables.TUNABLES.workspace_bytes
    assert plan.workspace_bytes == plan.threads * plan.rows * plan.tile * 4
    assert plan.patch_matrix_bytes == 72 * 4800 * 4
    tiles = cpu_engine._tiles(plan.positions, 1600, plan.tile)
    assert sum(count for _, count in tiles) == plan.positions
    assert all(start // 1600 == (start + count - 1) // 1600 or count % 1600 == 0
               for start, count in tiles)
    assert "tiled_blas" in plan.describe() and "workspace" in plan.describe()


def test_engine_methods_need_numpy_or_cupy():
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="CPU engine's \\(NumPy\\) and the CUDA engine's \\(CuPy\\)"):
        convmm.conv(torch.ones(1, 1, 5), torch.ones(1, 1, 3), method="tiled_blas")


def test_cuda_engine_says_why_it_is_missing(monkeypatch):
    """Without numba-cuda, or without a GPU, the reason names what to install or what is absent."""
    import importlib.util

    from convmm._engines.cuda import engine as cuda_engine

    if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1" and not _gpu_present():
        cuda_engine.unavailable_reason.cache_clear()
        reason = cuda_engine.unavailable_reason()
        assert reason is not None and ("no usable CUDA GPU" in reason or "numba-cuda" in reason)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "numba_cuda" else real_find_spec(name, *a))
    cuda_engine.unavailable_reason.cache_clear()
    try:
        assert "pip install 'convmm[cuda13]'" in cuda_engine.unavailable_reason()
    finally:
        monkeypatch.undo()
        cuda_engine.unavailable_reason.cache_clear()


def test_cuda_launches_are_quiet_about_small_grids():
    """numba-cuda warns on configuring a grid of fewer than 128 blocks (its message, as in
    numba-cuda's dispatcher); the engine's grids follow the caller's sizes, so its launches
    drop that warning, and no other."""
    import warnings

    from convmm._engines.cuda.engine import _launch

    class Kernel:
        launched = None

        def __init__(self, message):
            self.message = message

        def __getitem__(self, config):
            warnings.warn(self.message, RuntimeWarning)
            return lambda *args: setattr(self, "launched", (config, args))

    quiet = Kernel("Grid size 4 will likely result in GPU under-utilization due to low occupancy.")
    _launch(quiet, (4, 1), 256, 0, "a", 1)     # the suite turns warnings into errors
    assert quiet.launched == (((4, 1), 256, 0), ("a", 1))
    with pytest.raises(RuntimeWarning, match="something else"):
        _launch(Kernel("something else"), 1, 1, 0)


def test_cuda_engine_host_code_with_a_stand_in_cupy(monkeypatch):
    """The CUDA engine's CuPy-only host code, which the simulator (NumPy arrays) never
    runs: index tables copied to the device once per plan and device, keyed by the
    plan's description (a NumPy plan is not hashable), and the default stream as 0."""
    from types import SimpleNamespace

    from convmm._core import geometry as _geometry, index_tables as _plan
    from convmm._engines.cuda import engine as cuda_engine

    copies = []

    class Device:
        def __init__(self, device_id):
            self.id = device_id

        def __enter__(self):
            return self

        def __exit__(self, *_):
            return False

    def asarray(a):
        copies.append(a)
        return np.array(a)

    cupy = SimpleNamespace(asarray=asarray, cuda=SimpleNamespace(
        Device=Device, get_current_stream=lambda: SimpleNamespace(ptr=0)))
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    cuda_engine._device_table.cache_clear()
    geometry = _geometry.conv_geometry((7, 6), (3, 2), (2, 1), ((1, 1), (0, 1)), (1, 2),
                                       "reflect")
    on_gpu = SimpleNamespace(device=Device(0))
    try:
        first = cuda_engine._on_device(on_gpu, _plan.gather_index, geometry, "reflect")
        again = cuda_engine._on_device(on_gpu, _plan.gather_index, geometry, "reflect")
        inverse = cuda_engine._on_device(on_gpu, _plan.gather_index_adjoint, geometry, "reflect")
        assert again is first and len(copies) == 2
        np.testing.assert_array_equal(first, _plan.gather_index(geometry, "reflect"))
        np.testing.assert_array_equal(inverse, _plan.gather_index_adjoint(geometry, "reflect"))
        assert cuda_engine._stream(on_gpu) == 0
    finally:
        cuda_engine._device_table.cache_clear()


def _gpu_present():
    from helpers import backend_names

    return "cupy" in backend_names()


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


ENGINE = ["tiled_blas", "implicit_gemm", "direct"]


@pytest.mark.xdist_group("engine maps")     # one worker compiles their kernels on a cold cache
@pytest.mark.parametrize("method", ENGINE)
@pytest.mark.parametrize("seed", range(30))
def test_every_map_by_every_method(method, seed, workspace):
    """conv, conv_transpose and both backward passes against the loop definition."""
    rng = np.random.default_rng(1000 + seed)
    cfg = random_config(rng)
    x, w, b = make_conv_inputs(rng, cfg)
    kw = cfg.kwargs(padding_mode=cfg.padding_mode)
    kept = x.copy(), w.copy()
    assert_close(convmm.conv(x, w, b, method=method, **kw),
                 reference.conv(wide(x), wide(w), wide(b), **kw), np, dtype=cfg.dtype)
    g = random_array(rng, reference.conv(x, w, **kw).shape, cfg.dtype)
    got = convmm.conv_backward(g, x, w, method=method, **kw)
    want = reference.conv_backward(wide(g), wide(x), wide(w), **kw)
    for actual, desired in zip(got, want):
        assert_close(actual, desired, np, dtype=cfg.dtype)
    np.testing.assert_array_equal(x, kept[0])
    np.testing.assert_array_equal(w, kept[1])

    cfg, x, w, b, kw = random_transpose_case(rng)
    assert_close(convmm.conv_transpose(x, w, b, method=method, **kw),
                 reference.conv_transpose(wide(x), wide(w), wide(b), **kw), np, dtype=cfg.dtype)
    g = random_array(rng, reference.conv_transpose(x, w, **kw).shape, cfg.dtype)
    got = convmm.conv_transpose_backward(g, x, w, method=method, **kw)
    want = reference.conv_transpose_backward(wide(g), wide(x), wide(w), **kw)
    for actual, desired in zip(got, want):
        assert_close(actual, desired, np, dtype=cfg.dtype)


@pytest.mark.parametrize("seed", range(24))
def test_implicit_forward_with_wide_channels(seed, monkeypatch):
    """implicit_gemm's forward map reads patches in place from padded images: several
    NR-wide weight panels, the last one partial; rows ending inside an MR-wide tile;
    units of several small images (odd seeds: one image per unit) or of pieces of one."""
    import dataclasses

    from convmm._engines.cpu.gemm import NR

    rng = np.random.default_rng(3000 + seed)
    if seed % 2:
        tune(monkeypatch, padded_batch_bytes=1)
    cfg = random_config(rng)
    groups = cfg.groups
    cfg = dataclasses.replace(cfg, in_channels=groups * int(rng.integers(1, 12)),
                              out_channels=groups * int(rng.integers(NR // 2, 3 * NR)),
                              batch=int(rng.integers(1, 6)))
    x, w, b = make_conv_inputs(rng, cfg)
    kw = cfg.kwargs(padding_mode=cfg.padding_mode)
    kept = x.copy(), w.copy()
    got = convmm.conv(x, w, b, method="implicit_gemm", **kw)
    assert_close(got, reference.conv(wide(x), wide(w), wide(b), **kw), np, dtype=cfg.dtype)
    np.testing.assert_array_equal(x, kept[0])
    np.testing.assert_array_equal(w, kept[1])


def test_implicit_forward_units():
    """Small images go several to a worker's unit, within the padded-image budget; large
    ones are cut into pieces of whole output rows."""
    small = policy.plan(_call(np.ones((8, 16, 7, 7), np.float32), np.ones((32, 16, 3, 3), np.float32),
                               method="implicit_gemm"), "forward")
    assert small.tile == -(-8 // small.threads) * 49
    large = policy.plan(_call(np.ones((1, 16, 40, 30), np.float32), np.ones((32, 16, 3, 3), np.float32),
                               method="implicit_gemm"), "forward")
    assert large.tile % 30 == 0 and large.tile < 1200 and -(-1200 // large.tile) >= 2 * large.threads


@pytest.mark.parametrize("method", ENGINE)
def test_adjoint_is_bitwise_repeatable(method):
    """col2im and the per-worker weight gradients sum in a fixed order: the same bits twice."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 4, 11, 10)).astype(np.float32)
    w = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
    kw = dict(stride=2, padding=1, groups=2, padding_mode="reflect", method=method)
    g = rng.standard_normal(convmm.conv(x, w, **kw).shape).astype(np.float32)
    first, second = (convmm.conv_backward(g, x, w, **kw) for _ in range(2))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_auto_choices():
    x = np.ones((2, 16, 20, 20), np.float32)
    explain = convmm.explain
    assert explain(convmm.conv, x, np.ones((16, 1, 3, 3), np.float32), groups=16).startswith(
        "conv: direct")
    assert explain(convmm.conv, x, np.ones((8, 16, 1, 1), np.float32)).startswith(
        "conv: tiled_blas (1×1 kernel")
    assert explain(convmm.conv, x, np.ones((8, 16, 3, 3), np.float32)).startswith(
        "conv: implicit_gemm")
    assert explain(convmm.conv, x.astype(np.float64), np.ones((8, 16, 3, 3))).startswith(
        "conv: implicit_gemm")
    assert explain(convmm.conv, x.astype(np.complex64), np.ones((8, 16, 3, 3), np.complex64)
                   ).startswith("conv: tiled_blas")
    assert explain(convmm.conv, x[..., :9, :9], np.ones((8, 16, 3, 3), np.float32)).startswith(
        "conv: tiled_blas")
    lines = explain(convmm.conv_backward, np.ones((2, 8, 18, 18), np.float32), x,
                    np.ones((8, 16, 3, 3), np.float32), needs=("input", "weight")).splitlines()
    assert [line.split(":")[0] for line in lines] == ["input", "weight"]
    assert "flipped kernel" in lines[0] and "workspace" in lines[1]
    assert lines[1].startswith("weight: implicit_gemm")
    strided = explain("conv_transpose2d", np.ones((2, 8, 9, 9), np.float32),
                      np.ones((8, 16, 3, 3), np.float32), stride=2)
    assert strided.startswith("conv_transpose: tiled_blas")
    assert "array-API" in explain(convmm.conv, x, np.ones((8, 16, 3, 3), np.float32),
                                  method="im2col")
    with pytest.raises(ValueError, match="function must be one of"):
        explain(np.matmul, x, x)
    with pytest.raises(ValueError, match="explain the conv call they make"):
        explain("correlate", np.ones(8), np.ones(3))
    # The ranked forms' own check, as the call would make it.
    with pytest.raises(ValueError, match="weight must have 3 dimensions for 1 spatial dim"):
        explain(convmm.conv1d, x, np.ones((8, 16, 3, 3), np.float32))
    with pytest.raises(ValueError, match="weight must have 5 dimensions"):
        explain("conv_transpose3d", x, np.ones((16, 8, 3, 3), np.float32))


def test_workspace_stays_within_the_budget():
    """The engine's workspace is the tile budget, never the patch matrix."""
    x = np.ones((8, 64, 56, 56), np.float32)
    for weight, groups in ((np.ones((64, 64, 3, 3), np.float32), 1),
                           (np.ones((64, 1, 3, 3), np.float32), 64)):
        for method in ENGINE:
            call = _call(x, weight, groups=groups, method=method)
            for operation in policy.OPERATIONS:
                plan = policy.plan(call, operation)
                assert plan.workspace_bytes <= max(32 << 20, plan.patch_matrix_bytes // 8)


@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 5, 3), (8, 256, 32), (97, 300, 65), (200, 70, 1030)])
def test_gemm_kernel(shape):
    """Edge tiles in every dimension, K beyond one KC slice, N beyond one NC block."""
    from convmm._engines.cpu import gemm

    m, k, n = shape
    rng = np.random.default_rng(m)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    c = np.full((m, n), np.nan, np.float32)
    half = n // 2
    with threads.slp_vectorising:      # as the engine compiles it (the cache ignores the flag)
        gemm.gemm(a, b, c, 0, half)
        gemm.gemm(a, b, c, half, n)
    np.testing.assert_allclose(c, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4 * np.sqrt(k))


_VECTORISED = r"""
import re, sys
import numpy as np
from convmm._engines.cpu import gemm, threads
a = np.ones((16, 300), np.float32); b = np.ones((300, 40), np.float32); c = np.empty((16, 40), np.float32)
threads.run_workers(lambda k: gemm.gemm(a, b, c, 0, 40), 1)
assert (c == 300).all()
import convmm
x = np.ones((1, 3, 6, 6), np.float32)
assert (convmm.conv(x, np.ones((40, 3, 3, 3), np.float32), method="implicit_gemm") == 27).all()
from convmm._engines.cpu.microkernel import microkernel, microkernel_padded
for kernel in (microkernel, microkernel_padded):
    ir = "".join(kernel.inspect_llvm().values())
    lanes = {int(n) for n in re.findall(r"(?:fmul|fma)[a-z ]*<(\d+) x float>", ir)}   # the k-loop's products
    print(max(lanes, default=1))
"""


@pytest.mark.skipif(os.environ.get("NUMBA_BOUNDSCHECK") != "1",
                    reason="for the bounds-checked run of the CPU engine's tests (.ci/run)")
def test_the_kernels_check_their_bounds_in_the_bounds_checked_run():
    """Numba's on-disk cache ignores NUMBA_BOUNDSCHECK: a kernel loaded from a cache
    compiled without it reads out of bounds silently.  The bounds-checked run keeps a cache
    of its own; here a kernel asked to read past its panels must raise."""
    from convmm._engines.cpu.microkernel import MR, NR, microkernel

    a, b = np.ones((2, MR), np.float32), np.ones((2, NR), np.float32)
    tile = np.zeros((MR, NR), np.float32)
    with threads.slp_vectorising, pytest.raises(IndexError):
        microkernel(3, a, b, tile)


def test_microkernel_compiles_to_vector_code(tmp_path):
    """On a cold cache the engine's compilation vectorises the micro-kernel's scalar tile
    (numba's default, SLP off, left it scalar: 4% of OpenBLAS, unseen on a warm cache)."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    env.pop("NUMBA_SLP_VECTORIZE", None)
    env.pop("NUMBA_DISABLE_JIT", None)
    result = subprocess.run([sys.executable, "-c", _VECTORISED], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    packed, in_place = (int(lanes) for lanes in result.stdout.split())
    assert packed >= 4, "the micro-kernel compiled to scalar code"
    assert in_place >= 4, "the in-place micro-kernel compiled to scalar code"


def test_microkernel_is_generated():
    """Each tile's module (src/convmm/_engines/cpu/microkernel_MRxNR.py) is what
    tools/generate_microkernel.py writes, and the engine chooses among the same tiles."""
    import importlib.util
    from pathlib import Path

    from convmm._engines.cpu import microkernel

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("generator", root / "tools" / "generate_microkernel.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    assert generator.TILES == microkernel.TILES
    for name, (mr, nr) in generator.TILES.items():
        path = root / "src" / "convmm" / "_engines" / "cpu" / f"microkernel_{name}.py"
        assert path.read_text(encoding="utf-8") == generator.source(mr, nr), name


def test_the_register_tile_follows_the_cpu_features():
    """8×32 where AVX-512F is on (32 vector registers), 6×16 elsewhere (AVX2's 16; an 8×32
    tile's 32 ymm accumulators spill); this process's tile is its features' (Numba's)."""
    from convmm._engines.cpu import microkernel

    assert microkernel.tile_for("+avx,+avx2,+fma,+avx512f,+avx512bw") == "8x32"
    assert microkernel.tile_for("+avx,+avx2,+fma,-avx512f,-avx512bw") == "6x16"
    assert microkernel.tile_for("") == "6x16"                # generic, aarch64's NEON
    if not os.environ.get("_CONVMM_MICROKERNEL"):
        assert microkernel.TILE == microkernel.tile_for(microkernel._target_features())
    assert (microkernel.MR, microkernel.NR) == microkernel.TILES[microkernel.TILE]


_EVERY_TILE = r"""
import numpy as np, convmm
from convmm._engines.cpu import gemm, microkernel
from convmm._engines.cpu.engine import gemm as run
print(microkernel.TILE, gemm.MR, gemm.NR)
rng = np.random.default_rng(0)
for dtype, tol in ((np.float32, 1e-4), (np.float64, 1e-11)):
    a, b = rng.random((97, 301)).astype(dtype), rng.random((301, 83)).astype(dtype)
    c = run(a, b, np.empty((97, 83), dtype))
    assert np.abs(c - a.astype(float) @ b).max() < tol * 301, np.abs(c - a @ b).max()
x = rng.random((2, 8, 17, 19)).astype(np.float32)
w = rng.random((16, 8, 3, 3)).astype(np.float32)
g = rng.random((2, 16, 17, 19)).astype(np.float32)
want = convmm.conv(x.astype(float), w.astype(float), padding=1, method="im2col")
assert np.abs(convmm.conv(x, w, padding=1, method="implicit_gemm") - want).max() < 1e-4
grads = convmm.conv_backward(g, x, w, padding=1, method="implicit_gemm")
exact = convmm.conv_backward(g.astype(float), x.astype(float), w.astype(float), padding=1,
                             method="im2col")
assert np.abs(grads.weight - exact.weight).max() < 1e-3 * np.abs(exact.weight).max()
assert np.abs(grads.input - exact.input).max() < 1e-4 * np.abs(exact.input).max()
"""


@pytest.mark.parametrize("tile", ["8x32", "6x16"])
def test_every_register_tile_runs_the_engine_right(tile, tmp_path):
    """Each generated tile, forced in a process with a Numba cache of its own, runs the
    GEMM, the implicit-GEMM convolution and its gradients right on this machine (an 8×32
    tile spills on AVX2, slowly, but computes the same sums)."""
    env = {**os.environ, "_CONVMM_MICROKERNEL": tile, "NUMBA_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", _EVERY_TILE], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [tile, *map(str, {"8x32": (8, 32), "6x16": (6, 16)}[tile])]


def test_avx2_code_forced_through_numbas_cpu_features_takes_the_avx2_tile(tmp_path):
    """An x86 host's features less every AVX-512 one, forced on Numba (``NUMBA_CPU_NAME``,
    ``NUMBA_CPU_FEATURES``) in a process of its own: the AVX2 tile, compiled for AVX2, runs
    the engine right (on an AVX-512 machine, the code an AVX2 machine would run)."""
    from numba.core.codegen import get_host_cpu_features

    features = get_host_cpu_features().split(",")
    if "+avx2" not in features or "+fma" not in features:
        pytest.skip("not an x86 host with AVX2 and FMA")
    avx2 = ",".join("-" + f[1:] if f[1:].startswith("avx512") else f for f in features)
    env = {**os.environ, "NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": avx2,
           "NUMBA_CACHE_DIR": str(tmp_path)}
    env.pop("_CONVMM_MICROKERNEL", None)
    done = subprocess.run([sys.executable, "-c", _EVERY_TILE], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["6x16", "6", "16"]


def test_kernels_run_as_plain_python():
    """NUMBA_DISABLE_JIT=1: the kernels' Python bodies give the same results (tiny shapes)."""
    script = """
import numpy as np, convmm
from convmm import reference
rng = np.random.default_rng(0)
x = rng.standard_normal((2, 2, 5, 4)); w = rng.standard_normal((2, 1, 2, 3))
kw = dict(stride=(2, 1), padding=1, groups=2, padding_mode="reflect")
g = rng.standard_normal(reference.conv(x, w, **kw).shape)
for method in ("tiled_blas", "implicit_gemm", "direct"):
    np.testing.assert_allclose(convmm.conv(x, w, method=method, **kw), reference.conv(x, w, **kw))
    got = convmm.conv_backward(g, x, w, method=method, **kw)
    want = reference.conv_backward(g, x, w, **kw)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, atol=1e-12)
print("ok")
"""
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.parametrize("seed", range(12))
def test_direct_on_the_padded_grid_gives_the_row_sweeps_bits(seed, monkeypatch):
    """The stride-1 direct forward map on the padded grid sums in the row sweep's order."""
    rng = np.random.default_rng(seed)
    while True:
        cfg = random_config(rng, dtypes=("float32", "float64"))
        if cfg.in_channels // cfg.groups * int(np.prod(cfg.kernel)) <= 64:
            break
    cfg.stride = (1,) * cfg.nd
    x, w, b = make_conv_inputs(rng, cfg)
    kw = cfg.kwargs(padding_mode=cfg.padding_mode)
    grid = convmm.conv(x, w, b, method="direct", **kw)
    tune(monkeypatch, wide_samples=0)          # the row sweeps
    np.testing.assert_array_equal(convmm.conv(x, w, b, method="direct", **kw), grid)
    assert_close(grid, reference.conv(wide(x), wide(w), wide(b), **kw), np, dtype=cfg.dtype)


@pytest.mark.parametrize("seed", range(16))
def test_weight_gradient_on_the_padded_grid(seed, monkeypatch):
    """The stride-1 channels-first weight gradient on each image's padded grid (taken
    here whatever its overhead) against the definition."""
    tune(monkeypatch, wide_overhead=1e9)
    rng = np.random.default_rng(300 + seed)
    cfg = random_config(rng, dtypes=("float32", "float64"), formats=("channels_first",))
    cfg.stride = (1,) * cfg.nd
    x, w, _ = make_conv_inputs(rng, cfg)
    kw = cfg.kwargs(padding_mode=cfg.padding_mode)
    y = convmm.conv(x, w, method="im2col", **kw)
    g = np.flip(y, axis=-1).copy()
    got = convmm.conv_backward(g, x, w, method="implicit_gemm", needs="weight", **kw).weight
    want = reference.conv_backward(wide(g), wide(x), wide(w), **kw)[1]
    assert_close(got, want, np, dtype=cfg.dtype)


def test_auto_sweeps_thin_groups_on_the_padded_grid():
    """A ResNeXt-style layer (4×4 channels per group, stride 1): the forward map and the
    input gradient (the flipped kernel's forward map) by direct on the padded grid; 8×8
    channels per group, or a stride of 2, go to the GEMM."""
    x = np.ones((2, 32, 12, 12), np.float32)
    g = np.ones((2, 32, 12, 12), np.float32)
    w4, w8 = np.ones((32, 4, 3, 3), np.float32), np.ones((32, 8, 3, 3), np.float32)
    plans = convmm.explain(convmm.conv_backward, g, x, w4, padding=1, groups=8)
    assert plans.startswith("input: a stride-1 convolution with the flipped kernel")
    assert "forward: direct (4×4 channels per group, stride 1" in plans
    assert convmm.explain(convmm.conv, x, w4, padding=1, groups=8).startswith("conv: direct")
    assert "conv: implicit_gemm" in convmm.explain(convmm.conv, x, w8, padding=1, groups=4)
    assert "direct" not in convmm.explain(convmm.conv, x, w4, padding=1, groups=8, stride=2)
    got = convmm.conv_backward(g, x, w4, padding=1, groups=8)
    want = reference.conv_backward(g.astype(np.float64), x.astype(np.float64),
                                   w4.astype(np.float64), padding=1, groups=8)
    assert_close(got.input, want[0], np, dtype="float32")


@pytest.mark.parametrize("seed", range(12))
def test_direct_weight_gradient_on_the_padded_grid(seed, monkeypatch):
    """The stride-1 direct weight gradient on the padded grid (interleaved partial sums)
    against the definition, and against the row sweeps."""
    rng = np.random.default_rng(500 + seed)
    cfg = random_config(rng, dtypes=("float32", "float64", "complex64"))
    cfg.stride = (1,) * cfg.nd
    x, w, _ = make_conv_inputs(rng, cfg)
    kw = cfg.kwargs(padding_mode=cfg.padding_mode)
    y = convmm.conv(x, w, method="im2col", **kw)
    g = np.flip(y, axis=-1).copy()
    grid = convmm.conv_backward(g, x, w, method="direct", needs="weight", **kw).weight
    want = reference.conv_backward(wide(g), wide(x), wide(w), **kw)[1]
    assert_close(grid, want, np, dtype=cfg.dtype)
    tune(monkeypatch, wide_samples=0)
    rows = convmm.conv_backward(g, x, w, method="direct", needs="weight", **kw).weight
    assert_close(rows, want, np, dtype=cfg.dtype)


def test_gemm_blocking_follows_the_caches(tmp_path):
    """The packed GEMM's blocking comes from the data caches (this machine's: the tuned
    values where L1 is 48 KiB and L2 1 MiB); another machine's blocking gives the same
    products (run in a process with a Numba cache of its own)."""
    from convmm._engines.cpu import gemm

    assert gemm.blocking(48 << 10, 1 << 20, mr=8, nr=32) == (256, 96, 1024)
    kc, mc, nc = gemm.blocking(32 << 10, 256 << 10)
    assert kc % 64 == 0 and mc % gemm.MR == 0 and nc % gemm.NR == 0
    assert kc * gemm.NR * 4 <= 0.75 * (32 << 10) and kc * nc * 4 <= 256 << 10
    code = ("import numpy as np, convmm\n"
            "from convmm._engines.cpu import gemm\n"
            "from convmm._engines.cpu.engine import gemm as run\n"
            "assert (gemm.KC, gemm.MC, gemm.NC) == gemm.blocking(32 << 10, 256 << 10)\n"
            "rng = np.random.default_rng(0)\n"
            "a, b = rng.random((300, 700)), rng.random((700, 500))\n"
            "c = run(a, b, np.empty((300, 500)))\n"
            "assert np.abs(c - a @ b).max() < 1e-11, np.abs(c - a @ b).max()\n"
            "x, w = rng.random((2, 8, 17, 19)).astype(np.float32), rng.random((16, 8, 3, 3)).astype(np.float32)\n"
            "y = convmm.conv(x, w, padding=1, method='implicit_gemm')\n"
            "want = convmm.conv(x.astype(float), w.astype(float), padding=1, method='im2col')\n"
            "assert np.abs(y - want).max() < 1e-4\n")
    env = {**os.environ, "_CONVMM_GEMM_CACHES": f"{32 << 10},{256 << 10}",
           "NUMBA_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
