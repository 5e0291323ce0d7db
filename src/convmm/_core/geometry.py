"""Shape arithmetic of a convolution (Dumoulin & Visin, "A guide to convolution
arithmetic for deep learning", with dilation and output padding).

Along one spatial dimension with input size ``i``, kernel size ``k``, stride
``s``, dilation ``d`` and padding ``(p_b, p_a)``, the effective kernel spans
``k_e = d·(k − 1) + 1`` samples and

    o = ⌊(i + p_b + p_a − k_e) / s⌋ + 1                  (convolution)
    i = (o − 1)·s − p_b − p_a + k_e + a,   0 ≤ a          (its transpose)

where ``a`` is the output padding that picks one of the inputs which the
convolution maps to the same ``o``.  A transposed convolution is described
here by the geometry of the *forward* convolution whose adjoint it is, so that
one object (and one cached index table) serves both directions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from .params import PADDING_MODES


@dataclass(frozen=True)
class ConvGeometry:
    """The spatial geometry of one forward convolution; every field has one entry per dim.

    ``input_size`` is the unpadded input, ``padding`` the ``(before, after)``
    pairs, ``output_size`` the number of kernel positions.  ``output_size`` may
    be smaller than the formula's value: the transpose of a convolution whose
    output padding is at least the stride restricts the forward map to the
    first ``output_size`` positions.
    """

    input_size: tuple[int, ...]
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    output_size: tuple[int, ...]

    @property
    def nd(self) -> int:
        return len(self.input_size)

    @property
    def padded_size(self) -> tuple[int, ...]:
        return tuple(i + b + a for i, (b, a) in zip(self.input_size, self.padding))

    @property
    def effective_kernel(self) -> tuple[int, ...]:
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel_size, self.dilation))

    @property
    def n_taps(self) -> int:
        """T = ∏ kernel_size: the rows of the patch matrix per channel."""
        return math.prod(self.kernel_size)

    @property
    def n_positions(self) -> int:
        """L = ∏ output_size: the columns of the patch matrix."""
        return math.prod(self.output_size)

    @property
    def pointwise(self) -> bool:
        """A 1×1 kernel without padding: the (strided) input is the patch matrix."""
        return all(k == 1 for k in self.kernel_size) and not any(
            b or a for b, a in self.padding)

    @property
    def padded_grid_span(self) -> int:
        """The flat padded samples from the first output's window start to the last's,
        inclusive: ``Σ_i (O_i − 1)·s_i·∏_{j>i} P_j + 1`` (P the padded size).  At stride 1
        a kernel swept over every window start of that span computes every output
        (``index_tables.wide_table``'s ``crop[-1] + 1``)."""
        padded = self.padded_size
        return 1 + sum((o - 1) * s * math.prod(padded[i + 1:]) for i, (o, s) in
                       enumerate(zip(self.output_size, self.stride)))


def resolve_padding(spec, input_size, kernel_size, stride, dilation):
    """``(before, after)`` pairs for a canonical padding spec (see ``params.padding_spec``).

    ``"same"`` gives ``o = ⌈i / s⌉`` for any stride, with the odd extra sample
    at the end, as TensorFlow and JAX do; ``"full"`` pads ``k_e − 1`` on both
    sides; ``"valid"`` pads nothing.
    """
    if not isinstance(spec, str):
        return spec
    effective = [d * (k - 1) + 1 for k, d in zip(kernel_size, dilation)]
    if spec == "valid":
        return tuple((0, 0) for _ in input_size)
    if spec == "full":
        return tuple((e - 1, e - 1) for e in effective)
    pairs = []
    for i, e, s in zip(input_size, effective, stride):
        total = max((-(-i // s) - 1) * s + e - i, 0)
        pairs.append((total // 2, total - total // 2))
    return tuple(pairs)


def _formula_output(input_size, kernel_size, stride, dilation, padding):
    return tuple(
        (i + b + a - (d * (k - 1) + 1)) // s + 1
        for i, k, s, d, (b, a) in zip(input_size, kernel_size, stride, dilation, padding)
    )


def _check_mode(padding, input_size, padding_mode):
    """Reflect needs pad < size (it never repeats the edge); circular and symmetric need
    pad <= size (one period, one mirror image)."""
    if padding_mode == "reflect":
        for i, (b, a) in zip(input_size, padding):
            if max(b, a) >= i:
                raise ValueError(
                    f"padding_mode='reflect' needs padding smaller than the input size, "
                    f"got padding {(b, a)} for size {i}"
                )
    elif padding_mode in ("circular", "symmetric"):
        for i, (b, a) in zip(input_size, padding):
            if max(b, a) > i:
                what = "wrap around" if padding_mode == "circular" else "mirror"
                raise ValueError(
                    f"padding_mode={padding_mode!r} cannot {what} more than once: "
                    f"padding {(b, a)} exceeds size {i}"
                )


@lru_cache(maxsize=512)
def conv_geometry(input_size, kernel_size, stride, padding, dilation, padding_mode="zeros"):
    """Geometry of ``conv`` for canonical arguments (tuples, padding spec), validated."""
    assert padding_mode in PADDING_MODES
    pairs = resolve_padding(padding, input_size, kernel_size, stride, dilation)
    if any(i < 1 for i in input_size):
        raise ValueError(f"every spatial size of x must be >= 1, got {input_size}")
    effective = [d * (k - 1) + 1 for k, d in zip(kernel_size, dilation)]
    padded = [i + b + a for i, (b, a) in zip(input_size, pairs)]
    if any(e > p for e, p in zip(effective, padded)):
        raise ValueError(
            f"the kernel (size {kernel_size}, dilation {dilation}, effective size "
            f"{tuple(effective)}) is larger than the padded input {tuple(padded)}"
        )
    _check_mode(pairs, input_size, padding_mode)
    output = _formula_output(input_size, kernel_size, stride, dilation, pairs)
    return ConvGeometry(tuple(input_size), tuple(kernel_size), tuple(stride),
                        tuple(dilation), pairs, output)


@lru_cache(maxsize=512)
def transpose_geometry(input_size, kernel_size, stride, padding, dilation,
                       output_padding, output_size, padding_mode="zeros"):
    """Geometry of the forward convolution whose transpose ``conv_transpose`` computes.

    ``input_size`` is the transposed convolution's input (the forward output);
    the forward input size ``O`` comes from ``output_padding`` or
    ``output_size`` (at most one of them is given).  ``"same"`` without an
    ``output_size`` gives ``O = i·s``, as TensorFlow's transposed convolution.
    """
    if any(i < 1 for i in input_size):
        raise ValueError(f"every spatial size of x must be >= 1, got {input_size}")
    if output_size is not None and any(output_padding):
        raise ValueError("give output_size or output_padding, not both")
    effective = [d * (k - 1) + 1 for k, d in zip(kernel_size, dilation)]

    if padding == "same":
        if any(output_padding):
            raise ValueError(
                "output_padding cannot be combined with padding='same'; give output_size"
            )
        full = output_size if output_size is not None else tuple(i * s for i, s in zip(input_size, stride))
        pairs = resolve_padding("same", full, kernel_size, stride, dilation)
        for o, i, s in zip(full, input_size, stride):
            if -(-o // s) != i:
                raise ValueError(
                    f"output_size {tuple(full)} is not reachable with padding='same' and "
                    f"stride {stride} from an input of size {input_size}"
                )
    else:
        # "valid" and "full" do not depend on the size they are applied to.
        pairs = resolve_padding(padding, input_size, kernel_size, stride, dilation)
        smallest = tuple((i - 1) * s - b - a + e
                         for i, s, (b, a), e in zip(input_size, stride, pairs, effective))
        if output_size is None:
            extra = output_padding
        else:
            extra = tuple(o - m for o, m in zip(output_size, smallest))
            largest = tuple(m + max(s, d) - 1 for m, s, d in zip(smallest, stride, dilation))
            if any(e < 0 for e in extra) or any(o > l for o, l in zip(output_size, largest)):
                raise ValueError(
                    f"output_size {tuple(output_size)} is not reachable: each size must lie "
                    f"between {smallest} and {largest}"
                )
        for a, s, d in zip(extra, stride, dilation):
            if a >= s and a >= d:
                raise ValueError(
                    f"output_padding must be smaller than either stride or dilation, "
                    f"got output_padding {tuple(extra)}, stride {stride}, dilation {dilation}"
                )
        full = tuple(m + a for m, a in zip(smallest, extra))
        if any(o < 1 for o in full):
            raise ValueError(
                f"the transposed convolution's output size {full} is not positive: "
                f"padding {pairs} is too large for this input and kernel"
            )
    _check_mode(pairs, full, padding_mode)
    return ConvGeometry(tuple(full), tuple(kernel_size), tuple(stride), tuple(dilation),
                        pairs, tuple(input_size))
