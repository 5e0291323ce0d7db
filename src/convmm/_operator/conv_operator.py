"""The convolution as a linear operator: ``ConvOperator``, matrix-free, with its spectrum.

For one sample, ``conv`` is the linear map ``y = C·x`` between the flattened
input (C_in·∏S values) and the flattened output (C_out·∏O values), in the data
format's order; ``conv_transpose`` with the same weight is ``Cᵀ``.  ``toeplitz``
builds C itself (sparse or dense); ``ConvOperator`` applies it and its
adjoints matrix-free, and knows its spectrum.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
from array_api_compat import device as device_of
from array_api_compat import is_cupy_array, is_numpy_array

from .._core.algorithms import conj
from .._core.params import as_int, choice
from .._core.validation import check_dtype, namespace, prepare_operator
from .._engines import dispatch, policy
from .toeplitz import TOEPLITZ_FORMATS, gather_taps, toeplitz_matrix

SVD_LIMIT_ENTRIES = 1 << 24
"""``singular_values`` falls back to a dense SVD only for matrices with at most this many entries."""


class ConvOperator:
    """The convolution on one flattened sample as a linear operator C (matrix-free).

    ``op.matvec(x) == conv(x.reshape(input_shape)).reshape(-1)``;
    ``op.rmatvec(y)`` applies Cᴴ (``conv_transpose`` with the conjugated
    weight).  ``op.T``, ``op.H`` and ``op.adjoint()`` are operators too, and
    ``op @ v`` applies the operator to a vector (N,) or to the columns of a
    matrix (N, k).  Vectors live in the weight's namespace and on its device.

    Parameters
    ----------
    weight : array
        ``conv``'s weight.
    input_shape : sequence of ints
        One sample's shape: (C_in, *S) channels-first, (*S, C_in) channels-last.
    stride, padding, dilation, groups, padding_mode, data_format, method
        As for ``conv``.

    Attributes
    ----------
    shape : (rows, cols), ``(∏ output_shape, ∏ input_shape)`` for C.
    dtype : the weight's dtype.
    input_shape, output_shape : one sample's shape on each side of C.

    Examples
    --------
    >>> import numpy as np, convmm
    >>> op = convmm.ConvOperator(np.array([[[5., 4]]]), (1, 6))
    >>> op.shape
    (5, 6)
    >>> op.matvec(np.array([1., 2, 4, 5, 3, 0]))
    array([13., 26., 40., 37., 15.])
    >>> op.rmatvec(np.ones(5))
    array([5., 9., 9., 9., 9., 4.])
    """

    def __init__(self, weight, input_shape, *, stride=1, padding=0, dilation=1, groups=1,
                 padding_mode="zeros", data_format="channels_first", method="auto"):
        self._call = prepare_operator(weight, input_shape, stride=stride, padding=padding,
                                      dilation=dilation, groups=groups,
                                      padding_mode=padding_mode, data_format=data_format,
                                      method=method)
        policy.check_method(self._call)
        self._keywords = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                              padding_mode=padding_mode, data_format=data_format)
        layout, geometry = self._call.layout, self._call.geometry
        _, in_per_group, _ = layout.weight_parts(self._call.weight.shape, geometry.nd)
        self._forward_shapes = (  # one sample's shape on each side of C
            tuple(layout.image_shape(1, in_per_group * self._call.groups, geometry.input_size)[1:]),
            tuple(layout.image_shape(1, self._call.out_channels, geometry.output_size)[1:]))
        self._adjoint = False     # this operator is Cᵀ (or Cᴴ) rather than C
        self._conjugate = False   # ... of the conjugated weight
        self._weights = {}

    # --- what it is -----------------------------------------------------------------

    @property
    def input_shape(self):
        """One sample's shape on the operator's input side."""
        return self._forward_shapes[1 if self._adjoint else 0]

    @property
    def output_shape(self):
        """One sample's shape on the operator's output side."""
        return self._forward_shapes[0 if self._adjoint else 1]

    @property
    def shape(self):
        return (math.prod(self.output_shape), math.prod(self.input_shape))

    @property
    def dtype(self):
        return self._call.weight.dtype

    @property
    def weight(self):
        return self._call.weight

    def __repr__(self):
        kind = {(False, False): "C", (True, False): "Cᵀ", (True, True): "Cᴴ",
                (False, True): "conj(C)"}[self._adjoint, self._conjugate]
        return (f"<ConvOperator {kind} {self.shape[0]}×{self.shape[1]} {self.dtype}: "
                f"{self._call.layout.name} input {self._forward_shapes[0]}, {self._keywords}>")

    # --- derived operators ---------------------------------------------------------------
    def _derived(self, adjoint, conjugate):
        other = object.__new__(ConvOperator)
        other.__dict__.update(self.__dict__)
        other._adjoint, other._conjugate = adjoint, conjugate
        return other

    @property
    def T(self):
        """The transpose (for real weights also the adjoint)."""
        return self._derived(not self._adjoint, self._conjugate)

    @property
    def H(self):
        """The conjugate transpose (adjoint)."""
        return self._derived(not self._adjoint, not self._conjugate)

    def adjoint(self):
        """The conjugate transpose, as ``op.H``."""
        return self.H

    # --- applying it -----------------------------------------------------------------------
    def _weight(self, dtype):
        """The weight in the computing dtype, conjugated for conj(C) and Cᴴ (cached)."""
        key = (dtype, self._conjugate)    # the cache is shared with the derived operators
        if key not in self._weights:
            xp, weight = self._call.xp, self._call.weight
            weight = weight if weight.dtype == dtype else xp.astype(weight, dtype)
            self._weights[key] = conj(xp, weight) if self._conjugate else weight
        return self._weights[key]

    def _apply(self, columns):
        """The operator applied to each row of ``columns`` (k, N) → (k, M)."""
        xp = self._call.xp
        k = columns.shape[0]
        images = xp.reshape(columns, (k, *self.input_shape))
        call = dataclasses.replace(self._call, x=images, weight=self._weight(columns.dtype))
        result = dispatch.conv_transpose(call) if self._adjoint else dispatch.conv(call)
        return xp.reshape(result, (k, self.shape[0]))

    def _operand(self, v, name, matrix):
        """v checked: in the weight's namespace, a float or complex dtype, N rows."""
        namespace(**{name: v, "weight": self._call.weight})
        xp = self._call.xp
        check_dtype(xp, v, name)
        n = self.shape[1]
        ok = (v.ndim == 2 and v.shape[0] == n) if matrix else (
            tuple(v.shape) in ((n,), (n, 1)))
        if not ok:
            wanted = f"({n}, k)" if matrix else f"({n},) or ({n}, 1)"
            raise ValueError(f"{name} must have shape {wanted} for an operator of shape "
                             f"{self.shape}, got {tuple(v.shape)}")
        dtype = xp.result_type(v.dtype, self.dtype)
        return v if v.dtype == dtype else xp.astype(v, dtype)

    def matvec(self, x):
        """C·x for x of shape (N,) (or (N, 1)), in the weight's namespace."""
        x = self._operand(x, "x", matrix=False)
        y = self._apply(self._call.xp.reshape(x, (1, -1)))
        return self._call.xp.reshape(y, (self.shape[0], *x.shape[1:]))

    def matmat(self, X):
        """C·X for X of shape (N, k)."""
        xp = self._call.xp
        X = self._operand(X, "X", matrix=True)
        return xp.permute_dims(self._apply(xp.permute_dims(X, (1, 0))), (1, 0))

    def rmatvec(self, y):
        """Cᴴ·y."""
        return self.H.matvec(y)

    def rmatmat(self, Y):
        """Cᴴ·Y."""
        return self.H.matmat(Y)

    def __matmul__(self, v):
        return self.matmat(v) if getattr(v, "ndim", 1) == 2 else self.matvec(v)

    # --- as matrices ------------------------------------------------------------------------
    def todense(self):
        """The operator as a dense array in the weight's namespace (see ``toeplitz``)."""
        xp = self._call.xp
        matrix = toeplitz_matrix(self._call, "dense")
        if self._adjoint:
            matrix = xp.permute_dims(matrix, (1, 0))
        return conj(xp, matrix) if self._conjugate else matrix

    def tosparse(self, format="csr"):
        """The operator as a ``scipy.sparse`` array (NumPy) or ``cupyx.scipy.sparse`` matrix (CuPy)."""
        format = choice(format, TOEPLITZ_FORMATS[:2], "format")
        matrix = toeplitz_matrix(self._call, "csr")
        if self._adjoint:
            matrix = matrix.T
        if self._conjugate:
            matrix = matrix.conj()
        return matrix.tocoo() if format == "coo" else matrix.tocsr()

    def aslinearoperator(self):
        """A ``scipy.sparse.linalg.LinearOperator`` (NumPy) or its ``cupyx`` twin (CuPy).

        Iterative solvers (``lsqr``, ``cg``, ``svds``) then run matrix-free.
        """
        if is_numpy_array(self._call.weight):
            from scipy.sparse.linalg import LinearOperator
        elif is_cupy_array(self._call.weight):
            from cupyx.scipy.sparse.linalg import LinearOperator
        else:
            raise TypeError(
                "aslinearoperator needs a NumPy or CuPy weight (scipy / cupyx LinearOperator), "
                f"got {type(self._call.weight).__module__}; use matvec and rmatvec directly"
            )
        return LinearOperator(self.shape, matvec=self.matvec, rmatvec=self.rmatvec,
                              matmat=self.matmat, rmatmat=self.rmatmat, dtype=self.dtype)

    # --- spectrum ---------------------------------------------------------------------------
    def norm(self, *, tol=1e-6, maxiter=10_000, seed=0):
        """The spectral norm ‖C‖₂ = σ_max, by power iteration on CᴴC.

        Iterates ``v ← CᴴC·v / ‖CᴴC·v‖`` from a random start (``seed``); the
        estimate ``σ_k = ‖C·v_k‖`` rises monotonically to σ_max, geometrically
        with some rate r (slowly where the top singular values cluster).  It
        stops when the error left, extrapolated from the last step,
        ``Δ_k·r/(1 − r)`` with ``r = Δ_k/Δ_{k−1}``, is at most ``tol·σ_k``;
        it warns if ``maxiter`` iterations were not enough.  Computed in double
        precision (float64 or complex128) for any weight dtype.
        """
        if not (isinstance(tol, (int, float)) and tol > 0):
            raise ValueError(f"tol must be a positive number, got {tol!r}")
        maxiter = as_int(maxiter, "maxiter")
        if maxiter < 1:
            raise ValueError(f"maxiter must be >= 1, got {maxiter}")
        xp = self._call.xp
        rng = np.random.default_rng(seed)
        start = rng.standard_normal(self.shape[1])
        double = xp.float64
        if xp.isdtype(self.dtype, "complex floating"):
            start, double = start + 1j * rng.standard_normal(self.shape[1]), xp.complex128
        # In double precision whatever the weight's: the steps Δ_k that decide when
        # to stop fall below float32's resolution long before σ has converged.
        v = xp.asarray(start, dtype=double, device=device_of(self._call.weight))
        v = xp.reshape(v / xp.linalg.vector_norm(v), (1, -1))
        adjoint = self.H
        sigma = previous = step = 0.0
        for _ in range(maxiter):
            u = self._apply(v)
            sigma = float(xp.linalg.vector_norm(u))
            w = adjoint._apply(u)
            length = xp.linalg.vector_norm(w)
            if float(length) == 0.0:
                return 0.0
            v = w / length
            last_step, step = step, sigma - previous
            if step <= 0:                       # rounding noise: σ_k cannot fall
                left = -step
            elif 0 < last_step and step < last_step:
                rate = step / last_step
                left = step * rate / (1 - rate)
            else:                               # not yet converging geometrically
                left = math.inf
            if left <= tol * sigma:
                return sigma
            previous = sigma
        warnings.warn(f"ConvOperator.norm: no convergence to tol={tol} in {maxiter} iterations",
                      RuntimeWarning, stacklevel=2)
        return sigma

    def _circulant(self):
        """Whether C is a full multi-channel circulant: circular padding, stride 1, O = S."""
        geometry = self._call.geometry
        return (self._call.mode == "circular" and all(s == 1 for s in geometry.stride)
                and geometry.output_size == geometry.input_size)

    def singular_values(self):
        """All min(M, N) singular values of C, largest first, in the weight's namespace.

        Exact and fast for a circular convolution with stride 1 and as many
        outputs as inputs (Sedghi, Gupta & Long, "The Singular Values of
        Convolutional Layers", ICLR 2019): C is block-circulant, the Fourier
        transform over the spatial axes block-diagonalises it, and its singular
        values are those of the C_out×C_in transfer matrices
        ``Ŵ(f)[o, c] = Σ_t W[o, c, t]·exp(∓2πi f·t·d / S)`` at every frequency f
        (per group).  Otherwise the dense SVD, where C has at most
        ``SVD_LIMIT_ENTRIES`` entries; a ValueError beyond that.
        """
        xp = self._call.xp
        if self._circulant():
            values = _circulant_singular_values(self._call)
        else:
            rows, cols = self.shape
            if rows * cols > SVD_LIMIT_ENTRIES:
                raise ValueError(
                    f"no exact method for the singular values of this {rows}×{cols} operator: "
                    "the FFT method needs padding_mode='circular', stride 1 and as many outputs "
                    f"as inputs, and a dense SVD is limited to {SVD_LIMIT_ENTRIES} entries; "
                    "use op.norm() for the largest, or scipy.sparse.linalg.svds("
                    "op.aslinearoperator(), k=...) for a few"
                )
            values = xp.linalg.svdvals(toeplitz_matrix(self._call, "dense"))
        return xp.sort(values, descending=True)


def _circulant_singular_values(call):
    xp, geometry, layout, groups = call.xp, call.geometry, call.layout, call.groups
    w = layout.weight_taps(xp, call.weight)
    out_channels, in_per_group, n_taps = w.shape
    size = geometry.input_size
    # Tap t sits at t·d mod S on the periodic grid; taps that wrap onto one cell add up.
    cells = np.zeros(n_taps, dtype=np.intp)
    tap_index = np.unravel_index(np.arange(n_taps), geometry.kernel_size)
    for along, d, s in zip(tap_index, geometry.dilation, size):
        cells = cells * s + (along * d) % s
    order = np.argsort(cells, kind="stable")
    rank = np.arange(n_taps) - np.searchsorted(cells[order], cells[order])
    plan = np.full((int(rank.max()) + 1, math.prod(size)), n_taps, dtype=np.int32)
    plan[rank, cells[order]] = order
    grid = gather_taps(xp, w, plan)
    complex_dtype = xp.complex64 if w.dtype in (xp.float32, xp.complex64) else xp.complex128
    grid = xp.reshape(xp.astype(grid, complex_dtype),
                      (groups, out_channels // groups, in_per_group, *size))
    nd = geometry.nd
    transfer = xp.fft.fftn(grid, axes=tuple(range(3, 3 + nd)))
    transfer = xp.permute_dims(transfer, (*range(3, 3 + nd), 0, 1, 2))
    return xp.reshape(xp.linalg.svdvals(transfer), (-1,))
