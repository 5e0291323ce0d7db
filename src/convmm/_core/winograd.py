"""Winograd's minimal filtering algorithms F(m, r): the transform matrices, exact.

A stride-1 correlation of ``m`` outputs with an ``r``-tap kernel,
``y_i = Σ_k g_k·d_{i+k}`` (i < m), reads a tile of ``α = m + r − 1`` inputs and
takes α multiplications instead of m·r (Lavin & Gray, "Fast Algorithms for
Convolutional Neural Networks", CVPR 2016, eq. 6-8)::

    y = Aᵀ·[(G·g) ⊙ (Bᵀ·d)]          Aᵀ: m × α,  G: α × r,  Bᵀ: α × α

In 2-d and 3-d the transforms nest, one per axis (``Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A``).
With channels, the element-wise product becomes, at each of the α^nd transform
points ξ, a matrix product ``M[ξ] = V[ξ]·U[ξ]`` of the (tiles × C_in) input
transforms with the (C_in × C_out) kernel transforms: α^nd independent GEMMs.

The matrices come from the Toom-Cook construction (Blahut, "Fast Algorithms
for Signal Processing", 2010, ch. 5; Lavin & Gray, section 4.1): with points
``a_0 … a_{α−2}`` and ∞, the product of polynomials h (degree m − 1) and g
(degree r − 1) is ``s = V⁻¹·[(G g) ⊙ (A h)]``, ``A`` and ``G`` evaluating at the
points (at ∞: the leading coefficient) and ``V`` the α × α evaluation matrix.
The correlation is this bilinear map transposed in h: ``y = Aᵀ[(G g) ⊙ (V⁻ᵀ d)]``,
so ``Bᵀ = V⁻ᵀ``.  Each transform point's row of ``Bᵀ`` and column of ``Aᵀ`` is
scaled to coprime integers and the scale moved into ``G``'s row (the product
is unchanged): the data transforms are then exact in floating point for small
integers, and only the kernel transform, computed once in float64, rounds.
Points ``0, 1, −1, 2, −2, 1/2, −1/2, …`` are the usual ones (F(2, 3) and
F(4, 3) as in Lavin & Gray).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import numpy as np

POINTS = (Fraction(0), Fraction(1), Fraction(-1), Fraction(2), Fraction(-2), Fraction(1, 2),
          Fraction(-1, 2), Fraction(3), Fraction(-3), Fraction(1, 3), Fraction(-1, 3))
"""The finite interpolation points, in the order they are taken (∞ is always the last)."""


@dataclass(frozen=True)
class Transform:
    """F(m, r) for one axis: ``y = AT·[(G·g) ⊙ (BT·d)]``, float64 arrays.

    AT: (m, α), G: (α, r), BT: (α, α), α = m + r − 1; ``exact`` holds the three as
    tuples of rows of Fractions (G's entries round once to float64).
    """

    m: int
    r: int
    AT: np.ndarray
    G: np.ndarray
    BT: np.ndarray
    exact: tuple = ()

    @property
    def alpha(self) -> int:
        return self.m + self.r - 1


def _inverse(matrix):
    """The inverse of a square matrix of Fractions (Gauss-Jordan, exact)."""
    n = len(matrix)
    work = [list(row) + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(matrix)]
    for col in range(n):
        pivot = next(i for i in range(col, n) if work[i][col] != 0)
        work[col], work[pivot] = work[pivot], work[col]
        scale = work[col][col]
        work[col] = [v / scale for v in work[col]]
        for i in range(n):
            if i != col and work[i][col] != 0:
                factor = work[i][col]
                work[i] = [a - factor * b for a, b in zip(work[i], work[col])]
    return [row[n:] for row in work]


def _coprime_scale(values):
    """The factor that turns a vector of Fractions into coprime integers (sign kept)."""
    numerators = [v.numerator for v in values if v != 0]
    denominators = [v.denominator for v in values if v != 0]
    return Fraction(math.lcm(*denominators), math.gcd(*numerators))


@lru_cache(maxsize=32)
def transform(m: int, r: int) -> Transform:
    """The exact F(m, r) matrices (Toom-Cook with ``POINTS`` and ∞); m, r ≥ 1 and
    m + r − 2 ≤ len(POINTS).  Raises ValueError past that."""
    alpha = m + r - 1
    if m < 1 or r < 1 or alpha - 1 > len(POINTS):
        raise ValueError(f"F({m}, {r}) needs {alpha - 1} finite points, convmm has "
                         f"{len(POINTS)}")
    points = POINTS[:alpha - 1]

    def evaluation(degree):        # α × degree: rows evaluate a polynomial's coefficients
        rows = [[p ** k for k in range(degree)] for p in points]
        rows.append([Fraction(int(k == degree - 1)) for k in range(degree)])   # ∞
        return rows

    a = evaluation(m)                                  # α × m
    g = evaluation(r)                                  # α × r
    b_t = [list(col) for col in zip(*_inverse(evaluation(alpha)))]   # V⁻ᵀ
    # Scale each point's B row and A row to coprime integers; divide G's row by both.
    for j in range(alpha):
        sb, sa = _coprime_scale(b_t[j]), _coprime_scale(a[j])
        b_t[j] = [v * sb for v in b_t[j]]
        a[j] = [v * sa for v in a[j]]
        g[j] = [v / (sa * sb) for v in g[j]]
    a_t = [list(column) for column in zip(*a)]
    as_array = lambda rows: np.array([[float(v) for v in row] for row in rows])  # noqa: E731
    exact = tuple(tuple(tuple(row) for row in rows) for rows in (a_t, g, b_t))
    return Transform(m, r, as_array(a_t), as_array(g), as_array(b_t), exact)


def kernel_transform(weight, transforms):
    """U = G·g·Gᵀ per axis, in float64 (complex128 for complex weights).

    weight: (O, C, *K) with one ``Transform`` per spatial axis; returns
    (α0·α1·…, C, O), the layout the transform-point GEMMs read.  The nested
    transform is one matrix, the Kronecker product of the axes' G, applied to
    every (O, C) pair's kernel in one GEMM.
    """
    kron = np.ones((1, 1))
    for t in transforms:
        kron = np.kron(kron, t.G)                     # (∏α, ∏K), row-major over the axes
    out_channels, in_channels = weight.shape[:2]
    # (∏K, C·O): the weight is the small operand to transpose, not U.
    taps = weight.reshape(out_channels, in_channels, -1).transpose(2, 1, 0)
    taps = taps.astype(np.result_type(weight.dtype, np.float64)).reshape(kron.shape[1], -1)
    return (kron @ taps).reshape(kron.shape[0], in_channels, out_channels)


# --------------------------------------------------------------------------- tiling
MAX_TAPS = 5
"""The longest kernel axis the Winograd lowering takes: F(2, 5) has α = 6 points, the
most whose transforms stay accurate in float32 (Lavin & Gray, section 5)."""

OUTPUT_TILE = {1: 1, 2: 3, 3: 4, 4: 3, 5: 2}
"""The output tile m of F(m, r) per kernel length r: α = m + r − 1 ≤ 6 (r = 1 needs no
transform).  ``tiling`` may be asked for smaller tiles (F(2, 3))."""

LINES = ((1, 1), (3, 2), (2, 2), (4, 3), (2, 3), (3, 4), (2, 4), (2, 5))
"""Every F(m, r) ``tiling`` may choose (``OUTPUT_TILE``'s and tiles capped at 2): the CPU
engine's generated line transforms (``tools/generate_winograd.py``) cover these, and a
tiling's ``kinds`` index them."""


@dataclass(frozen=True)
class WinogradTiling:
    """How a stride-1 convolution is cut into Winograd tiles, as 3 axes (1-d and 2-d
    calls get leading axes of one sample with F(1, 1)).

    Along axis i, output tiles of ``m[i]`` samples, one set per dilation phase
    (``dilation[i]`` sub-grids), ``tiles[i]`` per phase; each reads ``alpha[i]``
    samples of the padded input, extended with zeros to ``canvas[i]`` so that
    the last tile may overhang.
    """

    transforms: tuple            # one Transform per axis (3)
    dilation: tuple[int, int, int]
    tiles: tuple[int, int, int]
    canvas: tuple[int, int, int]
    output_size: tuple[int, int, int]

    @property
    def m(self) -> tuple[int, ...]:
        return tuple(t.m for t in self.transforms)

    @property
    def alpha(self) -> tuple[int, ...]:
        return tuple(t.alpha for t in self.transforms)

    @property
    def points(self) -> int:
        """α0·α1·α2: the transform points, one GEMM each."""
        return math.prod(self.alpha)

    @property
    def tiles_per_image(self) -> int:
        return math.prod(d * t for d, t in zip(self.dilation, self.tiles))

    @property
    def kinds(self) -> tuple[int, ...]:
        """Each axis's F(m, r) as its index in ``LINES`` (three of them)."""
        return tuple(LINES.index((t.m, t.r)) for t in self.transforms)

    def name(self, nd: int) -> str:
        """"F(4×4, 3×3)" for the call's ``nd`` axes."""
        kept = self.transforms[3 - nd:]
        return (f"F({'×'.join(str(t.m) for t in kept)}, "
                f"{'×'.join(str(t.r) for t in kept)})")


def applies(geometry) -> str:
    """Why the Winograd lowering cannot run this geometry, or "" where it can."""
    if any(s != 1 for s in geometry.stride):
        return "it computes stride-1 convolutions only"
    if max(geometry.kernel_size) > MAX_TAPS:
        return f"its transforms take kernels of at most {MAX_TAPS} taps per axis"
    return ""


@lru_cache(maxsize=256)
def tiling(geometry, largest_tile: int = 0) -> WinogradTiling:
    """The tiling of a stride-1 geometry (``applies`` says where there is one);
    ``largest_tile`` > 0 caps each axis's output tile (F(2, 3) with 2)."""
    lead = 3 - geometry.nd
    kernel = (1,) * lead + tuple(geometry.kernel_size)
    dilation = (1,) * lead + tuple(geometry.dilation)
    output = (1,) * lead + tuple(geometry.output_size)
    padded = (1,) * lead + tuple(geometry.padded_size)
    transforms, tiles, canvas = [], [], []
    for k, d, o, p in zip(kernel, dilation, output, padded):
        m = OUTPUT_TILE[k] if largest_tile <= 0 else max(1, min(OUTPUT_TILE[k], largest_tile))
        t = transform(m, k)
        per_phase = -(-(-(-o // d)) // m)      # tiles over the longest phase, ⌈⌈O/d⌉/m⌉
        transforms.append(t)
        tiles.append(per_phase)
        # The last tile of the last phase reads up to (d − 1) + ((T − 1)·m + α − 1)·d.
        canvas.append(max(p, d + ((per_phase - 1) * m + t.alpha - 1) * d))
    return WinogradTiling(tuple(transforms), dilation, tuple(tiles), tuple(canvas), output)
