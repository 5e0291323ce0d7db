"""The FFT lowering: a convolution as a batch of small matrix products in the Fourier basis.

A stride-1 cross-correlation of a C-channel signal with an O × C kernel is, after a
discrete Fourier transform over the spatial axes, one C → O matrix product per
frequency f (the DFT diagonalises every circulant block of the block-circulant
matrix; the convolution theorem):

    ŷ(f) = V̂(f)·x̂(f),   V̂(f)[o, c] = DFT of the flipped kernel V[o, c, ::-1],

with the transform long enough (L ≥ the padded input per axis) that no kept output
wraps around.  The three maps a convolution is made of are three such products:

* forward (``y = C·x``):       ŷ(f) = V̂(f)·x̂(f), then the valid outputs;
* adjoint (``z = Cᵀ·y``):      ẑ(f) = V̂ᵀ(f)·ŷ(f) with V̂ the DFT of V itself (the full
  linear convolution: the transpose of a valid correlation);
* weight gradient:            R̂(f) = Σ_n â_n(f)·b̂_n(f)ᵀ, the correlation of each pair
  of channels summed over the batch.

Strides are taken out first by a polyphase split (space-to-depth): with stride s,
``y[l] = Σ_t w[t]·x[l·s + t]`` is, for each of the s phases r, the stride-1
correlation of ``x_r[m] = x[m·s + r]`` with ``w_r[q] = w[q·s + r]``, summed over r:
the phases become extra input channels, so no output is computed only to be
discarded, and every transform is 1/s as long per axis.  Dilation is a kernel with
zeros inserted.  Padding modes other than zeros pad first (``lowering.pad``), and
the adjoint ends with the padding's adjoint.  Real arrays use real transforms
(``rfftn``: half the spectrum), lengths from ``scipy.fft.next_fast_len``.

Accuracy is normwise, not elementwise: an FFT's rounding error is about
ε·log₂ L relative to the largest values (Cooley & Tukey; Higham, "Accuracy and
Stability of Numerical Algorithms", §24.1), so outputs much smaller than the
largest carry an error relative to the largest.

Everything here is written against the array API (its ``fft`` extension), with
``scipy.fft`` standing in for NumPy's (it keeps float32 in single precision and
runs on several workers).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache

import array_api_extra as xpx
import numpy as np
from array_api_compat import device as device_of
from array_api_compat import is_cupy_array, is_numpy_array

from . import lowering
from .geometry import ConvGeometry
from .index_tables import coordinate_source
from .layout import LAYOUTS, Layout
from .lowering import pad, pad_adjoint
from .validation import library

FIRST = LAYOUTS["channels_first"]


# --------------------------------------------------------------------------- the polyphase geometry
@dataclass(frozen=True)
class FFTGeometry:
    """The transforms of one convolution's geometry, per spatial axis.

    ``phases`` is the stride (s), ``phase_taps`` the kernel's taps per phase
    (⌈E/s⌉ with E = d·(K − 1) + 1 the dilated kernel), ``phase_length`` each input
    phase's length Q (at least ⌈P/s⌉ for the padded input P, and long enough for
    every kept output: O − 1 + ⌈E/s⌉), ``length`` the transform length L ≥ Q.
    """

    geometry: ConvGeometry
    phases: tuple[int, ...]
    phase_taps: tuple[int, ...]
    phase_length: tuple[int, ...]
    length: tuple[int, ...]

    @property
    def n_phases(self) -> int:
        return math.prod(self.phases)



def next_fast_length(n: int, real: bool = True) -> int:
    """The smallest length ≥ n whose FFT is fast: a product of small primes (SciPy's)."""
    import scipy.fft

    return scipy.fft.next_fast_len(n, real=real)


@lru_cache(maxsize=256)
def fft_geometry(geometry: ConvGeometry) -> FFTGeometry:
    """The polyphase split and transform lengths of ``geometry`` (cached: a pure function)."""
    phases, taps, lengths, transforms = [], [], [], []
    for padded, kernel, out, s in zip(geometry.padded_size, geometry.effective_kernel,
                                      geometry.output_size, geometry.stride):
        per_phase = -(-kernel // s)
        length = max(-(-padded // s), out - 1 + per_phase)
        phases.append(s)
        taps.append(per_phase)
        lengths.append(length)
        transforms.append(next_fast_length(length))
    return FFTGeometry(geometry, tuple(phases), tuple(taps), tuple(lengths), tuple(transforms))


# --------------------------------------------------------------------------- transforms
class Transforms:
    """The forward and inverse n-d transforms over the trailing ``nd`` axes, real or complex,
    of one namespace: ``scipy.fft`` for NumPy (on ``workers`` threads), ``cupy.fft`` for
    CuPy, the array API's ``fft`` extension elsewhere."""

    def __init__(self, xp, like, workers: int = 1):
        self.xp = xp
        if is_numpy_array(like):
            import scipy.fft

            self._module, self._keywords = scipy.fft, {"workers": workers}
        elif is_cupy_array(like):
            import cupy.fft

            self._module, self._keywords = cupy.fft, {}
        else:
            if not hasattr(xp, "fft"):
                raise ValueError(f"method='fft' needs the array API's fft extension, which "
                                 f"{library(like)} arrays' namespace lacks")
            self._module, self._keywords = xp.fft, {}

    def forward(self, a, lengths, real):
        """The transform of ``a`` zero-extended to ``lengths`` on its trailing axes.

        One axis at a time, the last first (the real transform halves it): each pass
        zero-extends only its own axis, so the passes over a small array (a kernel)
        run on its few rows rather than on the extended grid's."""
        module, first = self._module, a.ndim - len(lengths)
        a = (module.rfft if real else module.fft)(a, n=lengths[-1], axis=a.ndim - 1,
                                                  **self._keywords)
        for axis in range(a.ndim - 2, first - 1, -1):
            a = module.fft(a, n=lengths[axis - first], axis=axis, **self._keywords)
        return a

    def inverse(self, a, lengths, real, starts, sizes):
        """The window ``[start, start + size)`` per trailing axis of the inverse transform.

        One axis at a time, the last one (real) at the end; each pass keeps only its
        window, so the passes after it run on fewer rows."""
        module, first = self._module, a.ndim - len(lengths)
        for axis in range(first, a.ndim - 1):
            start, size = starts[axis - first], sizes[axis - first]
            a = module.ifft(a, n=lengths[axis - first], axis=axis, **self._keywords)
            a = a[(slice(None),) * axis + (slice(start, start + size), ...)]
        a = (module.irfft if real else module.ifft)(a, n=lengths[-1], axis=a.ndim - 1,
                                                    **self._keywords)
        return a[..., starts[-1]:starts[-1] + sizes[-1]]


def _is_real(xp, *arrays) -> bool:
    return all(xp.isdtype(a.dtype, "real floating") for a in arrays)


# --------------------------------------------------------------------------- layouts
def _image_first(xp, a, layout: Layout):
    """An image batch channels-first: (N, *S, C) → (N, C, *S)."""
    if layout is FIRST:
        return a
    return xp.permute_dims(a, (0, a.ndim - 1, *range(1, a.ndim - 1)))


def _image_back(xp, a, layout: Layout):
    """``_image_first``'s inverse."""
    if layout is FIRST:
        return a
    return xp.permute_dims(a, (0, *range(2, a.ndim), 1))


def _weight_first(xp, w, layout: Layout):
    """A weight channels-first: (*K, C_g, O) → (O, C_g, *K)."""
    if layout is FIRST:
        return w
    nd = w.ndim - 2
    return xp.permute_dims(w, (nd + 1, nd, *range(nd)))


def _weight_back(xp, w, layout: Layout):
    """``_weight_first``'s inverse."""
    if layout is FIRST:
        return w
    return xp.permute_dims(w, (*range(2, w.ndim), 1, 0))


# --------------------------------------------------------------------------- polyphase
def _zeros(xp, shape, like):
    return xp.zeros(shape, dtype=like.dtype, device=device_of(like))


def _split_phases(xp, a, lengths, phases):
    """(A, B, *(q·s)) → (A, B·∏s, *q): phase r of an axis holds samples r, r + s, …; channel
    ``b·∏s + r`` (phases row-major), so that each group's channels stay together."""
    count = math.prod(phases)
    if count == 1:
        return a
    nd = len(phases)
    split = [d for q, s in zip(lengths, phases) for d in (q, s)]
    a = xp.reshape(a, (a.shape[0], a.shape[1], *split))
    order = (0, 1, *(3 + 2 * i for i in range(nd)), *(2 + 2 * i for i in range(nd)))
    return xp.reshape(xp.permute_dims(a, order), (a.shape[0], a.shape[1] * count, *lengths))


def _merge_phases(xp, a, lengths, phases):
    """``_split_phases``'s inverse (and transpose): (A, B·∏s, *q) → (A, B, *(q·s))."""
    count = math.prod(phases)
    if count == 1:
        return a
    nd, channels = len(phases), a.shape[1] // count
    a = xp.reshape(a, (a.shape[0], channels, *phases, *lengths))
    order = (0, 1, *(d for i in range(nd) for d in (2 + nd + i, 2 + i)))
    return xp.reshape(xp.permute_dims(a, order),
                      (a.shape[0], channels, *(q * s for q, s in zip(lengths, phases))))


def _space_to_depth(xp, x, phased: FFTGeometry):
    """(N, C, *P) → (N, C·∏s, *Q): the padded input, zero-extended to Q·s, in phases."""
    extended = tuple(q * s for q, s in zip(phased.phase_length, phased.phases))
    if extended != tuple(x.shape[2:]):
        canvas = _zeros(xp, (*x.shape[:2], *extended), x)
        x = xpx.at(canvas, (slice(None), slice(None), *(slice(0, p) for p in x.shape[2:]))).set(x)
    return _split_phases(xp, x, phased.phase_length, phased.phases)


def _depth_to_space(xp, u, phased: FFTGeometry):
    """``_space_to_depth``'s transpose: (N, C·∏s, *Q) → (N, C, *P), P the padded size."""
    u = _merge_phases(xp, u, phased.phase_length, phased.phases)
    return u[(slice(None), slice(None), *(slice(0, p) for p in phased.geometry.padded_size))]


def _dilated_taps(geometry):
    """The index of the kernel's taps in the dilated kernel (zeros between them)."""
    return (slice(None), slice(None),
            *(slice(0, d * (k - 1) + 1, d) for k, d in zip(geometry.kernel_size, geometry.dilation)))


def _phased_rows(xp, images, phased: FFTGeometry, mode, first, last):
    """Rows ``first:last`` (phase rows, along the first spatial axis) of
    ``_space_to_depth(pad(images))``, built from the input rows they read: a block's
    copy, never the whole image's, so overlap-save blocks bound the memory."""
    geometry = phased.geometry
    stride, (before, _), size = phased.phases[0], geometry.padding[0], geometry.input_size[0]
    padded = np.arange(first * stride, last * stride)
    source = np.where(padded < geometry.padded_size[0],
                      coordinate_source(padded - before, size, mode), -1)
    reading = np.flatnonzero(source >= 0)    # a run: zeros only before and after it
    rows = _zeros(xp, (*images.shape[:2], padded.size, *images.shape[3:]), images)
    if reading.size:
        low, high = int(reading[0]), int(reading[-1]) + 1
        wanted = source[low:high]
        if np.all(np.diff(wanted) == 1):
            read = images[:, :, int(wanted[0]):int(wanted[-1]) + 1, ...]
        else:
            read = xp.take(images, lowering.index_array(xp, wanted, images), axis=2)
        rows = xpx.at(rows, (slice(None), slice(None), slice(low, high), ...)).set(read)
    # The other axes as the geometry pads them, then their zero extension and phases.
    rest = dataclasses.replace(geometry, input_size=(padded.size, *geometry.input_size[1:]),
                               padding=((0, 0), *geometry.padding[1:]))
    rows = pad(xp, rows, rest, mode, FIRST)
    extended = (padded.size, *(q * s for q, s in zip(phased.phase_length[1:], phased.phases[1:])))
    if tuple(rows.shape[2:]) != extended:
        canvas = _zeros(xp, (*rows.shape[:2], *extended), rows)
        rows = xpx.at(canvas, (slice(None), slice(None),
                               *(slice(0, n) for n in rows.shape[2:]))).set(rows)
    return _split_phases(xp, rows, (last - first, *phased.phase_length[1:]), phased.phases)


def _kernel_phases(xp, w, phased: FFTGeometry):
    """(O, C_g, *K) → (O, C_g·∏s, *⌈E/s⌉): the dilated kernel (zeros inserted), split into
    the stride's phases as ``_space_to_depth`` splits the input."""
    extended = tuple(t * s for t, s in zip(phased.phase_taps, phased.phases))
    if extended != tuple(w.shape[2:]):
        canvas = _zeros(xp, (*w.shape[:2], *extended), w)
        w = xpx.at(canvas, _dilated_taps(phased.geometry)).set(w)
    return _split_phases(xp, w, phased.phase_taps, phased.phases)


def _kernel_from_phases(xp, v, phased: FFTGeometry):
    """``_kernel_phases``'s inverse on a gradient: (O, C_g·∏s, *⌈E/s⌉) → (O, C_g, *K), the
    taps the dilation keeps."""
    return _merge_phases(xp, v, phased.phase_taps, phased.phases)[_dilated_taps(phased.geometry)]


# --------------------------------------------------------------------------- blocks
@dataclass(frozen=True)
class FFTBlocks:
    """How one map of a call is cut to bound its memory: ``images`` per chunk of the batch,
    and, where one image's transforms would not fit, ``rows`` (output rows along the first
    spatial axis) per overlap-save block, 0 for whole images; ``lengths`` are the transform
    lengths of one block, ``workspace_bytes`` the memory one chunk or block takes beside
    the call's arrays, ``spectrum_bytes`` the kernel's spectrum's share of it."""

    images: int
    rows: int
    lengths: tuple[int, ...]
    workspace_bytes: int
    spectrum_bytes: int


def _block_bytes(phased: FFTGeometry, operation: str, images: int, lengths, rows: int,
                 inner: int, outer: int, groups: int, size: int, complex_input: bool):
    """(workspace, kernel spectrum) bytes of one block of ``images`` images transformed at
    ``lengths``: its padded, phase-split input (twice: the copy and its phases; for a
    block of ``rows`` output rows only those rows and the kernel's reach), the spectra
    of both sides and their rearranged copies for the products, the inverse transform,
    and the kernel's spectrum (twice: its rearranged copy).  ``inner``: C·∏s channels;
    ``outer``: O."""
    spectrum = math.prod(transforms_shape(lengths, not complex_input))
    points = math.prod(lengths)
    csize = 2 * size if not complex_input else size
    kernel = outer * (inner // groups) * spectrum * csize * 2
    read = phased.phase_length if rows == 0 else (rows + phased.phase_taps[0] - 1,
                                                *phased.phase_length[1:])
    image = inner * math.prod(read) * size * 2
    transformed = (inner + outer) * spectrum * csize * 2
    inverse = (outer if operation == "forward" else inner) * points * size
    return images * (image + transformed + inverse) + kernel, kernel


def fft_blocks(geometry: ConvGeometry, operation: str, n: int, in_channels: int,
               out_channels: int, groups: int, size: int, complex_input: bool,
               budget: int, preferred: int | None = None) -> FFTBlocks:
    """Chunks of the batch (then blocks of rows) of one map whose workspace fits
    ``preferred`` bytes where one block can, else ``budget``.

    Whole images, as many per chunk as fit; where a single image does not, overlap-save
    blocks of output rows along the first spatial axis (each block reads its rows plus
    the kernel's reach, ⌈E/s⌉ − 1, and its transforms are that long), as many rows as
    fit.  Where even a block of one row does not fit (the kernel's spectrum alone is
    too large), the smallest block: the caller compares ``workspace_bytes`` with the
    budget.  ``size`` is the real itemsize (4 or 8), or the complex one where
    ``complex_input`` (full transforms)."""
    phased = fft_geometry(geometry)
    inner = in_channels * phased.n_phases
    reach = phased.phase_taps[0] - 1
    last_rows = phased.geometry.output_size[0] if operation == "forward" else phased.phase_length[0]

    def measure(images, rows):
        lengths = phased.length if rows == 0 else (
            next_fast_length(rows + reach, not complex_input), *phased.length[1:])
        work, spectrum = _block_bytes(phased, operation, images, lengths, rows, inner,
                                      out_channels, groups, size, complex_input)
        return FFTBlocks(images, rows, lengths, work, spectrum)

    for limit in dict.fromkeys((min(preferred or budget, budget), budget)):
        whole = measure(1, 0)
        if whole.workspace_bytes <= limit or n == 0:
            per_image = whole.workspace_bytes - whole.spectrum_bytes
            images = max(1, min(n, (limit - whole.spectrum_bytes) // max(per_image, 1)))
            return measure(images, 0)
        best, low, high = None, 1, last_rows
        while low <= high:                   # the most rows whose block fits
            middle = (low + high) // 2
            candidate = measure(1, middle)
            if candidate.workspace_bytes <= limit:
                best, low = candidate, middle + 1
            else:
                high = middle - 1
        if best is not None:
            return best
    return measure(1, 1)


def transformable(xp, a, b, blocks: FFTBlocks) -> bool:
    """Whether the FFT gives ``a`` ⊛ ``b`` to its normwise accuracy: both finite (one NaN
    or inf would spread over a whole transform, where a GEMM keeps it to the outputs it
    reaches) and small enough that no sum in the transforms overflows.

    Every spectral value is at most n·max|a| (n the points of a transform), a product
    summed over the channels at most C·n²·max|a|·max|b|, and an unnormalised inverse
    sum n times that: the check asks n³·C·max|a|·max|b| to stay 16 times below the
    dtype's largest value (float32: max|a|·max|b| up to about 10²⁰ for 576×576 points)."""
    largest = []
    for operand in (a, b):
        top = float(xp.max(xp.abs(operand))) if math.prod(operand.shape) else 0.0
        if not math.isfinite(top):
            return False
        largest.append(top)
    points = math.prod(blocks.lengths)
    dtype = xp.result_type(a.dtype, b.dtype)
    real = xp.float32 if dtype in (xp.float32, xp.complex64) else xp.float64
    limit = float(xp.finfo(real).max) / 16
    channels = max(a.shape[1], a.shape[-1], b.shape[1], b.shape[-1])   # either layout
    return largest[0] * largest[1] * float(points) ** 3 * channels <= limit


# --------------------------------------------------------------------------- products per frequency
def _grouped(xp, a, groups):
    """(B, G·C, *F) → (B, G, C, ∏F): channels split into groups, frequencies flattened."""
    return xp.reshape(a, (a.shape[0], groups, a.shape[1] // groups, -1))


MATMUL_MIN = 8
"""``channel_products`` multiplies the per-frequency matrices with ``matmul`` where all three of
their sizes are at least this; smaller ones as broadcast products, which NumPy runs
several times faster than a batched product of tiny matrices (measured: 1×16·16×16
matrices at 2.1 against 0.5 G complex multiply-adds per second, 8×64·64×64 at 2.0
against 3.3)."""


def uses_matmul(rows: int, depth: int, columns: int) -> bool:
    """Whether ``channel_products`` runs a product of these sizes as a batched ``matmul``."""
    return min(rows, depth, columns) >= MATMUL_MIN


def _contiguous(xp, a):
    """``a`` laid out in its own axis order (NumPy's batched matmul is several times
    slower on permuted views); other namespaces' products take views as they are."""
    return np.ascontiguousarray(a) if is_numpy_array(a) else a


def channel_products(xp, a, b):
    """``Σ_k a[i, g, k, f]·b[g, k, j, f]`` → (i, g, j, f): one small matrix product per
    group and frequency (``uses_matmul`` says how)."""
    rows, depth, columns = a.shape[0], a.shape[2], b.shape[2]
    if not uses_matmul(rows, depth, columns):
        total = a[:, :, 0:1, :] * b[None, :, 0, :, :]
        for k in range(1, depth):
            total = total + a[:, :, k:k + 1, :] * b[None, :, k, :, :]
        return total
    lhs = _contiguous(xp, xp.permute_dims(a, (1, 3, 0, 2)))          # (g, f, i, k)
    rhs = _contiguous(xp, xp.permute_dims(b, (0, 3, 1, 2)))          # (g, f, k, j)
    return xp.permute_dims(xp.matmul(lhs, rhs), (2, 0, 3, 1))


def transforms_shape(lengths, real):
    """The spectrum's shape for transforms of ``lengths``: the last axis halved where real."""
    return (*lengths[:-1], lengths[-1] // 2 + 1) if real else tuple(lengths)


def _rows(a, start, stop):
    """Rows ``start:stop`` of the first spatial axis of a channels-first batch."""
    return a[:, :, start:stop, ...]


def _spatial_axes(nd):
    return tuple(range(2, 2 + nd))


class _Spectra:
    """One map's transforms at one block's ``lengths``, the kernel's spectrum made once."""

    def __init__(self, xp, transforms, lengths, real, groups):
        self.xp, self.transforms, self.lengths = xp, transforms, tuple(lengths)
        self.real, self.groups = real, groups

    def forward(self, a):
        """(B, G·C, *S) → (B, G, C, ∏F)."""
        return _grouped(self.xp, self.transforms.forward(a, self.lengths, self.real), self.groups)

    def inverse(self, a_hat, channels, starts, sizes):
        """(B, G, C, ∏F) → (B, G·C, *sizes): the window of the inverse transform from ``starts``."""
        shaped = self.xp.reshape(a_hat, (a_hat.shape[0], channels,
                                         *transforms_shape(self.lengths, self.real)))
        return self.transforms.inverse(shaped, self.lengths, self.real, starts, sizes)

    def kernel(self, v, flipped):
        """The kernel (O, C_g, *T) as (G, O_g, C_g, ∏F), of its flip for a correlation."""
        xp = self.xp
        if flipped:
            v = xp.flip(v, axis=_spatial_axes(v.ndim - 2))
        v_hat = self.transforms.forward(v, self.lengths, self.real)
        return xp.reshape(v_hat, (self.groups, v.shape[0] // self.groups, v.shape[1], -1))


class _Assembled:
    """A channels-first result written chunk by chunk and block by block into one array
    (no concatenation: a second copy of the output); a single whole piece is kept as it is."""

    def __init__(self, xp, shape, dtype, like):
        self.xp, self.shape, self.dtype, self.like = xp, shape, dtype, like
        self.result = None

    def put(self, start, stop, first, piece):
        whole = (start, stop, first) == (0, self.shape[0], 0) and \
            tuple(piece.shape) == tuple(self.shape)
        if whole:
            self.result = piece
            return
        if self.result is None:
            self.result = self.xp.zeros(self.shape, dtype=self.dtype,
                                        device=device_of(self.like))
        self.result = xpx.at(self.result, (slice(start, stop), slice(None),
                                           slice(first, first + piece.shape[2]), ...)).set(piece)


def _chunks(n, images):
    return [(start, min(n, start + images)) for start in range(0, n, images)]


# --------------------------------------------------------------------------- the three maps
def _zero_padding_in_transform(geometry, mode, blocks: FFTBlocks) -> bool:
    """Whether zero padding can be left to the transform's own zero extension: stride 1,
    whole images, and per axis at most E − 1 samples each side and at least E − 1 in all,
    so that every output is one of the full linear convolution's (no padded copy)."""
    return (mode == "zeros" and blocks.rows == 0 and all(s == 1 for s in geometry.stride)
            and all(b <= e - 1 and a <= e - 1 and b + a >= e - 1
                    for (b, a), e in zip(geometry.padding, geometry.effective_kernel)))


def forward(xp, transforms, x, weight, geometry, mode, groups, layout, blocks: FFTBlocks):
    """C·x by the FFT: (N, C_in, *S) → (N, C_out, *O) in ``layout``, no bias.

    ``y[n, o, l] = Σ_{c, t} v[o, c, t]·x̃[n, g·C_g + c, l + t]`` on the phase-split padded
    input x̃ and kernel v: ŷ(f) = V̂(f)·x̂(f) with V̂ the transform of the flipped kernel,
    the valid outputs read from index ⌈E/s⌉ − 1 on."""
    phased = fft_geometry(geometry)
    v = _kernel_phases(xp, _weight_first(xp, weight, layout), phased)
    spectra = _Spectra(xp, transforms, blocks.lengths, _is_real(xp, x, weight), groups)
    v_hat = xp.permute_dims(spectra.kernel(v, flipped=True), (0, 2, 1, 3))   # (g, c, o, f)
    taps, out_size = v.shape[2:], geometry.output_size
    images = _image_first(xp, x, layout)

    implicit = _zero_padding_in_transform(geometry, mode, blocks)
    # With the padding left to the transform, output l is the full convolution's l + E − 1 − b.
    starts = [t - 1 - (b if implicit else 0) for t, (b, _) in zip(taps, geometry.padding)]

    def valid(block, sizes):
        return spectra.inverse(channel_products(xp, spectra.forward(block), v_hat), v.shape[0],
                               starts, sizes)

    y = _Assembled(xp, (x.shape[0], v.shape[0], *out_size), xp.result_type(x.dtype, weight.dtype),
                   x)
    for start, stop in _chunks(x.shape[0], blocks.images):
        chunk = images[start:stop, ...]
        if blocks.rows == 0:
            split = chunk if implicit else _space_to_depth(
                xp, pad(xp, chunk, geometry, mode, FIRST), phased)
            y.put(start, stop, 0, valid(split, out_size))
            continue
        for first in range(0, out_size[0], blocks.rows):
            last = min(out_size[0], first + blocks.rows)
            y.put(start, stop, first, valid(
                _phased_rows(xp, chunk, phased, mode, first, last + taps[0] - 1),
                (last - first, *out_size[1:])))
    return _image_back(xp, y.result, layout)


def adjoint(xp, transforms, y, weight, geometry, mode, groups, layout, blocks: FFTBlocks):
    """Cᵀ·y by the FFT: (N, C_out, *O) → (N, C_in, *S) in ``layout``.

    The transpose of ``forward``'s valid correlation is the full convolution with the
    kernel itself, ``û(f) = V̂(f)ᵀ·ŷ(f)``; then the phases back to space and the
    padding's adjoint.  Blocks of rows of u read the rows of y that reach them
    (overlap-save, as ``forward``)."""
    phased = fft_geometry(geometry)
    w = _weight_first(xp, weight, layout)
    v = _kernel_phases(xp, w, phased)
    spectra = _Spectra(xp, transforms, blocks.lengths, _is_real(xp, y, weight), groups)
    v_hat = spectra.kernel(v, flipped=False)                                 # (g, o, c, f)
    channels, reach, rows_out = v.shape[1] * groups, v.shape[2] - 1, phased.phase_length
    grads = _image_first(xp, y, layout)

    def full(block, sizes, starts=None):
        return spectra.inverse(channel_products(xp, spectra.forward(block), v_hat), channels,
                               starts or [0] * len(sizes), sizes)

    # At stride 1 with zero padding the padding's adjoint is a crop: taken in the inverse.
    cropped = mode == "zeros" and blocks.rows == 0 and phased.n_phases == 1
    dtype = xp.result_type(y.dtype, weight.dtype)
    z = _Assembled(xp, (y.shape[0], channels // phased.n_phases, *geometry.input_size), dtype, y)
    for start, stop in _chunks(y.shape[0], blocks.images):
        chunk = grads[start:stop, ...]
        if cropped:
            z.put(start, stop, 0, full(chunk, geometry.input_size,
                                       [b for b, _ in geometry.padding]))
            continue
        if blocks.rows == 0:
            u = full(chunk, rows_out)
        else:
            u = _zeros(xp, (chunk.shape[0], channels, *rows_out), chunk)
            if u.dtype != dtype:
                u = xp.astype(u, dtype)
            for first in range(0, rows_out[0], blocks.rows):
                last = min(rows_out[0], first + blocks.rows)
                low, high = max(0, first - reach), min(chunk.shape[2], last)
                if low < high:       # else rows no output reaches (the padding's far end)
                    block = full(_rows(chunk, low, high), (last - low, *rows_out[1:]))
                    u = xpx.at(u, (slice(None), slice(None), slice(first, last), ...)).set(
                        _rows(block, first - low, last - low))
        padded = _depth_to_space(xp, u, phased)
        z.put(start, stop, 0, pad_adjoint(xp, padded, geometry, mode, FIRST))
    return _image_back(xp, z.result, layout)


def weight_gradient(xp, transforms, a, b, geometry, mode, groups, layout, blocks: FFTBlocks):
    """Σ_n A·P(b)ᵀ shaped like the weight, by the FFT: ``a`` shaped like conv's output, ``b``
    like its input (no conjugation here).

    ``r[o, c, t] = Σ_{n, l} a[n, o, l]·b̃[n, c, l + t]``: R̂(f) = Σ_n â_n(f)·b̂_n(f)ᵀ with â
    the transform of a flipped, summed over chunks and blocks in the frequency domain
    (in a fixed order), one inverse transform at the end."""
    phased = fft_geometry(geometry)
    spectra = _Spectra(xp, transforms, blocks.lengths, _is_real(xp, a, b), groups)
    outputs, inputs = _image_first(xp, a, layout), _image_first(xp, b, layout)
    out_size, taps = geometry.output_size, phased.phase_taps
    span = blocks.rows or out_size[0]                      # a's rows per transform
    total = None

    def add(total, a_block, b_block):
        a_hat = spectra.forward(xp.flip(a_block, axis=_spatial_axes(len(taps))))  # (n, g, o, f)
        b_hat = spectra.forward(b_block)                                          # (n, g, c, f)
        r_hat = channel_products(xp, xp.permute_dims(a_hat, (2, 1, 0, 3)),
                          xp.permute_dims(b_hat, (1, 0, 2, 3)))                    # (o, g, c, f)
        return r_hat if total is None else total + r_hat

    for start, stop in _chunks(a.shape[0], blocks.images):
        chunk = outputs[start:stop, ...]
        if blocks.rows == 0:
            total = add(total, chunk, _space_to_depth(
                xp, pad(xp, inputs[start:stop, ...], geometry, mode, FIRST), phased))
            continue
        for first in range(0, out_size[0], span):
            last = min(out_size[0], first + span)
            a_block = _rows(chunk, first, last)
            if last - first < span:          # every block as long: one alignment of the flip
                extended = _zeros(xp, (*a_block.shape[:2], span, *a_block.shape[3:]), a_block)
                a_block = xpx.at(extended, (slice(None), slice(None), slice(0, last - first),
                                            ...)).set(a_block)
            total = add(total, a_block, _phased_rows(
                xp, inputs[start:stop, ...], phased, mode, first,
                min(phased.phase_length[0], first + span + taps[0] - 1)))
    r_hat = xp.permute_dims(total, (1, 0, 2, 3))                               # (g, o, c, f)
    o_g, c_g = r_hat.shape[1], r_hat.shape[2]
    r_hat = xp.reshape(r_hat, (groups * o_g, 1, c_g, r_hat.shape[3]))
    r = spectra.inverse(r_hat, c_g, [span - 1, *(o - 1 for o in out_size[1:])], taps)
    r = xp.reshape(r, (groups * o_g, c_g, *taps))
    return _weight_back(xp, _kernel_from_phases(xp, r, phased), layout)
