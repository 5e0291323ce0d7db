"""The convolution as an explicit operator: toeplitz, its transpose, ConvOperator and its spectrum.

Random configurations cover every rank, stride, padding form and mode,
dilation, groups, both data formats and every dtype; the oracle is
``convmm.reference.toeplitz`` (a loop over the definition) and ``conv`` itself.
"""

import math

import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg

import convmm
from convmm import reference
from helpers import (assert_close, make_conv_inputs, random_array, random_config, to_numpy, to_xp,
                     wide)

SEEDS = range(30)
MODES = ("zeros", "reflect", "replicate", "circular", "symmetric")


def _conv_keywords(cfg):
    return dict(stride=cfg.stride, padding=cfg.padding, dilation=cfg.dilation, groups=cfg.groups,
                padding_mode=cfg.padding_mode, data_format=cfg.data_format)


def _sample_shape(cfg, channels):
    return (channels, *cfg.size) if cfg.data_format == "channels_first" else (*cfg.size, channels)


def _case(seed, **kwargs):
    """(cfg, one batched sample x (1, ...), weight, input_shape) for a random configuration."""
    rng = np.random.default_rng(seed)
    cfg = random_config(rng, **kwargs)
    cfg.batch = 1
    x, w, _ = make_conv_inputs(rng, cfg)
    return rng, cfg, x, w, _sample_shape(cfg, cfg.in_channels)


def _flat(a, xp):
    return xp.reshape(a, (-1,))


# --------------------------------------------------------------------------- toeplitz
@pytest.mark.parametrize("seed", SEEDS)
def test_dense_toeplitz_is_the_convolution(xp, seed):
    """conv(x)[n].reshape(-1) == C @ x[n].reshape(-1), C built from the plan, on every backend."""
    _, cfg, x, w, shape = _case(seed)
    kw = _conv_keywords(cfg)
    C = convmm.toeplitz(to_xp(xp, w), shape, format="dense", **kw)
    want = reference.toeplitz(w, shape, **kw)
    assert_close(C, want, xp)
    y = convmm.conv(to_xp(xp, x), to_xp(xp, w), **kw)
    assert_close(C @ _flat(to_xp(xp, x[0]), xp), to_numpy(y)[0].reshape(-1), xp)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("format", ["csr", "coo"])
def test_sparse_toeplitz_equals_the_definition_exactly(seed, format):
    """Folded taps are summed in the definition's order, so the entries agree to the last bit."""
    _, cfg, x, w, shape = _case(seed)
    kw = _conv_keywords(cfg)
    C = convmm.toeplitz(w, shape, format=format, **kw)
    assert isinstance(C, scipy.sparse.sparray) and C.format == format
    want = reference.toeplitz(w, shape, **kw)
    assert C.shape == want.shape and C.dtype == want.dtype
    np.testing.assert_array_equal(C.toarray(), want)
    # canonical: sorted, no duplicates, and no stored entry outside the structure
    csr = C.tocsr()
    canonical = csr.copy()
    canonical.sum_duplicates()
    assert canonical.nnz == csr.nnz
    np.testing.assert_array_equal(canonical.indices, csr.indices)
    structural = reference.toeplitz(np.ones_like(w), shape, **kw) != 0
    assert csr.nnz == np.count_nonzero(structural)


@pytest.mark.parametrize("seed", SEEDS)
def test_toeplitz_transpose_is_conv_transpose(xp, seed):
    """Cᵀ·y == conv_transpose(y) with the same weight, any padding mode, output_size = S."""
    rng, cfg, x, w, shape = _case(seed)
    kw = _conv_keywords(cfg)
    C = convmm.toeplitz(to_xp(xp, w), shape, format="dense", **kw)
    y_shape = tuple(convmm.conv(to_xp(xp, x), to_xp(xp, w), **kw).shape)
    y = random_array(rng, y_shape, cfg.dtype)
    for method in ("im2col", "zero_insertion"):
        z = convmm.conv_transpose(to_xp(xp, y), to_xp(xp, w), output_size=cfg.size, method=method,
                                  **kw)
        assert_close(z, (to_numpy(C).T @ y[0].reshape(-1)).reshape((1, *shape)), xp)


@pytest.mark.parametrize("seed", range(12))
def test_col2im_with_a_padding_mode_is_the_transpose_of_im2col(seed):
    """im2col of one channel is conv with the identity over taps; col2im is that matrix's transpose."""
    rng = np.random.default_rng(seed)
    cfg = random_config(rng, dtypes=("float64",))
    taps = math.prod(cfg.kernel)
    eye = np.eye(taps).reshape(taps, 1, *cfg.kernel)              # (T, 1, *K)
    if cfg.data_format == "channels_last":
        eye = np.moveaxis(np.moveaxis(eye, 0, -1), 0, -2)          # (*K, 1, T)
    kw = _conv_keywords(cfg)
    kw.pop("groups")
    P = convmm.toeplitz(eye, _sample_shape(cfg, 1), format="csr", **kw)
    positions = P.shape[0] // taps
    cols = random_array(rng, (taps, positions) if cfg.data_format == "channels_first"
                        else (positions, taps), "float64")
    image = convmm.col2im(cols, cfg.size, cfg.kernel, **kw)
    # channels-first P's rows are (t, l) = cols' (T, L); channels-last (l, t) = (L, T)
    np.testing.assert_allclose(image.reshape(-1), P.T @ cols.reshape(-1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_csr_of_a_larger_layer_matches_dense(mode, data_format):
    """Groups, channels-last and folded taps on a layer with many rows per pattern."""
    rng = np.random.default_rng(7)
    w = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)      # 6 out, 3 groups of 2 in
    if data_format == "channels_last":
        w = np.ascontiguousarray(np.moveaxis(np.moveaxis(w, 0, -1), 0, -2))
    shape = (6, 11, 9) if data_format == "channels_first" else (11, 9, 6)
    kw = dict(stride=(2, 1), padding=((2, 1), (1, 2)), dilation=(1, 2), groups=3,
              padding_mode=mode, data_format=data_format)
    C = convmm.toeplitz(w, shape, **kw)
    np.testing.assert_array_equal(C.toarray(), convmm.toeplitz(w, shape, format="dense", **kw))
    x = rng.standard_normal((1, *shape)).astype(np.float32)
    np.testing.assert_allclose(C @ x.reshape(-1), convmm.conv(x, w, **kw).reshape(-1),
                               rtol=2e-5, atol=1e-4)


def test_csr_index_arrays_are_32_bit_and_complex_weights_work():
    w = (np.arange(8.0) + 1j * np.arange(8.0)).reshape(2, 1, 2, 2).astype(np.complex64)
    C = convmm.toeplitz(w, (1, 4, 4), padding=1, padding_mode="reflect")
    assert C.indices.dtype == np.int32 and C.indptr.dtype == np.int32 and C.dtype == np.complex64
    x = np.arange(16.0, dtype=np.complex64).reshape(1, 1, 4, 4)
    np.testing.assert_allclose(C @ x.reshape(-1), convmm.conv(x, w, padding=1,
                                                              padding_mode="reflect").reshape(-1),
                               rtol=1e-6)


# --------------------------------------------------------------------------- dot tests
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seed", range(8))
def test_dot_test_for_every_padding_mode(xp, mode, seed):
    """⟨Cx, y⟩ = ⟨x, Cᴴy⟩ (Hermitian inner product) through ConvOperator and conv_transpose."""
    _, cfg, x, w, shape = _case(1000 * seed + MODES.index(mode), modes=(mode,),
                                dtypes=("float64", "complex128"))
    rng = np.random.default_rng(seed)
    op = convmm.ConvOperator(to_xp(xp, w), shape, **_conv_keywords(cfg))
    v = random_array(rng, (op.shape[1],), cfg.dtype)
    u = random_array(rng, (op.shape[0],), cfg.dtype)
    left = np.vdot(u, to_numpy(op.matvec(to_xp(xp, v))))
    right = np.vdot(to_numpy(op.rmatvec(to_xp(xp, u))), v)
    assert abs(left - right) <= 1e-10 * max(1.0, abs(left))
    # the same through the public functions
    y = convmm.conv_transpose(to_xp(xp, u.reshape(1, *op.output_shape)), to_xp(xp, np.conj(w)),
                              output_size=cfg.size, **_conv_keywords(cfg))
    np.testing.assert_allclose(to_numpy(y).reshape(-1), to_numpy(op.rmatvec(to_xp(xp, u))),
                               rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- ConvOperator
@pytest.mark.parametrize("seed", range(12))
def test_operator_against_its_dense_matrix(xp, seed):
    rng, cfg, x, w, shape = _case(seed)
    op = convmm.ConvOperator(to_xp(xp, w), shape, **_conv_keywords(cfg))
    dense = reference.toeplitz(wide(w), shape, **_conv_keywords(cfg))
    assert op.shape == dense.shape and op.dtype == to_xp(xp, w).dtype
    assert math.prod(op.input_shape) == op.shape[1] and math.prod(op.output_shape) == op.shape[0]
    v = random_array(rng, (op.shape[1],), cfg.dtype)
    u = random_array(rng, (op.shape[0],), cfg.dtype)
    V = random_array(rng, (op.shape[1], 3), cfg.dtype)
    U = random_array(rng, (op.shape[0], 2), cfg.dtype)
    H = dense.conj().T
    assert_close(op.matvec(to_xp(xp, v)), dense @ wide(v), xp, dtype=cfg.dtype)
    assert_close(op @ to_xp(xp, v), dense @ wide(v), xp, dtype=cfg.dtype)
    assert_close(op.matvec(to_xp(xp, v[:, None])), dense @ wide(v)[:, None], xp, dtype=cfg.dtype)
    assert_close(op.matmat(to_xp(xp, V)), dense @ wide(V), xp, dtype=cfg.dtype)
    assert_close(op @ to_xp(xp, V), dense @ wide(V), xp, dtype=cfg.dtype)
    assert_close(op.rmatvec(to_xp(xp, u)), H @ wide(u), xp, dtype=cfg.dtype)
    assert_close(op.rmatmat(to_xp(xp, U)), H @ wide(U), xp, dtype=cfg.dtype)
    assert_close(op.T.matvec(to_xp(xp, u)), dense.T @ wide(u), xp, dtype=cfg.dtype)
    assert_close(op.H.matvec(to_xp(xp, u)), H @ wide(u), xp, dtype=cfg.dtype)
    assert_close(op.adjoint().matvec(to_xp(xp, u)), H @ wide(u), xp, dtype=cfg.dtype)
    assert_close(op.T.H.matvec(to_xp(xp, v)), dense.conj() @ wide(v), xp, dtype=cfg.dtype)
    assert_close(op.T.T.matvec(to_xp(xp, v)), dense @ wide(v), xp, dtype=cfg.dtype)
    assert op.T.shape == op.H.shape == dense.T.shape
    assert_close(op.todense(), dense, xp, dtype=cfg.dtype)
    assert_close(op.H.todense(), H, xp, dtype=cfg.dtype)
    assert_close(op.T.todense(), dense.T, xp, dtype=cfg.dtype)


@pytest.mark.parametrize("seed", range(8))
def test_operator_sparse_and_scipy_linear_operator(seed):
    rng, cfg, x, w, shape = _case(seed, dtypes=("float64", "complex128"))
    op = convmm.ConvOperator(w, shape, **_conv_keywords(cfg))
    dense = reference.toeplitz(w, shape, **_conv_keywords(cfg))
    np.testing.assert_array_equal(op.tosparse().toarray(), dense)
    np.testing.assert_array_equal(op.H.tosparse("coo").toarray(), dense.conj().T)
    assert op.T.tosparse().format == "csr"
    lin = op.aslinearoperator()
    assert isinstance(lin, scipy.sparse.linalg.LinearOperator) and lin.dtype == w.dtype
    v = random_array(rng, (op.shape[1],), cfg.dtype)
    u = random_array(rng, (op.shape[0],), cfg.dtype)
    np.testing.assert_allclose(lin @ v, dense @ v, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(lin.H @ u, dense.conj().T @ u, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(lin.matmat(np.stack([v, 2 * v], axis=1)),
                               dense @ np.stack([v, 2 * v], axis=1), rtol=1e-12, atol=1e-12)
    if min(op.shape) > 3:   # svds runs matrix-free on it
        top = scipy.sparse.linalg.svds(lin, k=2, return_singular_vectors=False, rng=0)
        want = np.linalg.svd(dense, compute_uv=False)[:2]
        np.testing.assert_allclose(np.sort(top)[::-1], want, rtol=1e-8, atol=1e-10)


def test_cupy_sparse_matrices():
    """CuPy weights give cupyx.scipy.sparse matrices (run where a GPU is present)."""
    from helpers import backend_names

    if "cupy" not in backend_names():
        pytest.skip("needs CuPy and a GPU")
    import cupy
    import cupyx.scipy.sparse

    rng = np.random.default_rng(5)
    for data_format, w, shape in [("channels_first", rng.standard_normal((4, 2, 3, 3)), (4, 7, 6)),
                                  ("channels_last", rng.standard_normal((3, 3, 2, 4)), (7, 6, 4))]:
        kw = dict(stride=2, padding=1, groups=2, padding_mode="replicate", data_format=data_format)
        for format in ("csr", "coo"):
            C = convmm.toeplitz(cupy.asarray(w), shape, format=format, **kw)
            assert cupyx.scipy.sparse.issparse(C) and C.format == format
            np.testing.assert_array_equal(C.toarray().get(), reference.toeplitz(w, shape, **kw))
        op = convmm.ConvOperator(cupy.asarray(w), shape, **kw)
        np.testing.assert_array_equal(op.H.tosparse().toarray().get(),
                                      reference.toeplitz(w, shape, **kw).T)


def test_operator_promotes_and_keeps_the_input():
    w = np.ones((1, 1, 3), dtype=np.float32)
    op = convmm.ConvOperator(w, (1, 8), padding=1, padding_mode="circular")
    v = np.arange(8.0)
    kept = v.copy()
    assert op.matvec(v).dtype == np.float64 and op.matvec(v.astype(np.float32)).dtype == np.float32
    assert op.matvec(v.astype(np.complex64)).dtype == np.complex64
    np.testing.assert_array_equal(v, kept)


def test_lsqr_recovers_a_blurred_signal():
    """Deconvolution matrix-free: lsqr on the operator of a known blur recovers the signal."""
    rng = np.random.default_rng(3)
    signal = np.zeros(120)
    signal[10:30] = 1.0
    signal[50] = 3.0
    signal[70:100] = np.linspace(0, 2, 30)
    blur = np.array([[[0.1, 0.25, 0.4, 0.25, 0.1]]])
    op = convmm.ConvOperator(blur, (1, 120), padding="full")
    observed = op.matvec(signal) + 1e-6 * rng.standard_normal(op.shape[0])
    recovered = scipy.sparse.linalg.lsqr(op.aslinearoperator(), observed, atol=1e-12, btol=1e-12,
                                         iter_lim=2000)[0]
    assert np.max(np.abs(recovered - signal)) < 1e-3
    # cg on the normal equations, matrix-free too
    normal = scipy.sparse.linalg.LinearOperator(
        (120, 120), matvec=lambda v: op.rmatvec(op.matvec(v)), dtype=np.float64)
    by_cg, info = scipy.sparse.linalg.cg(normal, op.rmatvec(observed), rtol=1e-12, maxiter=5000)
    assert info == 0 and np.max(np.abs(by_cg - signal)) < 1e-3


# --------------------------------------------------------------------------- spectrum
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seed", range(4))
def test_norm_is_the_largest_singular_value(mode, seed):
    _, cfg, _, w, shape = _case(200 + 10 * seed + MODES.index(mode), modes=(mode,),
                                dtypes=("float64", "complex128"))
    op = convmm.ConvOperator(w, shape, **_conv_keywords(cfg))
    want = np.linalg.norm(reference.toeplitz(w, shape, **_conv_keywords(cfg)), 2)
    got = op.norm(tol=1e-13, maxiter=100_000)
    assert abs(got - want) <= 1e-8 * want
    assert abs(op.H.norm(tol=1e-13, maxiter=100_000) - want) <= 1e-8 * want


@pytest.mark.sweep
@pytest.mark.parametrize("nd,size,kernel,dilation", [
    (1, (9,), (3,), (1,)), (1, (8,), (4,), (2,)), (1, (5,), (4,), (3,)),   # the last wraps taps
    (2, (5, 6), (3, 3), (1, 1)), (2, (4, 4), (3, 2), (1, 3)),
])
@pytest.mark.parametrize("channels", [(1, 1), (3, 2), (2, 5), (4, 4)])
@pytest.mark.parametrize("groups", [1, 2])
def test_circular_singular_values_by_fft(xp, nd, size, kernel, dilation, channels, groups):
    c_out, c_in = channels[0] * groups, channels[1] * groups
    rng = np.random.default_rng(sum(size) + c_out + 7 * c_in)
    w = rng.standard_normal((c_out, c_in // groups, *kernel))
    padding = [((d * (k - 1)) // 2, d * (k - 1) - (d * (k - 1)) // 2)
               for k, d in zip(kernel, dilation)]
    kw = dict(padding=padding, dilation=dilation, groups=groups, padding_mode="circular")
    op = convmm.ConvOperator(to_xp(xp, w), (c_in, *size), **kw)
    assert op._circulant()
    want = np.linalg.svd(reference.toeplitz(w, (c_in, *size), **kw), compute_uv=False)
    assert_close(op.singular_values(), want, xp)


def test_singular_values_dense_fallback_and_complex():
    rng = np.random.default_rng(0)
    w = random_array(rng, (2, 3, 3, 2), "complex128")
    kw = dict(stride=2, padding=1, padding_mode="reflect")
    op = convmm.ConvOperator(w, (3, 7, 6), **kw)
    assert not op._circulant()
    want = np.linalg.svd(reference.toeplitz(w, (3, 7, 6), **kw), compute_uv=False)
    np.testing.assert_allclose(op.singular_values(), want, rtol=1e-12, atol=1e-12)
    # complex circular: the FFT path
    op = convmm.ConvOperator(w, (3, 6, 5), padding=((1, 1), (0, 1)), padding_mode="circular")
    want = np.linalg.svd(op.todense(), compute_uv=False)
    np.testing.assert_allclose(op.singular_values(), want, rtol=1e-12, atol=1e-12)


def test_float32_circular_singular_values_stay_float32():
    w = np.random.default_rng(1).standard_normal((4, 4, 3, 3)).astype(np.float32)
    op = convmm.ConvOperator(w, (4, 16, 16), padding=1, padding_mode="circular")
    s = op.singular_values()
    assert s.dtype == np.float32 and s.shape == (4 * 256,)
    assert abs(float(s[0]) - op.norm(tol=1e-7, maxiter=10_000)) <= 1e-4 * float(s[0])


# --------------------------------------------------------------------------- norm
def _gaussian(size=13, sigma=2.0):
    """A (1, 1, size, size) Gaussian blur, normalised to sum 1."""
    t = np.arange(size) - (size - 1) / 2
    g = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * sigma ** 2))
    return (g / g.sum()).reshape(1, 1, size, size)


def _exact_norm(w, shape, **kw):
    """σ_max of the operator's dense matrix, built and decomposed in double precision."""
    return float(np.linalg.norm(convmm.ConvOperator(wide(w), shape, **kw).todense(), 2))


@pytest.mark.parametrize("seed", range(24))
def test_norm_matches_the_dense_svd(seed):
    """Every rank, padding mode, stride, dilation, groups, data format and dtype; sizes large
    enough that "auto" runs Lanczos (ARPACK) on about half of them."""
    nd, mode = 1 + seed % 3, MODES[seed % 4]
    _, cfg, _, w, shape = _case(700 + seed, nd=nd, modes=(mode,),
                                max_size={1: 48, 2: 10, 3: 5}[nd])
    kw = _conv_keywords(cfg)
    op = convmm.ConvOperator(w, shape, **kw)
    want = _exact_norm(w, shape, **kw)
    for tol in (1e-6, 1e-10):
        for got in (op.norm(tol=tol), op.norm(tol=tol, method="lanczos"),
                    op.H.norm(tol=tol), op.T.norm(tol=tol, method="lanczos")):
            assert isinstance(got, float)
            assert abs(got - want) <= tol * want, (got, want, tol, cfg)
    assert abs(op.norm(method="dense") - want) <= 1e-12 * want


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seed", range(4))
def test_norm_by_power_iteration(mode, seed):
    _, cfg, _, w, shape = _case(200 + 10 * seed + MODES.index(mode), modes=(mode,),
                                dtypes=("float64", "complex128"))
    op = convmm.ConvOperator(w, shape, **_conv_keywords(cfg))
    want = np.linalg.norm(reference.toeplitz(w, shape, **_conv_keywords(cfg)), 2)
    assert abs(op.norm(tol=1e-13, maxiter=100_000, method="power") - want) <= 1e-8 * want
    assert abs(op.H.norm(tol=1e-13, maxiter=100_000, method="power") - want) <= 1e-8 * want


@pytest.mark.parametrize("nd,size,kernel,dilation", [
    (1, (9,), (3,), (1,)), (1, (5,), (4,), (3,)),   # the last wraps taps
    (2, (5, 6), (3, 3), (1, 1)), (2, (4, 4), (3, 2), (1, 3)), (3, (4, 3, 5), (3, 1, 2), (1, 1, 2)),
])
@pytest.mark.parametrize("channels,groups", [((1, 1), 1), ((3, 2), 1), ((2, 5), 2), ((4, 4), 2)])
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
@pytest.mark.parametrize("dtype", ["float64", "complex128"])
def test_norm_of_a_circulant_operator_is_exact(nd, size, kernel, dilation, channels, groups,
                                               data_format, dtype):
    """Circular padding, stride 1, O = S: norm() is the FFT's largest singular value."""
    c_out, c_in = channels[0] * groups, channels[1] * groups
    rng = np.random.default_rng(sum(size) + c_out + 7 * c_in + nd)
    w = random_array(rng, (c_out, c_in // groups, *kernel), dtype)
    shape = (c_in, *size)
    if data_format == "channels_last":
        w = np.ascontiguousarray(np.moveaxis(np.moveaxis(w, 0, -1), 0, -2))
        shape = (*size, c_in)
    padding = [((d * (k - 1)) // 2, d * (k - 1) - (d * (k - 1)) // 2)
               for k, d in zip(kernel, dilation)]
    kw = dict(padding=padding, dilation=dilation, groups=groups, padding_mode="circular",
              data_format=data_format)
    op = convmm.ConvOperator(w, shape, **kw)
    assert op._circulant()
    top = float(op.singular_values()[0])
    assert abs(op.norm() - top) <= 1e-12 * top
    assert abs(op.norm(method="fft") - top) <= 1e-12 * top
    assert abs(op.H.norm() - top) <= 1e-12 * top
    want = _exact_norm(w, shape, **kw)
    assert abs(top - want) <= 1e-12 * want
    assert want <= op.norm_bound() <= want * (1 + 1e-9)


def test_norm_of_a_gaussian_blur():
    """The 13×13 Gaussian (σ = 2) on 128×128 with "same" padding: reflect padding clusters
    the top singular values (power iteration took 10 000 steps and fell short); circular
    padding is circulant, its norm exactly Ŵ(0) = 1."""
    w = _gaussian()
    op = convmm.ConvOperator(w, (1, 128, 128), padding="same", padding_mode="reflect")
    got = op.norm()                               # no warning: warnings are errors here
    true = 1.0078619909628                        # ARPACK (svds) to tol 1e-12
    assert true * (1 - 1e-6) <= got <= true * (1 + 1e-12)
    top = scipy.sparse.linalg.svds(op.aslinearoperator(), k=1, tol=1e-12,
                                   return_singular_vectors=False, rng=0)[0]
    assert abs(got - top) <= 1e-6 * top
    assert abs(op.norm(tol=1e-10) - top) <= 1e-10 * top
    assert top <= op.norm_bound() <= 2 * top      # ‖Pad‖₂ = √2 per axis for reflect
    assert top <= op.norm_bound(iterations=3) <= 1.03 * top

    op = convmm.ConvOperator(w, (1, 128, 128), padding="same", padding_mode="circular")
    assert abs(op.norm() - float(op.singular_values()[0])) <= 1e-12
    assert abs(op.norm() - 1.0) <= 1e-12
    assert 1.0 <= op.norm_bound() <= 1.0 + 1e-9


@pytest.mark.parametrize("seed", range(40))
def test_norm_bound_is_an_upper_bound(seed):
    """Every rank, padding mode, stride, dilation, groups, data format and dtype."""
    _, cfg, _, w, shape = _case(900 + seed, modes=(MODES[seed % 4],))
    kw = _conv_keywords(cfg)
    op = convmm.ConvOperator(w, shape, **kw)
    want = _exact_norm(w, shape, **kw)
    bound = op.norm_bound()
    assert isinstance(bound, float) and bound >= want
    sharper = op.norm_bound(iterations=2)
    assert want <= sharper <= bound
    assert op.H.norm_bound() == bound and op.T.norm_bound(iterations=2) == sharper


@pytest.mark.parametrize("mode", MODES)
def test_norm_bound_is_tight_for_zero_padding_and_circulant_operators(mode):
    """Stride 1, "same": within a few per cent for zero padding, exact where circulant, at most
    ∏‖Pad_axis‖₂ (2 in 2-d) off for reflect; iterations sharpen a non-negative kernel's."""
    rng = np.random.default_rng(MODES.index(mode))
    w = rng.standard_normal((4, 3, 3, 3))
    op = convmm.ConvOperator(w, (3, 24, 24), padding="same", padding_mode=mode)
    ratio = op.norm_bound() / op.norm(tol=1e-10)
    assert 1 <= ratio <= {"zeros": 1.05, "circular": 1 + 1e-9, "reflect": 2.0,
                          "replicate": 2.0, "symmetric": 2.0}[mode]
    blur = rng.random((1, 1, 5, 5))
    op = convmm.ConvOperator(blur, (1, 24, 24), padding="same", padding_mode=mode)
    assert 1 <= op.norm_bound(iterations=3) / op.norm(tol=1e-10) <= 1.06


def test_norm_warns_when_it_does_not_converge():
    op = convmm.ConvOperator(_gaussian(), (1, 48, 48), padding="same", padding_mode="reflect")
    want = op.norm(tol=1e-10)
    for method in ("lanczos", "power"):
        with pytest.warns(RuntimeWarning, match="converge"):
            got = op.norm(method=method, maxiter=1)
        assert 0 < got <= want * (1 + 1e-12)


def test_norm_in_every_namespace(xp):
    """Lanczos for NumPy and CuPy, power iteration elsewhere; the bound in any namespace."""
    rng = np.random.default_rng(11)
    w = random_array(rng, (4, 2, 3, 3), "complex128")
    kw = dict(padding=1, stride=(1, 2), padding_mode="replicate")
    op = convmm.ConvOperator(to_xp(xp, w), (2, 12, 10), **kw)
    assert min(op.shape) > 32                      # "auto" iterates
    want = _exact_norm(w, (2, 12, 10), **kw)
    assert abs(op.norm(tol=1e-8) - want) <= 1e-8 * want
    assert abs(op.norm(tol=1e-8, method="power") - want) <= 1e-8 * want
    assert abs(op.norm(method="dense") - want) <= 1e-12 * want
    assert want <= op.norm_bound(iterations=2) <= op.norm_bound()
    same = convmm.ConvOperator(w, (2, 12, 10), **kw).norm_bound()    # NumPy's
    assert abs(op.norm_bound() - same) <= 1e-12 * same
    circular = convmm.ConvOperator(to_xp(xp, w), (2, 8, 8), padding=1, padding_mode="circular")
    top = float(to_numpy(circular.singular_values())[0])
    assert abs(circular.norm() - top) <= 1e-12 * top


# --------------------------------------------------------------------------- bad input
def test_input_shape_must_match_the_weight():
    w = np.ones((2, 3, 3, 3))
    with pytest.raises(ValueError, match="input_shape has 4 channels"):
        convmm.toeplitz(w, (4, 8, 8))
    with pytest.raises(ValueError, match="input_shape must be one sample's shape"):
        convmm.toeplitz(w, (1, 3, 8, 8))
    with pytest.raises(ValueError, match="input_shape must be positive"):
        convmm.ConvOperator(w, (3, 0, 8))
    with pytest.raises(TypeError, match="input_shape must be a sequence"):
        convmm.toeplitz(w, 8)
    with pytest.raises(ValueError, match="larger than the padded input"):
        convmm.toeplitz(w, (3, 2, 8))
    with pytest.raises(ValueError, match="format must be one of"):
        convmm.toeplitz(w, (3, 8, 8), format="lil")
    with pytest.raises(TypeError, match="cast"):
        convmm.toeplitz(np.ones((2, 3, 3, 3), dtype=np.int64), (3, 8, 8))


def test_dense_over_the_limit_is_refused():
    with pytest.raises(ValueError, match="use format='csr'"):
        convmm.toeplitz(np.ones((1, 1, 3, 3), dtype=np.float32), (1, 200, 200), format="dense")
    op = convmm.ConvOperator(np.ones((1, 1, 3, 3), dtype=np.float32), (1, 200, 200))
    with pytest.raises(ValueError, match="use format='csr'"):
        op.todense()
    assert op.tosparse().nnz == 198 * 198 * 9   # the sparse matrix is fine


def test_singular_values_without_an_exact_method_on_a_large_operator():
    op = convmm.ConvOperator(np.ones((4, 4, 3, 3)), (4, 64, 64), padding=1)
    with pytest.raises(ValueError, match="no exact method"):
        op.singular_values()


def test_operator_vectors_are_checked():
    op = convmm.ConvOperator(np.ones((1, 1, 3)), (1, 8))
    with pytest.raises(ValueError, match=r"x must have shape \(8,\)"):
        op.matvec(np.ones(7))
    with pytest.raises(ValueError, match=r"X must have shape \(8, k\)"):
        op.matmat(np.ones((7, 2)))
    with pytest.raises(TypeError, match="cast"):
        op.matvec(np.ones(8, dtype=np.int64))
    with pytest.raises(ValueError, match="tol"):
        op.norm(tol=0)


def test_sparse_formats_need_numpy_or_cupy():
    torch = pytest.importorskip("torch")
    w = torch.ones((1, 1, 3), dtype=torch.float64)
    with pytest.raises(TypeError, match="format='dense'"):
        convmm.toeplitz(w, (1, 8))
    with pytest.raises(TypeError, match="aslinearoperator needs a NumPy or CuPy"):
        convmm.ConvOperator(w, (1, 8)).aslinearoperator()
    with pytest.raises(TypeError, match="must come from one array namespace"):
        convmm.ConvOperator(w, (1, 8)).matvec(np.ones(8))


def test_norm_arguments_are_checked():
    op = convmm.ConvOperator(np.ones((1, 1, 3)), (1, 8))
    with pytest.raises(ValueError, match="tol"):
        op.norm(tol=-1e-6)
    with pytest.raises(ValueError, match="tol"):
        op.norm(tol="1e-6")
    with pytest.raises(ValueError, match="maxiter"):
        op.norm(maxiter=0)
    with pytest.raises(TypeError, match="maxiter"):
        op.norm(maxiter=1.5)
    with pytest.raises(ValueError, match="method must be one of"):
        op.norm(method="svds")
    with pytest.raises(ValueError, match="method='fft' needs a circulant operator"):
        op.norm(method="fft")
    with pytest.raises(ValueError, match="iterations"):
        op.norm_bound(iterations=-1)
    with pytest.raises(TypeError, match="iterations"):
        op.norm_bound(iterations=2.0)
    big = convmm.ConvOperator(np.ones((4, 4, 3, 3)), (4, 64, 64), padding=1)
    with pytest.raises(ValueError, match="method='dense' is limited"):
        big.norm(method="dense")


def test_norm_on_host_namespaces_runs_lanczos():
    """PyTorch CPU tensors and array_api_strict arrays: Lanczos on NumPy copies of the
    vectors, not the power iteration, which stopped up to 2 % low on [0.03, −1.81]."""
    torch = pytest.importorskip("torch")
    import array_api_strict

    w = np.array([[[0.03, -1.81]]])
    exact = float(np.linalg.svd(convmm.ConvOperator(w, (1, 40), padding=1).todense(),
                                compute_uv=False)[0])
    for weight in (torch.from_numpy(w), array_api_strict.asarray(w)):
        op = convmm.ConvOperator(weight, (1, 40), padding=1)
        for method in ("auto", "lanczos"):
            assert abs(op.norm(method=method) - exact) <= 1e-6 * exact


def test_norm_of_a_zero_operator_is_zero():
    """Folded taps can cancel: [1, −1] circular on one sample is C = 0."""
    op = convmm.ConvOperator(np.array([[[1.0, -1.0]]]), (1, 1), padding=((1, 0),),
                             padding_mode="circular")
    assert not np.any(op.todense())
    for method in ("auto", "dense", "lanczos", "power"):
        assert op.norm(method=method) == 0.0
    assert op.norm_bound() == op.norm_bound(iterations=2) == 0.0
    zero = convmm.ConvOperator(np.zeros((2, 2, 3, 3)), (2, 16, 16), padding=1,
                               padding_mode="reflect")
    assert zero.norm() == zero.norm(method="power") == zero.norm_bound(iterations=1) == 0.0
