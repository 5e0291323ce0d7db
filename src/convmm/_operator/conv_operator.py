"""The convolution as a linear operator: ``ConvOperator``, matrix-free, with its spectrum.

For one sample, ``conv`` is the linear map ``y = C·x`` between the flattened
input (C_in·∏S values) and the flattened output (C_out·∏O values), in the data
format's order; ``conv_transpose`` with the same weight is ``Cᵀ``.  ``toeplitz``
builds C itself (sparse or dense); ``ConvOperator`` applies it and its
adjoints matrix-free, and gives its spectrum, computed in ``spectrum``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Literal

import array_api_compat
import numpy as np
from array_api_compat import is_cupy_array, is_numpy_array

from .._core.algorithms import conj
from .._core.params import choice
from .._core.validation import check_dtype, library, prepare_operator
from .._chunked import arrays as chunked_arrays, is_dask
from .._chunked import maps as chunked_maps
from .._engines import eager, policy
from .._core.types import (Array, DataFormat, Int, IntOrTuple, Method, Padding, PaddingMode,
                          Shape)
from . import spectrum
from .toeplitz import TOEPLITZ_FORMATS, toeplitz_matrix

class ConvOperator:
    """The convolution on one flattened sample as a linear operator C (matrix-free).

    ``op.matvec(x) == conv(x.reshape(input_shape), weight, **keywords).reshape(-1)``;
    ``op.rmatvec(y)`` applies Cᴴ (``conv_transpose`` with the conjugated
    weight).  ``op.T``, ``op.H`` and ``op.adjoint()`` are operators too, and
    ``op @ v`` applies the operator to a vector (N,) or to the columns of a
    matrix (N, k).  Vectors live in the weight's namespace and on its device.

    Parameters
    ----------
    weight : array
        ``conv``'s weight.
    input_shape : sequence of ints
        One sample's shape: ``(C_in, *S)`` channels-first, ``(*S, C_in)`` channels-last.
    stride, padding, dilation, groups, padding_mode, data_format, method
        As for ``conv``.

    Attributes
    ----------
    shape : tuple of int
        (rows, cols), ``(∏ output_shape, ∏ input_shape)`` for C.
    dtype : dtype
        The weight's dtype.
    input_shape, output_shape : tuple of int
        One sample's shape on each side of the operator.
    weight : array
        The weight, as given.
    T, H : ConvOperator
        The transpose and the conjugate transpose (adjoint).

    Raises
    ------
    TypeError, ValueError
        As ``toeplitz`` for the weight, ``input_shape`` and keywords; a
        ValueError for a ``method`` that cannot run on the weight's namespace; a
        TypeError for a Dask weight (the operator applies to Dask vectors and
        matrices, but holds its weight in memory).

    See Also
    --------
    toeplitz : C as a sparse or dense matrix.

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

    def __init__(self, weight: Array, input_shape: Sequence[int], *, stride: IntOrTuple = 1,
                 padding: Padding = 0, dilation: IntOrTuple = 1, groups: Int = 1,
                 padding_mode: PaddingMode = "zeros", data_format: DataFormat = "channels_first",
                 method: Method = "auto") -> None:
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
        self._weights: dict[tuple[Any, bool], Array] = {}

    # --- what it is -----------------------------------------------------------------

    @property
    def input_shape(self) -> Shape:
        """One sample's shape on the operator's input side."""
        return self._forward_shapes[1 if self._adjoint else 0]

    @property
    def output_shape(self) -> Shape:
        """One sample's shape on the operator's output side."""
        return self._forward_shapes[0 if self._adjoint else 1]

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols): ``(∏ output_shape, ∏ input_shape)``."""
        return (math.prod(self.output_shape), math.prod(self.input_shape))

    @property
    def dtype(self) -> Any:
        """The weight's dtype (results are promoted with the vector's)."""
        return self._call.weight.dtype

    @property
    def weight(self) -> Array:
        """The forward convolution's weight, as given (never conjugated or transposed)."""
        return self._call.weight

    def __repr__(self) -> str:
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
    def T(self) -> ConvOperator:
        """The transpose (for real weights also the adjoint)."""
        return self._derived(not self._adjoint, self._conjugate)

    @property
    def H(self) -> ConvOperator:
        """The conjugate transpose (adjoint)."""
        return self._derived(not self._adjoint, not self._conjugate)

    def adjoint(self) -> ConvOperator:
        """The conjugate transpose, as ``op.H`` (``scipy.sparse.linalg.LinearOperator``'s name).

        Returns
        -------
        ConvOperator
            Cᴴ, sharing this operator's weight.

        Examples
        --------
        >>> import numpy as np, convmm
        >>> convmm.ConvOperator(np.array([[[5., 4]]]), (1, 6)).adjoint().shape
        (6, 5)
        """
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

    def _namespace(self, v):
        """The namespace of v's own shape operations: Dask's for a Dask array, else the
        weight's."""
        return array_api_compat.array_namespace(v) if is_dask(v) else self._call.xp

    def _apply(self, columns):
        """The operator applied to each row of ``columns`` (k, N) → (k, M)."""
        xp = self._namespace(columns)
        k = columns.shape[0]
        if k == 0 and is_dask(columns):  # Dask reshapes no empty array of several chunks
            return xp.zeros((0, self.shape[0]), dtype=columns.dtype)
        images = xp.reshape(columns, (k, *self.input_shape))
        weight = self._weight(columns.dtype)
        if is_dask(columns):            # block by block, each by the engine
            executor, call = chunked_maps, self._call
        else:
            executor, call = eager, dataclasses.replace(self._call, x=images, weight=weight)
        apply = executor.adjoint if self._adjoint else executor.forward
        return xp.reshape(apply(call, images, weight, main=True), (k, self.shape[0]))

    def _operand(self, v, name, matrix):
        """v checked: in the weight's namespace, a float or complex dtype, N rows."""
        chunked_arrays.checked_namespace(**{name: v, "weight": self._call.weight})
        xp = self._call.xp
        check_dtype(xp, chunked_arrays.stand_in(v, name), name)
        n = self.shape[1]
        ok = (v.ndim == 2 and v.shape[0] == n) if matrix else (
            tuple(v.shape) in ((n,), (n, 1)))
        if not ok:
            wanted = f"({n}, k)" if matrix else f"({n},) or ({n}, 1)"
            raise ValueError(f"{name} must have shape {wanted} for an operator of shape "
                             f"{self.shape}, got {tuple(v.shape)}")
        dtype = xp.result_type(v.dtype, self.dtype)
        return v if v.dtype == dtype else self._namespace(v).astype(v, dtype)

    def matvec(self, x: Array) -> Array:
        """C·x: the convolution of one flattened sample.

        Parameters
        ----------
        x : array
            Shape (N,) or (N, 1) with N = ``shape[1]``, in the weight's
            namespace; a float or complex dtype (promoted with the weight's).

        Returns
        -------
        array
            Shape (M,) or (M, 1) with M = ``shape[0]``.

        Raises
        ------
        TypeError
            x in another namespace than the weight, or an integer or bool dtype.
        ValueError
            x of another shape.

        Examples
        --------
        >>> import numpy as np, convmm
        >>> convmm.ConvOperator(np.array([[[5., 4]]]), (1, 4)).matvec(np.array([1., 2, 4, 5]))
        array([13., 26., 40.])
        """
        x = self._operand(x, "x", matrix=False)
        xp = self._namespace(x)
        y = self._apply(xp.reshape(x, (1, -1)))
        return xp.reshape(y, (self.shape[0], *x.shape[1:]))

    def matmat(self, X: Array) -> Array:
        """C·X: ``matvec`` on each of X's k columns, as one batch of k samples.

        Parameters
        ----------
        X : array
            Shape (N, k), N = ``shape[1]``, in the weight's namespace.

        Returns
        -------
        array
            Shape (M, k), M = ``shape[0]``.

        Raises
        ------
        TypeError, ValueError
            As ``matvec``.

        Examples
        --------
        >>> import numpy as np, convmm
        >>> op = convmm.ConvOperator(np.array([[[1., -1]]]), (1, 3))
        >>> op.matmat(np.array([[1., 0], [2, 0], [4, 1]]))
        array([[-1.,  0.],
               [-2., -1.]])
        """
        X = self._operand(X, "X", matrix=True)
        xp = self._namespace(X)
        return xp.permute_dims(self._apply(xp.permute_dims(X, (1, 0))), (1, 0))

    def rmatvec(self, y: Array) -> Array:
        """Cᴴ·y: the adjoint (``conv_transpose`` with the conjugated weight) of one sample.

        Parameters
        ----------
        y : array
            Shape (M,) or (M, 1), M = ``shape[0]``, in the weight's namespace.

        Returns
        -------
        array
            Shape (N,) or (N, 1), N = ``shape[1]``.

        Raises
        ------
        TypeError, ValueError
            As ``matvec``.

        Examples
        --------
        >>> import numpy as np, convmm
        >>> convmm.ConvOperator(np.array([[[5., 4]]]), (1, 4)).rmatvec(np.ones(3))
        array([5., 9., 9., 4.])
        """
        return self.H.matvec(y)

    def rmatmat(self, Y: Array) -> Array:
        """Cᴴ·Y: ``rmatvec`` on each of Y's k columns.

        Parameters
        ----------
        Y : array
            Shape (M, k), M = ``shape[0]``, in the weight's namespace.

        Returns
        -------
        array
            Shape (N, k), N = ``shape[1]``.

        Raises
        ------
        TypeError, ValueError
            As ``matvec``.

        Examples
        --------
        >>> import numpy as np, convmm
        >>> convmm.ConvOperator(np.array([[[1., -1]]]), (1, 3)).rmatmat(np.eye(2))
        array([[ 1.,  0.],
               [-1.,  1.],
               [ 0., -1.]])
        """
        return self.H.matmat(Y)

    def __matmul__(self, v: Array) -> Array:
        return self.matmat(v) if getattr(v, "ndim", 1) == 2 else self.matvec(v)

    # --- as matrices ------------------------------------------------------------------------
    def todense(self) -> Array:
        """The operator as a dense matrix (see ``toeplitz``).

        Returns
        -------
        array
            ``shape``, the weight's dtype, namespace and device.

        Raises
        ------
        ValueError
            Over ``DENSE_LIMIT_BYTES`` (1 GiB); use ``tosparse``.

        Examples
        --------
        >>> import numpy as np, convmm
        >>> convmm.ConvOperator(np.array([[[5., 4]]]), (1, 3)).T.todense()
        array([[5., 0.],
               [4., 5.],
               [0., 4.]])
        """
        xp = self._call.xp
        matrix = toeplitz_matrix(self._call, "dense")
        if self._adjoint:
            matrix = xp.permute_dims(matrix, (1, 0))
        return conj(xp, matrix) if self._conjugate else matrix

    def tosparse(self, format: Literal["csr", "coo"] = "csr") -> Any:
        """The operator as a sparse matrix (see ``toeplitz``).

        Parameters
        ----------
        format : "csr" or "coo"
            Compressed sparse rows, or coordinates.

        Returns
        -------
        scipy.sparse array or cupyx.scipy.sparse matrix
            ``shape``, the weight's dtype: SciPy's for a NumPy weight, cupyx's
            for a CuPy weight.

        Raises
        ------
        ValueError
            ``format`` unknown.
        TypeError
            A weight of another namespace (use ``todense``).

        Examples
        --------
        >>> import numpy as np, convmm
        >>> convmm.ConvOperator(np.array([[[5., 4]]]), (1, 6)).tosparse().nnz
        10
        """
        format = choice(format, TOEPLITZ_FORMATS[:2], "format")
        matrix = toeplitz_matrix(self._call, "csr")
        if self._adjoint:
            matrix = matrix.T
        if self._conjugate:
            matrix = matrix.conj()
        return matrix.tocoo() if format == "coo" else matrix.tocsr()

    def aslinearoperator(self) -> Any:
        """A ``scipy.sparse.linalg.LinearOperator`` (NumPy) or its ``cupyx`` twin (CuPy).

        Iterative solvers (``lsqr``, ``cg``, ``svds``) then run matrix-free.

        Returns
        -------
        LinearOperator
            With this operator's shape, dtype, matvec, rmatvec, matmat and rmatmat.

        Raises
        ------
        TypeError
            A weight that is neither NumPy nor CuPy.

        Examples
        --------
        >>> import numpy as np, scipy.sparse.linalg, convmm
        >>> op = convmm.ConvOperator(np.array([[[1., 1]]]), (1, 3), padding=[(0, 1)])
        >>> scipy.sparse.linalg.lsqr(op.aslinearoperator(), np.array([3., 5, 3]))[0]
        array([1., 2., 3.])
        """
        if is_numpy_array(self._call.weight):
            from scipy.sparse.linalg import LinearOperator
        elif is_cupy_array(self._call.weight):
            from cupyx.scipy.sparse.linalg import LinearOperator
        else:
            raise TypeError(
                "aslinearoperator needs a NumPy or CuPy weight (scipy / cupyx LinearOperator), "
                f"got {library(self._call.weight)}; use matvec and rmatvec directly"
            )
        return LinearOperator(self.shape, matvec=self.matvec, rmatvec=self.rmatvec,
                              matmat=self.matmat, rmatmat=self.rmatmat, dtype=self.dtype)

    # --- spectrum ---------------------------------------------------------------------------
    def norm(self, *, tol: float = 1e-6, maxiter: Int = 10_000,
             seed: int | np.random.Generator = 0,
             method: Literal["auto", "fft", "dense", "lanczos", "power"] = "auto") -> float:
        """The spectral norm ‖C‖₂ = σ_max, the largest singular value of C.

        Parameters
        ----------
        tol : positive float
            Relative accuracy wanted: the result is within ``tol·σ_max`` of
            σ_max (the iterative methods approach it from below).  The "fft"
            and "dense" methods are exact to rounding whatever ``tol``.
        maxiter : int >= 1
            Iteration limit: ARPACK restarts ("lanczos" with NumPy), Lanczos
            steps (CuPy) or power steps ("power").
        seed : int or numpy.random.Generator
            Seeds the random start vector of the iterative methods.
        method : "auto", "fft", "dense", "lanczos" or "power"
            "auto" takes "fft" where C is circulant (``padding_mode="circular"``,
            stride 1, as many outputs as inputs), else "dense" where the smaller
            side of C is at most ``NORM_DENSE_SIDE`` (and C has at most
            ``SVD_LIMIT_ENTRIES`` entries), else "lanczos" for NumPy
            and CuPy weights and "power" for other namespaces.

            * "fft": exact; the largest singular value of the per-frequency
              C_out×C_in/groups transfer matrices (Sedghi, Gupta & Long,
              "The Singular Values of Convolutional Layers", ICLR 2019; see
              ``singular_values``), one FFT of the weight on the input grid.
            * "dense": C applied to the identity on its smaller side, then a
              dense SVD (at most ``SVD_LIMIT_ENTRIES`` entries).
            * "lanczos": the largest eigenvalue λ_max = σ_max² of the Gram
              operator v ↦ Cᴴ(C·v) (or C(Cᴴ·v), whichever side is smaller),
              matrix-free, by implicitly restarted Lanczos
              (``scipy.sparse.linalg.eigsh``, ARPACK: Lehoucq, Sorensen & Yang,
              "ARPACK Users' Guide", SIAM 1998) for NumPy weights, by
              thick-restart Lanczos (``cupyx.scipy.sparse.linalg.eigsh``) for
              CuPy weights.  It stops when the Ritz residual is at most
              ``tol·λ``, which puts σ within ``tol·σ/2`` of σ_max.  (Where
              that side has at most 8 entries, the dense SVD instead.)
            * "power": power iteration on CᴴC in the weight's namespace, for
              namespaces without a SciPy-like ``linalg`` (PyTorch,
              ``array_api_strict``, ...): slow where the top singular values
              cluster (blurs), where "lanczos" is not.  From a random unit
              v₀ it iterates ``v_{k+1} = CᴴC·v_k / ‖CᴴC·v_k‖``; the estimate
              ``σ_k = √‖CᴴC·v_k‖`` rises to σ_max, geometrically with some
              rate r, and it stops when the error left, extrapolated from the
              last steps as ``Δ_k·r/(1 − r)`` with ``r = Δ_k/Δ_{k−1}``, is at
              most ``tol·σ_k/2`` (the extrapolation is a heuristic: it runs
              short where r still rises).

        Returns
        -------
        float
            σ_max ≥ 0, computed in double precision (float64 or complex128)
            whatever the weight's dtype (in single precision where the namespace
            has none: JAX without ``jax_enable_x64``); the same for C, Cᵀ, Cᴴ and
            conj(C).

        Raises
        ------
        ValueError
            ``tol`` not a positive number, ``maxiter`` < 1, ``method`` unknown,
            "fft" for an operator that is not circulant, or "dense" for one
            over ``SVD_LIMIT_ENTRIES`` entries.
        TypeError
            ``maxiter`` not an integer; "lanczos" for a weight that is neither
            NumPy nor CuPy.

        Warns
        -----
        RuntimeWarning
            "lanczos" or "power" did not reach ``tol`` in ``maxiter``
            iterations (the best estimate so far is returned).

        See Also
        --------
        norm_bound : a certified upper bound at the cost of one FFT.
        singular_values : every singular value.

        Examples
        --------
        >>> import numpy as np, convmm
        >>> op = convmm.ConvOperator(np.array([[[1., 1]]]), (1, 8), padding_mode="circular",
        ...                          padding=[(0, 1)])
        >>> op.norm()   # |1 + e^{iθ}| at θ = 0
        2.0
        """
        return spectrum.norm(self, tol, maxiter, seed, method)

    def norm_bound(self, *, iterations: Int = 0) -> float:
        """A certified upper bound on ‖C‖₂ = σ_max, from one FFT of the weight.

        Along each spatial axis, padding maps the input (size S) onto the padded
        grid (size P = S + p_b + p_a) by a 0/1 matrix Pad with at most one 1 per
        row; the N-d padding matrix is the Kronecker product of the per-axis
        ones.  On the padded grid the convolution reads no padding of its own,
        so it is a submatrix (the rows of the kept positions, stride included)
        of the circular convolution C_P on the periodic grid of size P (no tap
        wraps, since the effective kernel fits in P).  Hence C = R·C_P·Pad with
        R a row selection, and

            ‖C‖₂ ≤ ‖C_P‖₂ · ∏_axes ‖Pad_axis‖₂,
            ‖C_P‖₂ = max_f σ_max(Ŵ_P(f)),   ‖Pad_axis‖₂ = √(max_s n_s),

        where Ŵ_P(f) is the C_out×C_in/groups transfer matrix of each group at
        frequency f of the P-grid (Sedghi, Gupta & Long, "The Singular Values
        of Convolutional Layers", ICLR 2019) and n_s the number of padded
        positions that copy input sample s (PadᵀPad = diag(n_s)): 1 for zero
        padding, at most 2 for reflect and symmetric (3 where both edges'
        padding reaches one sample), 1 + p_b or 1 + p_a at the edges for
        replicate, up to 3 for circular.  With circular padding each output row of C is also a
        row of the circular convolution C_S on the input grid itself, so
        C = R'·C_S with R' a 0/1 row selection (a row repeated where more
        outputs than inputs wrap, e.g. ``padding="full"``), and

            ‖C‖₂ ≤ ‖C_S‖₂ · ∏_axes √(max_j m_j),

        m_j the number of outputs that are row j of C_S.  The bound equals
        σ_max where C is circulant and is close to it for zero padding; for
        reflect and replicate padding it can be looser by up to
        ∏ ‖Pad_axis‖₂ (2 for a 2-d reflect "same" padding, 1 + p for
        replicate).  ``iterations`` > 0 sharpens it there: with B the matrix
        of the convolution with the weight's moduli ``|W|`` (so ``|C| ≤ B`` entrywise
        and ‖C‖₂ ≤ ‖B‖₂), the Collatz–Wielandt bound

            ‖B‖₂² = λ_max(BᵀB) ≤ max_j (BᵀB·q)_j / q_j   for any q > 0

        (Horn & Johnson, "Matrix Analysis", 2nd ed., Cor. 8.1.31) is taken at
        q = 1, BᵀB·1, (BᵀB)²·1, ..., each iterate a valid bound that tends to
        ‖B‖₂ (= σ_max for a non-negative kernel, e.g. a blur).  The smallest of
        all the bounds is returned.

        Parameters
        ----------
        iterations : int >= 0
            Collatz–Wielandt steps, each costing two applications of B (one
            convolution and one transposed convolution of a sample).  0 (the
            default): only the FFT bound.

        Returns
        -------
        float
            An upper bound on σ_max (the same for C, Cᵀ, Cᴴ and conj(C)),
            computed in double precision (float64 or complex128) whatever the
            weight's dtype (single where the namespace has none: JAX without
            ``jax_enable_x64``, with ε = 2⁻²³ below), and enlarged for rounding: the
            FFT bound by the relative allowance ``8·ε·(1 + log₂N)·√(N·r)`` of the FFT
            and SVD (N grid points, r = min(C_out, C_in)/groups, ε = 2⁻⁵²; below
            1e-10 for any practical grid), the Collatz–Wielandt bound by ``2·K·ε``
            (K = T·C_in/groups + R·C_out/groups + 4, T kernel taps, R the
            most (position, tap) pairs that read one input sample: the terms
            of its sums of non-negative numbers).  The FFT costs a transform
            of the weight on the padded grid and an SVD of each (small)
            transfer matrix: no application of C.

        Raises
        ------
        TypeError
            ``iterations`` not an integer.
        ValueError
            ``iterations`` < 0.

        See Also
        --------
        norm : σ_max itself, to a tolerance.

        Examples
        --------
        >>> import numpy as np, convmm
        >>> op = convmm.ConvOperator(np.array([[[1., 2, 1]]]), (1, 50), padding=1)
        >>> round(op.norm(), 6), round(op.norm_bound(), 6)  # max |1 + 2e^{iθ} + e^{2iθ}| = 4
        (3.996207, 4.0)
        """
        return spectrum.norm_bound(self, iterations)

    def _circulant(self):
        """Whether C is a full multi-channel circulant: circular padding, stride 1, O = S."""
        return spectrum.is_circulant(self)

    def singular_values(self) -> Array:
        """All min(M, N) singular values of C, largest first, in the weight's namespace.

        Exact and fast for a circular convolution with stride 1 and as many
        outputs as inputs (Sedghi, Gupta & Long, "The Singular Values of
        Convolutional Layers", ICLR 2019): C is block-circulant, the Fourier
        transform over the spatial axes block-diagonalises it, and its singular
        values are those of the C_out×C_in transfer matrices
        ``Ŵ(f)[o, c] = Σ_t W[o, c, t]·exp(∓2πi f·t·d / S)`` at every frequency f
        (per group).  Otherwise the dense SVD, where C has at most
        ``SVD_LIMIT_ENTRIES`` entries.

        Returns
        -------
        array
            min(M, N) non-negative values, largest first, in the weight's
            namespace (real: float32 for float32 and complex64 weights, else float64).

        Raises
        ------
        ValueError
            An operator that is not circulant and has over ``SVD_LIMIT_ENTRIES`` entries.

        Examples
        --------
        >>> import numpy as np, convmm
        >>> op = convmm.ConvOperator(np.array([[[1., 1]]]), (1, 4), padding_mode="circular",
        ...                          padding=[(0, 1)])
        >>> np.round(op.singular_values(), 6)   # |1 + e^{-iπk/2}|, k = 0..3
        array([2.      , 1.414214, 1.414214, 0.      ])
        """
        return spectrum.singular_values(self)
