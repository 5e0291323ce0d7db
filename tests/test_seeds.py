"""The worked examples of the seeds (../shared/seeds), through every method and backend."""

import numpy as np
import pytest
import scipy.linalg
import scipy.signal
import scipy.sparse

import convmm
from convmm import reference
from helpers import assert_close, to_numpy, to_xp


def _nchw(a):
    return np.asarray(a, dtype=np.float64)[None, None]


# --- seed 000: 1-d convolution as a matrix product --------------------------------
def test_seed000_signal(xp):
    signal = _nchw([1, 2, 4, 5, 3, 0])          # (N, C, L) = (1, 1, 6)
    kernel = _nchw([5, 4])
    out = convmm.conv(to_xp(xp, signal), to_xp(xp, kernel))
    assert_close(out, [[[13.0, 26, 40, 37, 15]]], xp)
    # ... the same numbers as the banded scipy.sparse.diags matrix of the seed
    banded = scipy.sparse.diags([5.0, 4.0], [0, 1], shape=(5, 6)).toarray()
    np.testing.assert_array_equal(banded @ signal[0, 0], to_numpy(out)[0, 0])
    # ... and convmm.toeplitz builds exactly that banded matrix
    assert_close(convmm.toeplitz(to_xp(xp, kernel), (1, 6), format="dense"), banded, xp)
    np.testing.assert_array_equal(convmm.toeplitz(kernel, (1, 6)).toarray(), banded)


# --- seed 001: im2col strides, transposed convolution by zero insertion -------------
def test_seed001_im2col_strides_nhwc():
    """The NHWC patch view has strides (HWC, WC, C, WC, C, 1) in elements."""
    n, h, w, c, k = 2, 6, 6, 3, 3
    x = np.arange(n * h * w * c, dtype=np.float64).reshape(n, h, w, c)
    cols = convmm.im2col(x, (k, k), data_format="channels_last")
    view = np.lib.stride_tricks.as_strided(
        x, (n, h - k + 1, w - k + 1, k, k, c),
        tuple(s * 8 for s in (h * w * c, w * c, c, w * c, c, 1)))
    np.testing.assert_array_equal(cols, view.reshape(n, (h - k + 1) * (w - k + 1), k * k * c))


def test_seed001_im2col_2d_blocks():
    """B[0,0], B[0,1], B[1,1] of the 6×6 grid 1..36 are the seed's 3×3 windows (from row 1)."""
    grid = np.arange(1.0, 37).reshape(6, 6)
    cols = convmm.im2col(grid[None, None], (3, 3))[0]            # (9, 16)
    windows = cols.T.reshape(4, 4, 3, 3)
    # The seed's B[i, j] starts at grid[1 + i, 1 + j] (its first block is 8 9 10 ...).
    np.testing.assert_array_equal(windows[1, 1], [[8, 9, 10], [14, 15, 16], [20, 21, 22]])
    np.testing.assert_array_equal(windows[1, 2], [[9, 10, 11], [15, 16, 17], [21, 22, 23]])
    np.testing.assert_array_equal(windows[1, 3], [[10, 11, 12], [16, 17, 18], [22, 23, 24]])


@pytest.mark.parametrize("method", ["auto", "im2col", "zero_insertion"])
def test_seed001_transposed_stride2(xp, method):
    X = _nchw([[1, 2], [3, 4]])
    F = _nchw([[1, 0], [0, -1]])
    Y = convmm.conv_transpose(to_xp(xp, X), to_xp(xp, F), stride=2, method=method)
    expected = [[1, 0, 2, 0], [0, -1, 0, -2], [3, 0, 4, 0], [0, -3, 0, -4]]
    assert_close(Y, _nchw(expected), xp)
    # "Y ∗ F = X·‖F‖²": the strided convolution undoes it up to the kernel's energy.
    assert_close(convmm.conv(Y, to_xp(xp, F), stride=2), X * np.sum(F ** 2), xp)


def test_seed001_zero_insertion_steps():
    """The seed's steps: insert zeros, pad K−1−p, flip 180°, convolve with stride 1."""
    X = np.array([[1.0, 2], [3, 4]])
    F = np.array([[1.0, 0], [0, -1]])
    inserted = np.zeros((3, 3))
    inserted[::2, ::2] = X
    np.testing.assert_array_equal(inserted, [[1, 0, 2], [0, 0, 0], [3, 0, 4]])
    flipped = np.flip(F, (0, 1))
    np.testing.assert_array_equal(flipped, [[-1, 0], [0, 1]])
    stepwise = convmm.conv(_nchw(inserted), _nchw(flipped), padding=2 - 1 - 0)
    np.testing.assert_array_equal(stepwise, convmm.conv_transpose(_nchw(X), _nchw(F), stride=2))


def test_seed001_why_transposed(xp):
    X = np.array([[1, 2, -3, 2], [5, 1, 4, -4], [0, -2, 0, -5], [3, 0, -1, 1]], dtype=float)
    F = np.array([[2, 1, 4], [0, 3, -5], [-3, 1, -2]], dtype=float)
    Y = convmm.conv(to_xp(xp, _nchw(X)), to_xp(xp, _nchw(F)))
    # The seed writes Y = [[-27, 41], [14, 12]]; Y[0, 1] is 57: its window
    # [[2, -3, 2], [1, 4, -4], [-2, 0, -5]] gives 9 + 32 + 16, and the seed
    # stopped after the first two kernel rows (9 + 32 = 41).  The definition wins.
    assert_close(Y, _nchw([[-27, 57], [14, 12]]), xp)
    # The seed's Z is exactly the transposed convolution of its (slipped) Y, so
    # the transposition step itself is right:
    Z_seed = [[-54, 55, -67, 164], [28, -43, 326, -157], [81, -108, 61, -142], [-42, -22, -16, -24]]
    Z = convmm.conv_transpose(to_xp(xp, _nchw([[-27, 41], [14, 12]])), to_xp(xp, _nchw(F)))
    assert_close(Z, _nchw(Z_seed), xp)
    # and F̂ᵀ @ Y.flatten() is Z.flatten() with the matrix F̂ of the seed (F's rows
    # laid along X's rows, shifted by one per output column, by four per output row).
    F_hat = np.zeros((4, 16))
    for row, (i, j) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        for a in range(3):
            F_hat[row, (i + a) * 4 + j:(i + a) * 4 + j + 3] = F[a]
    np.testing.assert_array_equal(F_hat @ X.ravel(), to_numpy(Y).ravel())
    np.testing.assert_array_equal(F_hat.T @ np.array([-27, 41, 14, 12.0]), np.ravel(Z_seed))


# --- seed 002: the 4×16 sparse matrix of a 3×3 filter on a 4×4 input ----------------
def test_seed002_matrix_of_3x3_filter_on_4x4(xp):
    W = np.arange(1.0, 10).reshape(3, 3)
    C = np.zeros((4, 16))
    C[0] = [W[0, 0], W[0, 1], W[0, 2], 0, W[1, 0], W[1, 1], W[1, 2], 0, W[2, 0], W[2, 1], W[2, 2], 0, 0, 0, 0, 0]
    C[1] = np.roll(C[0], 1)
    C[2] = np.roll(C[0], 4)
    C[3] = np.roll(C[0], 5)
    basis = np.eye(16).reshape(16, 1, 4, 4)   # one image per column of C
    columns = convmm.conv(to_xp(xp, basis), to_xp(xp, W[None, None]))
    assert_close(columns, C.T.reshape(16, 1, 2, 2), xp)
    # convmm.toeplitz prints the slide's matrix itself
    assert_close(convmm.toeplitz(to_xp(xp, W[None, None]), (1, 4, 4), format="dense"), C, xp)
    np.testing.assert_array_equal(convmm.toeplitz(W[None, None], (1, 4, 4)).toarray(), C)
    # The transposed convolution is Cᵀ (the seed's 16×4 matrix).
    y = np.array([1.0, -2, 3, 0.5])
    assert_close(convmm.conv_transpose(to_xp(xp, y.reshape(1, 1, 2, 2)), to_xp(xp, W[None, None])),
                 (C.T @ y).reshape(1, 1, 4, 4), xp)


@pytest.mark.parametrize("h", [3, 4, 5])
def test_seed002_output_size_and_bilinear_kernel(xp, h):
    """w = (h − 1)·s − 2p + q, and the 3×3 kernel with stride 2, padding 1 interpolates bilinearly."""
    kernel = np.array([[0.25, 0.5, 0.25], [0.5, 1, 0.5], [0.25, 0.5, 0.25]])
    rng = np.random.default_rng(h)
    image = rng.standard_normal((h, h + 1))
    up = convmm.conv_transpose(to_xp(xp, image[None, None]), to_xp(xp, kernel[None, None]),
                               stride=2, padding=1)
    assert tuple(up.shape[-2:]) == ((h - 1) * 2 - 2 + 3, h * 2 - 2 + 3)
    # Bilinear interpolation at half-integer points of the grid (align_corners).
    rows = np.arange(2 * h - 1) / 2
    cols = np.arange(2 * h + 1) / 2
    r0, c0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
    r1, c1 = np.minimum(r0 + 1, h - 1), np.minimum(c0 + 1, h)
    fr, fc = (rows - r0)[:, None], (cols - c0)[None, :]
    expected = ((1 - fr) * (1 - fc) * image[np.ix_(r0, c0)] + (1 - fr) * fc * image[np.ix_(r0, c1)]
                + fr * (1 - fc) * image[np.ix_(r1, c0)] + fr * fc * image[np.ix_(r1, c1)])
    assert_close(up, expected[None, None], xp)


# --- seed 003: the notebook ------------------------------------------------------------
NOTEBOOK_KERNEL = np.array(
    [[[[0., 1, 0], [1, 2, 1], [0, 1, 0]], [[1, 2, 1], [0, 3, 3], [0, 1, 10]],
      [[10, 11, 12], [13, 14, 15], [16, 17, 18]]],
     [[[0., 1, 1], [1, 2, 1], [0, 1, 0]], [[1, 2, 1], [0, 3, 3], [0, 1, 10]],
      [[10, 11, 12], [13, 14, 15], [16, 17, 18]]]])


def test_seed003_output_shape():
    """calc_out_shape([2, 3, 10, 10], 10, kernel 3, stride 1, padding 0) → [2, 10, 8, 8]."""
    assert convmm.conv_output_shape((10, 10), 3) == (8, 8)
    assert convmm.conv_output_shape((256, 256), 3, stride=3, padding=1, dilation=2) == (85, 85)


def test_seed003_conv2d_layer(xp):
    """The notebook's test harness: batch 2, 3 channels, 4×4 arange input, stride 2."""
    x = np.arange(2 * 3 * 4 * 4, dtype=np.float64).reshape(2, 3, 4, 4)
    want = reference.conv(x, NOTEBOOK_KERNEL, stride=2)
    assert want.shape == (2, 2, 1, 1)
    for method in ("auto", "im2col"):
        assert_close(convmm.conv(to_xp(xp, x), to_xp(xp, NOTEBOOK_KERNEL), stride=2, method=method),
                     want, xp)
    # the first output by hand: Σ kernel[0] ⊙ x[0, :, :3, :3]
    assert want[0, 0, 0, 0] == np.sum(NOTEBOOK_KERNEL[0] * x[0, :, :3, :3])


@pytest.mark.parametrize("width", [256, 200])
def test_seed003_speed_configuration(width):
    """Batch 32, 3×256×256 (and non-square), stride 3, dilation 2, padding 1; against PyTorch."""
    torch = pytest.importorskip("torch")
    x = np.arange(32 * 3 * 256 * width, dtype=np.float32).reshape(32, 3, 256, width) / 1e6
    kw = dict(stride=3, padding=1, dilation=2)
    got = convmm.conv(x, NOTEBOOK_KERNEL.astype(np.float32), method="im2col", **kw)
    want = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(NOTEBOOK_KERNEL, dtype=torch.float32), **kw)
    assert got.shape == (32, 2, 85, -(-(width + 2 - 5) // 3))
    np.testing.assert_allclose(got, want.numpy(), rtol=2e-5, atol=2e-5 * float(want.abs().max()))
    # the notebook's mask-based im2col (ker_mask + windows) gives the same patch matrix
    cols = convmm.im2col(x[:2], 3, **kw)
    padded = np.pad(x[:2], ((0, 0), (0, 0), (1, 1), (1, 1)))
    hp, wp = padded.shape[-2:]
    ker_mask = wp * np.arange(0, 6, 2)[:, None] + np.arange(0, 6, 2)[None, :]
    windows = wp * np.arange(0, hp - 5 + 1, 3)[:, None] + np.arange(0, wp - 5 + 1, 3)[None, :]
    flat_mask = windows.reshape(1, -1) + ker_mask.reshape(-1, 1)
    notebook = padded.reshape(2, 3, -1)[:, :, flat_mask].reshape(2, 27, -1)
    np.testing.assert_array_equal(cols, notebook)


# --- seed 004: the doubly blocked Toeplitz matrix of a full 2-d convolution ---------
def test_seed004_full_convolution(xp):
    a = np.array([[5.0, 1, 3], [1, 1, 2], [2, 1, 3]])
    b = np.array([[4.0, 3], [1, 2]])
    # convmm correlates, so the kernel is flipped to get the true convolution.
    got = convmm.conv(to_xp(xp, a[None, None]), to_xp(xp, np.flip(b)[None, None].copy()), padding="full")
    assert_close(got, scipy.signal.convolve2d(a, b, mode="full")[None, None], xp)
    # The answer's doubly blocked Toeplitz matrix: 16×9, a 4×3 grid of 4×3 Toeplitz
    # blocks H_i built from the kernel's rows, H_i on the i-th block diagonal.
    T = convmm.toeplitz(to_xp(xp, np.flip(b)[None, None].copy()), (1, 3, 3), padding="full",
                        format="dense")
    T = to_numpy(T)
    assert T.shape == (16, 9)
    blocks = T.reshape(4, 4, 3, 3).transpose(0, 2, 1, 3)          # (block row, block col, 4, 3)
    H = [scipy.linalg.toeplitz(np.r_[row, 0, 0], np.r_[row[0], 0, 0]) for row in b]
    for i in range(4):
        for j in range(3):
            want = H[i - j] if 0 <= i - j < 2 else np.zeros((4, 3))
            np.testing.assert_array_equal(blocks[i, j], want)
    np.testing.assert_array_equal(T @ a.ravel(), scipy.signal.convolve2d(a, b, "full").ravel())
