"""Convolutions of Dask arrays against the NumPy path: lazy results, irregular chunks
(chunks of one sample, chunks not multiples of the stride, chunks smaller than the
halo, channel chunks), every padding form and mode, both layouts, real and complex."""

import numpy as np
import pytest

import convmm

da = pytest.importorskip("dask.array")
import dask  # noqa: E402

from helpers import (assert_close, make_conv_inputs, random_array, random_config,  # noqa: E402
                     random_transpose_case)


def _irregular(rng, size):
    """A random cut of ``size`` samples: whole, or pieces of 1 … ⌈size/2⌉ samples."""
    if size <= 1 or rng.random() < 0.25:
        return (size,)
    pieces, left = [], size
    while left:
        piece = int(rng.integers(1, max(2, size // 2 + 1)))
        pieces.append(min(piece, left))
        left -= pieces[-1]
    return tuple(pieces)


def chunked(rng, a):
    """``a`` as a Dask array with an irregular cut along every axis."""
    return da.from_array(a, chunks=tuple(_irregular(rng, n) for n in a.shape))


def _compare(got, want, dtype):
    assert isinstance(got, da.Array)
    assert got.shape == want.shape and got.dtype == want.dtype
    assert_close(got.compute(), want, np, dtype=dtype)


@pytest.mark.parametrize("seed", range(30))
def test_conv_and_its_gradients_equal_the_numpy_path(seed):
    rng = np.random.default_rng(9100 + seed)
    cfg = random_config(rng)
    x, w, b = make_conv_inputs(rng, cfg)
    kw = cfg.kwargs(padding_mode=cfg.padding_mode)
    kept = x.copy()
    want = convmm.conv(x, w, b, **kw)
    dx = chunked(rng, x)
    _compare(convmm.conv(dx, w, b, **kw), want, cfg.dtype)
    g = random_array(rng, want.shape, cfg.dtype)
    dg = chunked(rng, g)
    weight = chunked(rng, w) if rng.random() < 0.3 else w       # a Dask weight too
    got = convmm.conv_backward(dg, dx, weight, **kw)
    for actual, desired in zip(got, convmm.conv_backward(g, x, w, **kw)):
        _compare(actual, desired, cfg.dtype)
    np.testing.assert_array_equal(x, kept)


@pytest.mark.parametrize("seed", range(20))
def test_conv_transpose_and_its_gradients_equal_the_numpy_path(seed):
    rng = np.random.default_rng(9300 + seed)
    cfg, x, w, b, kw = random_transpose_case(rng)
    want = convmm.conv_transpose(x, w, b, **kw)
    dx = chunked(rng, x)
    _compare(convmm.conv_transpose(dx, w, b, **kw), want, cfg.dtype)
    g = random_array(rng, want.shape, cfg.dtype)
    got = convmm.conv_transpose_backward(chunked(rng, g), dx, w, **kw)
    for actual, desired in zip(got, convmm.conv_transpose_backward(g, x, w, **kw)):
        _compare(actual, desired, cfg.dtype)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular", "symmetric"])
def test_the_padding_reads_across_the_global_edges(mode):
    """Chunks of one sample, a stride of 3 across them and padding wider than a chunk:
    the padding is the whole array's, not each chunk's."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 11, 10))
    w = rng.standard_normal((4, 3, 3, 4))
    kw = dict(stride=(3, 2), padding=((2, 1), (3, 2)), dilation=(2, 1), padding_mode=mode)
    dx = da.from_array(x, chunks=(1, 1, 1, (3, 1, 4, 2)))
    want = convmm.conv(x, w, **kw)
    y = convmm.conv(dx, w, **kw)
    _compare(y, want, "float64")
    gi = convmm.conv_backward(da.from_array(want, chunks=(1, 2, 1, 1)), dx, w, **kw).input
    _compare(gi, convmm.conv_backward(want, x, w, **kw).input, "float64")


def test_output_chunks_follow_the_input_and_the_stride():
    """Output o goes with the input chunk holding sample o·s: boundaries ⌈b/s⌉."""
    x = da.zeros((1, 1, 20), chunks=(1, 1, (6, 7, 7)))
    y = convmm.conv(x, np.ones((1, 1, 3)), stride=2, padding=1)
    # input boundaries 6, 13 → outputs ⌈6/2⌉ = 3, ⌈13/2⌉ = 7; 10 outputs in all
    assert y.chunks[2] == (3, 4, 3)
    # chunks of a multiple of the stride: output chunks as regular as the input's
    volume = da.zeros((1, 1, 64, 48), chunks=(1, 1, 16, 12))
    y = convmm.conv(volume, np.ones((2, 1, 3, 3)), stride=(2, 3), padding=1,
                    padding_mode="reflect")
    assert y.chunks[2:] == ((8,) * 4, (4,) * 4)


@pytest.mark.parametrize("method", ["direct", "tiled_blas", "implicit_gemm"])
def test_without_a_channel_reduction_the_engines_bits_are_the_numpy_paths(method):
    """The CPU engine's blocks along the batch and space run the same per-element sums
    as the whole array (its order does not depend on the block's size); a split of the
    input channels adds partial sums in another order, and the array-API im2col path
    leaves the order to BLAS, which may choose it by the matrices' sizes."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((4, 3, 16, 15)).astype(np.float32)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    kw = dict(stride=2, padding=1, padding_mode="reflect", method=method)
    for chunks in [(2, 3, 5, 7), (1, 3, 1, 15), (3, 3, 16, 2)]:
        y = convmm.conv(da.from_array(x, chunks=chunks), w, **kw).compute()
        np.testing.assert_array_equal(y, convmm.conv(x, w, **kw))


def test_results_repeat_bit_for_bit():
    rng = np.random.default_rng(12)
    x = da.from_array(rng.standard_normal((4, 6, 9, 9)), chunks=(1, 2, 4, 3))
    g = da.from_array(rng.standard_normal((4, 4, 9, 9)), chunks=(3, 4, 2, 5))
    w = rng.standard_normal((4, 6, 3, 3))
    first = dask.compute(*convmm.conv_backward(g, x, w, padding=1), convmm.conv(x, w, padding=1))
    second = dask.compute(*convmm.conv_backward(g, x, w, padding=1), convmm.conv(x, w, padding=1),
                          scheduler="synchronous")
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_results_stay_lazy_and_plain_functions_built_on_conv_take_dask():
    rng = np.random.default_rng(13)
    image = rng.standard_normal((30, 24))
    kernel = rng.standard_normal((5, 4))
    lazy = convmm.correlate(da.from_array(image, chunks=(7, 11)), kernel, mode="same",
                            boundary="symmetric")
    assert isinstance(lazy, da.Array)
    np.testing.assert_allclose(lazy.compute(), convmm.correlate(image, kernel, mode="same",
                                                                 boundary="symmetric"))
    up = convmm.upsample_bilinear(da.from_array(image[None, None], chunks=(1, 1, 8, 5)), 2)
    assert isinstance(up, da.Array)
    np.testing.assert_allclose(up.compute(), convmm.upsample_bilinear(image[None, None], 2))


def test_bad_input_gets_the_numpy_paths_errors_before_anything_runs():
    x = da.zeros((2, 3, 8, 8), chunks=2)
    with pytest.raises(ValueError, match="x has 3 channels"):
        convmm.conv(x, np.ones((4, 2, 3, 3)))
    with pytest.raises(ValueError, match="padding_mode"):
        convmm.conv(x, np.ones((4, 3, 3, 3)), padding_mode="mirror")
    with pytest.raises(ValueError, match="grad_output must have the output's shape"):
        convmm.conv_backward(da.zeros((2, 4, 5, 5)), x, np.ones((4, 3, 3, 3)))
    with pytest.raises(TypeError):
        convmm.conv(da.zeros((2, 3, 8, 8), dtype=int, chunks=2), np.ones((4, 3, 3, 3), int))
    signal = da.arange(20.0, chunks=5)
    unknown = signal[signal > 3]                    # chunk sizes unknown until computed
    with pytest.raises(ValueError, match="in1 is a Dask array of unknown chunk sizes"):
        convmm.correlate(unknown, np.ones(3))
    with pytest.raises(ValueError, match=r"x is a Dask array of unknown chunk sizes.*"
                                         r"compute_chunk_sizes"):
        convmm.conv(unknown[None, None], np.ones((1, 1, 3)))


def test_what_is_not_an_array_or_mixes_namespaces_is_named():
    x = da.ones((2, 2, 7, 7), chunks=3)
    with pytest.raises(TypeError, match="weight must be an array, got list"):
        convmm.conv(x, [[[[1.0]]]])
    with pytest.raises(TypeError, match="bias must be an array, got list"):
        convmm.conv(x, np.ones((3, 2, 1, 1)), [1.0, 2, 3])
    with pytest.raises(TypeError, match="grad_output must be an array"):
        convmm.conv_backward([[1.0]], x, np.ones((3, 2, 1, 1)))
    strict = pytest.importorskip("array_api_strict")
    with pytest.raises(TypeError, match="x and weight must come from one array namespace.*"
                                        "x: a Dask array of numpy chunks, weight: array_api_strict"):
        convmm.conv(x, strict.ones((3, 2, 1, 1)))
    with pytest.raises(TypeError, match="in1: a Dask array of numpy chunks, in2: array_api_strict"):
        convmm.correlate(da.ones(9, chunks=4), strict.ones(3))


@pytest.mark.parametrize("dtype", [np.int64, np.int8, np.bool_, np.float16])
@pytest.mark.parametrize("which", ["x", "weight", "bias"])
def test_dtypes_convmm_does_not_compute_in_are_refused_as_on_numpy(dtype, which):
    """An integer, bool or half-precision Dask array beside float arrays is refused with the
    NumPy path's TypeError, not promoted to the float dtype beside it."""
    arrays = dict(x=da.ones((2, 3, 8), chunks=4, dtype=np.float32),
                  weight=np.ones((4, 3, 3), np.float64), bias=da.ones(4, chunks=2))
    arrays[which] = arrays[which].astype(dtype)
    with pytest.raises(TypeError, match=f"{which} has dtype {np.dtype(dtype)}; convmm computes "
                                        "in float32"):
        convmm.conv(arrays["x"], arrays["weight"], arrays["bias"])
    transposed = dict(arrays, weight=np.swapaxes(arrays["weight"], 0, 1))
    with pytest.raises(TypeError, match=f"{which} has dtype {np.dtype(dtype)}"):
        convmm.conv_transpose(transposed["x"], transposed["weight"], transposed["bias"])
    with pytest.raises(TypeError, match=f"in1 has dtype {np.dtype(dtype)}"):
        convmm.correlate(da.ones(9, chunks=4).astype(dtype), np.ones(3))


def test_what_needs_one_array_in_memory_refuses_a_dask_array_by_name():
    x = da.ones((1, 2, 8), chunks=4)
    with pytest.raises(TypeError, match="x must be an array held in memory.*x.compute()"):
        convmm.im2col(x, 3)
    with pytest.raises(TypeError, match="cols must be an array held in memory"):
        convmm.col2im(da.ones((1, 6, 6)), (8,), (3,))
    with pytest.raises(TypeError, match="weight must be an array held in memory"):
        convmm.ConvOperator(da.ones((3, 2, 3)), (2, 8))
    with pytest.raises(TypeError, match="weight must be an array held in memory"):
        convmm.toeplitz(da.ones((3, 2, 3)), (2, 8))


def test_a_distributed_cluster_of_two_workers_computes_the_same():
    distributed = pytest.importorskip("distributed")
    rng = np.random.default_rng(14)
    x = rng.standard_normal((2, 2, 24, 20))
    w = rng.standard_normal((3, 2, 3, 3))
    kw = dict(stride=2, padding=1, padding_mode="circular")
    from convmm._bench.larger_than_memory import environment_kept

    with environment_kept(), distributed.LocalCluster(n_workers=2, threads_per_worker=2, processes=True,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        dx = da.from_array(x, chunks=(1, 2, 7, 9))
        y, grads = client.compute([convmm.conv(dx, w, **kw),
                                   convmm.conv_backward(da.ones((2, 3, 12, 10), chunks=5), dx,
                                                        w, **kw)], sync=True)
    np.testing.assert_allclose(y, convmm.conv(x, w, **kw))
    for actual, desired in zip(grads, convmm.conv_backward(np.ones((2, 3, 12, 10)), x, w, **kw)):
        np.testing.assert_allclose(actual, desired)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "circular"])
def test_conv_operator_applies_to_dask_arrays(mode):
    rng = np.random.default_rng(15)
    w = rng.standard_normal((3, 2, 3, 3)) + 1j * rng.standard_normal((3, 2, 3, 3))
    op = convmm.ConvOperator(w, (2, 9, 8), stride=2, padding=1, padding_mode=mode)
    x = rng.standard_normal(op.shape[1])
    X = rng.standard_normal((op.shape[1], 3))
    y = rng.standard_normal(op.shape[0])
    for got, want in ((op.matvec(da.from_array(x, chunks=40)), op.matvec(x)),
                      (op @ da.from_array(X, chunks=(50, 2)), op @ X),
                      (op.rmatvec(da.from_array(y, chunks=7)), op.rmatvec(y)),
                      (op.T.matvec(da.from_array(y, chunks=7)), op.T.matvec(y))):
        assert isinstance(got, da.Array)
        np.testing.assert_allclose(got.compute(), want, rtol=1e-12, atol=1e-12)
    # No columns, in several row chunks: an empty result of the right shape, either way.
    for operator in (op, op.T):
        empty = operator @ da.zeros((operator.shape[1], 0), chunks=(7, 1))
        assert isinstance(empty, da.Array) and empty.compute().shape == (operator.shape[0], 0)


def test_explain_says_how_the_graph_is_cut():
    x = da.zeros((4, 6, 64, 64), chunks=(2, 3, 16, 16), dtype=np.float32)
    w = np.ones((8, 6, 3, 3), np.float32)
    text = convmm.explain(convmm.conv, x, w, stride=2, padding=1, padding_mode="reflect")
    lines = text.splitlines()
    assert lines[0].startswith("dask: x chunks (2×2, 3×2, 16×4, 16×4) → (2×2, 8, 8×4, 8×4); ")
    assert lines[0].endswith(" tasks (a×n+r: n chunks of a, then one of r)")
    assert int(lines[0].split("; ")[1].split()[0]) > 0
    assert "halo of d·(K−1) = (2, 2)" in lines[1] and "reflect on the whole array" in lines[1]
    assert "2 chunks along the channel axis: partial convolutions summed" in lines[2]
    # The largest block holds one channel chunk (3 channels × 9 taps), not all six channels.
    assert lines[3].startswith("conv, the largest block: ") and "× 27 patch rows" in lines[3]
    g = da.zeros((4, 8, 32, 32), chunks=8, dtype=np.float32)
    text = convmm.explain(convmm.conv_backward, g, x, w, stride=2, padding=1)
    assert text.startswith("dask: grad_output chunks (4, 8, 8×4, 8×4) → input (4, 6, 16×4, "
                           "16×4), weight (8, 6, 3, 3), bias (8); ")
    assert "input, the largest block: " in text and "weight, the largest block: " in text
    assert "one partial per (batch, spatial) block" in text
    # Without a batch axis, neither side shows one.
    text = convmm.explain(convmm.conv, x[0], w, stride=2, padding=1)
    assert text.startswith("dask: x chunks (3×2, 16×4, 16×4) → (8, 8×4, 8×4); ")
    assert convmm.explain(convmm.conv, x, w).splitlines()[1].endswith("; no padding")


def test_the_larger_than_memory_run_reports_its_figures(tmp_path, capsys):
    """The bench's Zarr run at a tiny size: both results written and checked at two
    corners, each worker's peak memory read, no worker lost, the caller's environment
    as it was (a LocalCluster leaves its workers' thread limits in it)."""
    pytest.importorskip("distributed")
    pytest.importorskip("zarr")
    import json
    import os

    from convmm._bench import larger_than_memory

    environment = dict(os.environ)

    out = tmp_path / "figures.json"
    assert larger_than_memory.main(["--shape", "40", "36", "20", "--chunk", "16", "12", "10",
                                    "--workers", "1", "--dir", str(tmp_path / "stores"),
                                    "--json", str(out)]) == 0
    (figures,) = json.loads(out.read_text())["figures"]
    assert figures["workers"] == 1 and not figures["workers_lost_or_restarted"]
    assert len(figures["peak_bytes"]) == 1 and figures["peak_bytes"][0] > 0
    assert max(figures["corner_errors"]) < 1e-5
    printed = capsys.readouterr().out
    assert "volume 40×36×20 float32 (112.50 kiB)" in printed    # not "0.00 GiB"
    assert "1 worker (1GiB each): peak memory" in printed
    assert dict(os.environ) == environment


def test_the_ranked_forms_take_dask_beside_numpy():
    """conv2d and conv_transpose1d accept a Dask input with a NumPy weight, as conv does."""
    x = np.arange(2 * 3 * 10 * 9, dtype=float).reshape(2, 3, 10, 9)
    w = np.ones((4, 3, 3, 3))
    got = convmm.conv2d(da.from_array(x, chunks=2), w)
    assert isinstance(got, da.Array)
    np.testing.assert_allclose(got.compute(), convmm.conv2d(x, w))
    y = np.ones((1, 2, 7))
    got = convmm.conv_transpose1d(da.from_array(y, chunks=3), np.ones((2, 1, 3)), stride=2)
    np.testing.assert_allclose(got.compute(),
                               convmm.conv_transpose1d(y, np.ones((2, 1, 3)), stride=2))


@pytest.mark.parametrize("seed", range(6))
def test_dask_arrays_of_cupy_chunks_match_the_numpy_path(seed):
    """Dask arrays whose chunks are CuPy arrays: each block on the GPU (the CUDA engine
    where it runs, else CuPy's array-API path), every result a Dask array of CuPy chunks."""
    from helpers import backend_names

    if "cupy" not in backend_names():
        pytest.skip("needs CuPy and a GPU")
    import cupy

    rng = np.random.default_rng(500 + seed)
    cfg = random_config(rng, dtypes=("float32", "float64"))
    x, w, b = make_conv_inputs(rng, cfg)
    keywords = dict(padding_mode=cfg.padding_mode, **cfg.kwargs())
    lazy = chunked(rng, x).map_blocks(cupy.asarray)
    y = convmm.conv(lazy, cupy.asarray(w), None if b is None else cupy.asarray(b), **keywords)
    want = convmm.conv(x, w, b, **keywords)
    got = y.compute()
    assert isinstance(got, cupy.ndarray)
    assert_close(got.get(), want, np, dtype=cfg.dtype)
    g = random_array(rng, want.shape, cfg.dtype)
    grads = convmm.conv_backward(chunked(rng, g).map_blocks(cupy.asarray), lazy,
                                 cupy.asarray(w), **keywords)
    expected = convmm.conv_backward(g, x, w, **keywords)
    for have, wanted in zip(grads, expected):
        assert_close(have.compute().get(), wanted, np, dtype=cfg.dtype)


def test_a_method_named_runs_block_by_block_where_the_blocks_allow():
    """Each block is a "valid" convolution of its window, planned for itself: Winograd asked
    for by name runs the blocks of a padded transpose (which, whole, it cannot run), and a
    block it cannot run (stride 2) runs auto's choice, as a backward pass's map would."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 3, 3, 3))
    y = rng.standard_normal((2, 4, 9, 8))
    got = convmm.conv_transpose(da.from_array(y, chunks=(1, 4, 5, 4)), w, padding=1,
                                padding_mode="reflect", method="winograd").compute()
    want = convmm.conv_transpose(y, w, padding=1, padding_mode="reflect", method="im2col")
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    x = rng.standard_normal((2, 3, 9, 8))
    got = convmm.conv(da.from_array(x, chunks=(1, 3, 5, 4)), w, stride=2,
                      method="winograd").compute()
    np.testing.assert_allclose(got, convmm.conv(x, w, stride=2, method="im2col"),
                               rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="method='winograd' cannot run this convolution"):
        convmm.conv(x, w, stride=2, method="winograd")
