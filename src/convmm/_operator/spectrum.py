"""The spectrum of a convolution operator: its norm (five methods), a certified bound on
it and its singular values, for ``ConvOperator``, whose methods of the same names call
these and carry the public documentation.

The circulant case is exact (Sedghi, Gupta & Long, "The Singular Values of Convolutional
Layers", ICLR 2019): the per-frequency transfer matrices ``transfer_matrices`` hold every
singular value.  Elsewhere a dense SVD for small operators, Lanczos or power iteration on
the Gram operator for large ones, and ``norm_bound``'s bound from the periodic grid.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
from array_api_compat import device as device_of
from array_api_compat import is_cupy_array, is_numpy_array

from .._core.index_tables import axis_source, gather_index
from .._core.params import as_int, choice
from .._core.validation import library
from .toeplitz import gather_taps, toeplitz_matrix

SVD_LIMIT_ENTRIES = 1 << 24
"""``singular_values`` falls back to a dense SVD only for matrices with at most this many entries."""

NORM_METHODS = ("auto", "fft", "dense", "lanczos", "power")
"""The methods of ``ConvOperator.norm``."""

NORM_DENSE_SIDE = 32
"""``norm(method="auto")`` takes a dense SVD where the operator's smaller side is at most this."""


def norm(op, tol, maxiter, seed, method):
    """``ConvOperator.norm`` (which documents it): σ_max of ``op`` by ``method``."""
    if not (isinstance(tol, (int, float)) and tol > 0):
        raise ValueError(f"tol must be a positive number, got {tol!r}")
    maxiter = as_int(maxiter, "maxiter")
    if maxiter < 1:
        raise ValueError(f"maxiter must be >= 1, got {maxiter}")
    method = choice(method, NORM_METHODS, "method")
    weight = op._call.weight
    scipy_like = is_numpy_array(weight) or is_cupy_array(weight)
    if method == "auto":
        if is_circulant(op):
            method = "fft"
        elif (min(op.shape) <= NORM_DENSE_SIDE
              and op.shape[0] * op.shape[1] <= SVD_LIMIT_ENTRIES):
            method = "dense"
        else:
            method = "lanczos" if scipy_like or _on_host(op) else "power"
    if method == "fft":
        if not is_circulant(op):
            raise ValueError(
                "method='fft' needs a circulant operator (padding_mode='circular', "
                "stride 1 and as many outputs as inputs); use method='auto'")
        return largest_transfer_singular_value(op._call, op._call.geometry.input_size)
    if method == "dense":
        return _dense_norm(op)
    if method == "lanczos":
        if not (scipy_like or _on_host(op)):
            raise TypeError(
                "method='lanczos' needs a NumPy or CuPy weight (scipy / cupyx eigsh), "
                f"got {library(weight)}; use method='power'")
        return _lanczos_norm(op, tol, maxiter, seed)
    sigma, converged = _power_norm(op, tol, maxiter, seed)
    if not converged:
        warnings.warn(f"ConvOperator.norm: no convergence to tol={tol} in {maxiter} "
                      "power iterations", RuntimeWarning, stacklevel=3)
    return sigma


def norm_bound(op, iterations):
    """``ConvOperator.norm_bound`` (which documents it and derives the bound)."""
    iterations = as_int(iterations, "iterations")
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    call = op._call
    xp, geometry, mode = call.xp, call.geometry, call.padding_mode
    _, in_per_group, _ = call.layout.weight_parts(call.weight.shape, geometry.nd)
    out_per_group = call.out_channels // call.groups
    real_dtype = _widest(xp, False)
    eps = float(xp.finfo(real_dtype).eps)      # 2⁻⁵², or 2⁻²³ where float64 is missing
    pad_factor = 1
    for size, (before, after) in zip(geometry.input_size, geometry.padding):
        source = axis_source(size, before, after, mode)
        pad_factor *= int(np.bincount(source[source >= 0], minlength=size).max())
    bounds = [(pad_factor, geometry.padded_size)]
    if mode == "circular":
        repeats = 1
        for size, (before, _), stride, out in zip(geometry.input_size, geometry.padding,
                                                  geometry.stride, geometry.output_size):
            rows = (np.arange(out) * stride - before) % size
            repeats *= int(np.bincount(rows, minlength=size).max())
        bounds.append((repeats, geometry.input_size))
    best = math.inf
    for factor, grid in bounds:
        points = math.prod(grid)
        rank = min(in_per_group, out_per_group)
        slack = 8 * eps * (1 + math.log2(points)) * math.sqrt(points * rank)
        sigma = largest_transfer_singular_value(call, grid)
        best = min(best, sigma * math.sqrt(factor) * (1 + slack))
    if iterations == 0 or best == 0.0:
        return best
    # Collatz–Wielandt on BᵀB, B the convolution with |W| (real, non-negative).
    moduli = op._derived(False, False)
    moduli._call = dataclasses.replace(call, weight=xp.abs(op._weight(_double(op))))
    moduli._weights = {}
    moduli_t = moduli.T
    q = xp.ones((1, moduli.shape[1]), dtype=real_dtype, device=device_of(call.weight))
    zero = xp.zeros((), dtype=real_dtype, device=device_of(call.weight))
    lam = math.inf
    for _ in range(iterations):
        gq = moduli_t._apply(moduli._apply(q))
        # q_j = 0 only where column j of B is zero (then (BᵀB·q)_j = 0 too);
        # were it to underflow, the ratio is taken as infinite: still a bound.
        ratio = xp.where(q > 0, gq / xp.where(q > 0, q, 1.0),
                         xp.where(gq > 0, math.inf, zero))
        lam = min(lam, float(xp.max(ratio)))
        top = float(xp.max(gq))
        if top == 0.0:
            return 0.0
        q = gq / top
    # Sums of non-negative terms, each within γ_K ≈ K·ε of exact: K = T·C_in/groups
    # per entry of B·q, (most (position, tap) pairs reading one sample)·C_out/groups
    # per entry of Bᵀ·u.
    table = gather_index(geometry, mode)
    pixels = math.prod(geometry.input_size)
    reads = int(np.bincount(table.ravel(), minlength=pixels + 1)[:pixels].max())
    terms = geometry.n_taps * in_per_group + reads * out_per_group + 4
    return min(best, math.sqrt(lam) * (1 + 2 * terms * eps))


def singular_values(op):
    """``ConvOperator.singular_values`` (which documents it)."""
    xp = op._call.xp
    if is_circulant(op):
        values = circulant_singular_values(op._call)
    else:
        rows, cols = op.shape
        if rows * cols > SVD_LIMIT_ENTRIES:
            raise ValueError(
                f"no exact method for the singular values of this {rows}×{cols} operator: "
                "the FFT method needs padding_mode='circular', stride 1 and as many outputs "
                f"as inputs, and a dense SVD is limited to {SVD_LIMIT_ENTRIES} entries; "
                "use op.norm() for the largest, or scipy.sparse.linalg.svds("
                "op.aslinearoperator(), k=...) for a few"
            )
        values = xp.linalg.svdvals(toeplitz_matrix(op._call, "dense"))
    return xp.sort(values, descending=True)


def is_circulant(op):
    """Whether C is a full multi-channel circulant: circular padding, stride 1, O = S."""
    geometry = op._call.geometry
    return (op._call.padding_mode == "circular" and all(s == 1 for s in geometry.stride)
            and geometry.output_size == geometry.input_size)


def _smaller_side(op):
    """(A, Aᴴ) with A = C or Cᴴ such that the Gram operator AᴴA is the smaller one."""
    side = op if op.shape[1] <= op.shape[0] else op.H
    return side, side.H


def _double(op):
    """The double-precision dtype the spectrum is computed in (``_widest``)."""
    xp = op._call.xp
    return _widest(xp, xp.isdtype(op.dtype, "complex floating"))


def _start(op, n, seed):
    """A random unit start vector (1, n), double precision, in the weight's namespace."""
    xp = op._call.xp
    rng = np.random.default_rng(seed)
    start = rng.standard_normal(n)
    if xp.isdtype(op.dtype, "complex floating"):
        start = start + 1j * rng.standard_normal(n)
    v = xp.asarray(start, dtype=_double(op), device=device_of(op._call.weight))
    return xp.reshape(v / xp.linalg.vector_norm(v), (1, -1))


def _dense_norm(op, limit=True):
    """σ_max by a dense SVD of C applied to the identity on its smaller side."""
    xp = op._call.xp
    side, _ = _smaller_side(op)
    n = side.shape[1]
    if limit and n * side.shape[0] > SVD_LIMIT_ENTRIES:
        raise ValueError(
            f"method='dense' is limited to operators of at most {SVD_LIMIT_ENTRIES} entries, "
            f"this one is {op.shape[0]}×{op.shape[1]}; use method='auto'")
    eye = xp.eye(n, dtype=_double(op), device=device_of(op._call.weight))
    rows = side._apply(eye)       # (n, m): row i is A·e_i, so this is Aᵀ
    return float(xp.max(xp.linalg.svdvals(rows)))


def _on_host(op):
    """Whether the weight's arrays live in host memory NumPy can view (DLPack): then
    ARPACK runs on NumPy copies of the Lanczos vectors (PyTorch CPU tensors,
    array_api_strict)."""
    try:
        np.from_dlpack(op._call.xp.zeros(1, dtype=op._call.weight.dtype,
                                           device=device_of(op._call.weight)))
    except Exception:           # no DLPack, or device memory
        return False
    return True


def _lanczos_norm(op, tol, maxiter, seed):
    """σ_max = √λ_max(AᴴA) by Lanczos (ARPACK for NumPy, and for other namespaces in
    host memory through NumPy copies of the vectors; cupyx for CuPy)."""
    xp, weight = op._call.xp, op._call.weight
    side, adjoint = _smaller_side(op)
    n = side.shape[1]
    if n <= 8:                    # the eigensolvers need a few more dimensions than pairs
        return _dense_norm(op, limit=False)    # at most 8 vectors
    double = _double(op)

    def gram(v):
        return xp.reshape(adjoint._apply(side._apply(xp.reshape(v, (1, -1)))), v.shape)

    # One power step from the random start: ‖AᴴA·v₀‖ ≤ λ_max is a lower bound
    # (CuPy's tolerance is absolute), and a zero here means A = 0 (ARPACK
    # refuses a zero start vector).
    start = gram(_start(op, n, seed))
    lower = float(xp.linalg.vector_norm(start))
    if lower == 0.0:
        return 0.0
    start = xp.reshape(start / lower, (-1,))
    if not is_cupy_array(weight):
        from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

        if not is_numpy_array(weight):      # on the host: NumPy copies of the vectors
            device, host_gram = device_of(weight), gram

            def gram(v):
                return np.from_dlpack(host_gram(xp.asarray(v, device=device)))

            start = np.from_dlpack(start)
            double = np.complex128 if xp.isdtype(double, "complex floating") else np.float64
        operator = LinearOperator((n, n), matvec=gram, dtype=double)
        try:
            top = eigsh(operator, k=1, which="LA", v0=start, tol=tol, maxiter=maxiter,
                        return_eigenvectors=False)
        except ArpackNoConvergence as error:
            sigma, _ = _power_norm(op, tol, maxiter, seed)
            if len(error.eigenvalues):
                sigma = max(sigma, math.sqrt(max(float(np.max(error.eigenvalues.real)), 0.0)))
            warnings.warn(f"ConvOperator.norm: Lanczos (ARPACK) did not converge to "
                          f"tol={tol} in maxiter={maxiter} restarts; returning the best "
                          "estimate, which may be low", RuntimeWarning, stacklevel=4)
            return sigma
        return math.sqrt(max(float(np.max(top.real)), 0.0))
    from cupyx.scipy.sparse.linalg import LinearOperator, eigsh

    operator = LinearOperator((n, n), matvec=gram, dtype=double)
    values, vectors = eigsh(operator, k=1, which="LA", v0=xp.asarray(start, copy=True),
                            tol=tol * lower, maxiter=maxiter, return_eigenvectors=True)
    top = float(values[-1].real)
    x = vectors[:, -1]
    residual = float(xp.linalg.vector_norm(gram(x) - top * x))
    if residual > tol * max(top, lower):
        warnings.warn(f"ConvOperator.norm: Lanczos (cupyx) did not converge to tol={tol} "
                      f"in maxiter={maxiter} steps; returning the best estimate, which "
                      "may be low", RuntimeWarning, stacklevel=4)
    return math.sqrt(max(top, 0.0))


def _power_norm(op, tol, maxiter, seed):
    """(σ estimate, converged) by power iteration on CᴴC in the weight's namespace."""
    xp = op._call.xp
    # In double precision whatever the weight's: the steps Δ_k that decide when
    # to stop fall below float32's resolution long before σ has converged.
    v = _start(op, op.shape[1], seed)
    adjoint = op.H
    sigma = previous = step = 0.0
    for _ in range(maxiter):
        w = adjoint._apply(op._apply(v))
        length = float(xp.linalg.vector_norm(w))
        if length == 0.0:
            return 0.0, True
        v = w / length
        # σ_k = √‖CᴴC·v_k‖ (‖v_k‖ = 1): ‖C·v_k‖ ≤ σ_k ≤ ‖C·v_{k+1}‖ ≤ σ_max.
        sigma = math.sqrt(length)
        last_step, step = step, sigma - previous
        if step <= 0:                       # rounding noise: σ_k cannot fall
            left = -step
        elif 0 < last_step and step < last_step:
            rate = step / last_step
            left = step * rate / (1 - rate)
        else:                               # not yet converging geometrically
            left = math.inf
        # Half of tol: the extrapolation runs short where the rate still rises.
        if left <= tol * sigma / 2:
            return sigma, True
        previous = sigma
    return sigma, False


def transfer_matrices(call, size, dtype):
    """The per-group transfer matrices of the circular convolution on the periodic grid ``size``.

    ``Ŵ(f)[g, o, c] = Σ_t W[g·O_g + o, c, t]·exp(−2πi Σ_i f_i·(t_i·d_i mod S_i) / S_i)``:
    an array ``(*frequencies, groups, C_out/groups, C_in/groups)``, complex.  Taps
    that wrap onto one cell of the grid add up.  ``dtype`` is the dtype the
    weight is cast to first: complex gives every frequency (``fftn``); real
    (for a real weight only) the half spectrum of ``rfftn``, which holds the
    same set of singular values since Ŵ(−f) = conj Ŵ(f), not their multiplicities.
    """
    xp, geometry, layout, groups = call.xp, call.geometry, call.layout, call.groups
    w = layout.weight_taps(xp, call.weight)
    out_channels, in_per_group, n_taps = w.shape
    # Tap t sits at t·d mod S on the periodic grid; taps that wrap onto one cell add up.
    cells = np.zeros(n_taps, dtype=np.intp)
    tap_index = np.unravel_index(np.arange(n_taps), geometry.kernel_size)
    for along, d, s in zip(tap_index, geometry.dilation, size):
        cells = cells * s + (along * d) % s
    order = np.argsort(cells, kind="stable")
    rank = np.arange(n_taps) - np.searchsorted(cells[order], cells[order])
    table = np.full((int(rank.max()) + 1, math.prod(size)), n_taps, dtype=np.int32)
    table[rank, cells[order]] = order
    grid = gather_taps(xp, xp.astype(w, dtype), table)
    grid = xp.reshape(grid, (groups, out_channels // groups, in_per_group, *size))
    nd = geometry.nd
    axes = tuple(range(3, 3 + nd))
    if xp.isdtype(dtype, "real floating"):
        # Ŵ(−f) = conj Ŵ(f) for a real weight: half the frequencies carry every singular value.
        transfer = xp.fft.rfftn(grid, axes=axes)
    else:
        transfer = xp.fft.fftn(grid, axes=axes)
    return xp.permute_dims(transfer, (*axes, 0, 1, 2))


def _widest(xp, complex_):
    """float64 (complex128 for ``complex_``) where the namespace has it, else float32
    (complex64): JAX has no float64 unless ``jax_enable_x64`` is set."""
    kind, wanted, fallback = (("complex floating", "complex128", "complex64") if complex_
                              else ("real floating", "float64", "float32"))
    info = getattr(xp, "__array_namespace_info__", None)
    if info is None:
        return getattr(xp, wanted)
    available = info().dtypes(kind=kind)
    return available[wanted] if wanted in available else available[fallback]


def circulant_singular_values(call):
    xp, w = call.xp, call.weight
    complex_dtype = xp.complex64 if w.dtype in (xp.float32, xp.complex64) else xp.complex128
    transfer = transfer_matrices(call, call.geometry.input_size, complex_dtype)
    return xp.reshape(xp.linalg.svdvals(transfer), (-1,))


def largest_transfer_singular_value(call, size):
    """max_f σ_max(Ŵ(f)) over the periodic grid ``size``, in double precision, as a float:
    the spectral norm of the circular convolution on that grid."""
    xp = call.xp
    real = not xp.isdtype(call.weight.dtype, "complex floating")
    transfer = transfer_matrices(call, size, _widest(xp, not real))
    return float(xp.max(xp.linalg.svdvals(transfer)))
