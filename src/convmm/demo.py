"""``python -m convmm demo``: six worked examples of the lowering, run through the array-API
methods on every backend.

Each example prints the matrices that explain it (the im2col matrix, the
transposed-convolution steps, the matrix C of a convolution), then runs the
computation through every method on every array namespace present and checks
that all of them agree with the literal definition (``convmm.reference``) and,
where one is known, with the value worked out by hand or by SciPy.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.signal

import convmm
from convmm import reference

CONV_METHODS = ("auto", "im2col")
TRANSPOSE_METHODS = ("auto", "im2col", "zero_insertion")


def backends():
    """(name, namespace, to-NumPy) for every namespace present; CuPy only with a GPU."""
    found = [("numpy", np, np.asarray)]
    if importlib.util.find_spec("array_api_strict"):
        import array_api_strict

        found.append(("array_api_strict", array_api_strict, np.from_dlpack))
    if importlib.util.find_spec("torch"):
        import array_api_compat
        import torch

        found.append(("torch", array_api_compat.array_namespace(torch.zeros(1)),
                      lambda a: a.numpy()))
    if importlib.util.find_spec("jax"):
        import array_api_compat
        import jax

        jax.config.update("jax_enable_x64", True)   # the examples are float64, as NumPy's
        found.append(("jax", array_api_compat.array_namespace(jax.numpy.zeros(1)), np.asarray))
    if importlib.util.find_spec("cupy"):
        try:
            import array_api_compat
            import cupy

            if cupy.cuda.runtime.getDeviceCount() > 0:
                found.append(("cupy", array_api_compat.array_namespace(cupy.zeros(1)),
                              lambda a: a.get()))
        except Exception:  # CuPy without a usable GPU
            pass
    return found


@dataclass
class Example:
    title: str
    show: Callable[[], None]                  # prints the matrices that explain it
    run: Callable[[object, str], np.ndarray]  # (namespace, method) -> result (any namespace)
    methods: tuple
    expected: np.ndarray                      # the literal definition's result
    known_value: np.ndarray | None = None     # worked out by hand (or by SciPy), where known


def _matrix(name, a):
    text = np.array2string(np.asarray(a), precision=4, suppress_small=True, max_line_width=120)
    print(f"  {name} =\n" + "\n".join("    " + line for line in text.splitlines()))


def _examples():
    examples = []

    # a 1-d convolution as a banded matrix ---------------------------------------------
    signal = np.array([[[1.0, 2, 4, 5, 3, 0]]])
    kernel = np.array([[[5.0, 4]]])

    def show_banded():
        _matrix("im2col(signal, 2)ᵀ  (one row per output)", convmm.im2col(signal, (2,))[0].T)
        _matrix("banded matrix C = convmm.toeplitz(kernel, (1, 6))",
                convmm.toeplitz(kernel, (1, 6)).toarray())

    examples.append(Example(
        "1-d convolution: signal [1 2 4 5 3 0] ⊛ kernel [5 4] as a banded matrix", show_banded,
        lambda xp, m: convmm.conv(xp.asarray(signal), xp.asarray(kernel), method=m),
        CONV_METHODS, reference.conv(signal, kernel), np.array([[[13.0, 26, 40, 37, 15]]])))

    # transposed convolution by zero insertion -------------------------------------------
    X = np.array([[[[1.0, 2], [3, 4]]]])
    F = np.array([[[[1.0, 0], [0, -1]]]])

    def show_zero_insertion():
        inserted = np.zeros((3, 3))
        inserted[::2, ::2] = X[0, 0]
        _matrix("1) X̂: stride − 1 = 1 zero inserted", inserted)
        _matrix("2) padded by K − 1 − p = 1", np.pad(inserted, 1))
        _matrix("3) F̃: F flipped 180°", np.flip(F[0, 0]))
        _matrix("4) X̃ ⊛ F̃, stride 1  (= X ⊛ᵀ F, stride 2)", convmm.conv_transpose(X, F, stride=2)[0, 0])
        print(f"  Y ⊛ F (stride 2) = X·‖F‖²: "
              f"{np.allclose(convmm.conv(convmm.conv_transpose(X, F, stride=2), F, stride=2), X * np.sum(F ** 2))}")

    examples.append(Example(
        "transposed convolution by zero insertion: [[1 2] [3 4]] ⊛ᵀ [[1 0] [0 −1]], stride 2", show_zero_insertion,
        lambda xp, m: convmm.conv_transpose(xp.asarray(X), xp.asarray(F), stride=2, method=m),
        TRANSPOSE_METHODS, reference.conv_transpose(X, F, stride=2),
        np.array([[[[1.0, 0, 2, 0], [0, -1, 0, -2], [3, 0, 4, 0], [0, -3, 0, -4]]]])))

    X4 = np.array([[[[1.0, 2, -3, 2], [5, 1, 4, -4], [0, -2, 0, -5], [3, 0, -1, 1]]]])
    F3 = np.array([[[[2.0, 1, 4], [0, 3, -5], [-3, 1, -2]]]])

    def show_transposed_name():
        _matrix("Y = X ⊛ F", convmm.conv(X4, F3)[0, 0])
        _matrix("Z = Y ⊛ᵀ F", convmm.conv_transpose(convmm.conv(X4, F3), F3)[0, 0])

    examples.append(Example(
        "why 'transposed': a 4×4 input, a 3×3 filter, and the transpose taking the 2×2 result back to 4×4", show_transposed_name,
        lambda xp, m: convmm.conv_transpose(convmm.conv(xp.asarray(X4), xp.asarray(F3)),
                                            xp.asarray(F3), method=m),
        TRANSPOSE_METHODS, reference.conv_transpose(reference.conv(X4, F3), F3)))

    # a 3×3 filter on a 4×4 input as a 4×16 matrix --------------------------------------
    W = np.arange(1.0, 10).reshape(1, 1, 3, 3)

    def show_matrix():
        C = convmm.toeplitz(W, (1, 4, 4)).toarray()
        _matrix("C = convmm.toeplitz(W, (1, 4, 4)) (4×16), W = 1..9 row-major: Y = C·X", C)
        _matrix("im2col(X) (9×4): Y = W_row · im2col(X)", convmm.im2col(np.arange(16.0).reshape(1, 1, 4, 4), 3)[0])

    x16 = np.arange(16.0).reshape(1, 1, 4, 4)
    examples.append(Example(
        "a 3×3 filter on a 4×4 input as a 4×16 sparse matrix", show_matrix,
        lambda xp, m: convmm.conv(xp.asarray(x16), xp.asarray(W), method=m),
        CONV_METHODS, reference.conv(x16, W)))

    bilinear = convmm.bilinear_kernel(2, 1)   # [[1/4, 1/2, 1/4], [1/2, 1, 1/2], [1/4, 1/2, 1/4]]
    small = np.array([[[[0.0, 1, 2], [3, 4, 5]]]])

    def show_bilinear():
        _matrix("bilinear kernel", bilinear[0, 0])
        _matrix("input", small[0, 0])
        _matrix("conv_transpose(stride 2, padding 1): output (h − 1)·2 − 2 + 3",
                convmm.conv_transpose(small, bilinear, stride=2, padding=1)[0, 0])

    examples.append(Example(
        "bilinear interpolation as a transposed convolution", show_bilinear,
        lambda xp, m: convmm.conv_transpose(xp.asarray(small), xp.asarray(bilinear), stride=2,
                                            padding=1, method=m),
        TRANSPOSE_METHODS, reference.conv_transpose(small, bilinear, stride=2, padding=1),
        np.array([[[[0, .5, 1, 1.5, 2], [1.5, 2, 2.5, 3, 3.5], [3, 3.5, 4, 4.5, 5]]]])))

    # a batched multichannel convolution with stride 2 -------------------------------------
    kernel_2x3 = np.array(
        [[[[0., 1, 0], [1, 2, 1], [0, 1, 0]], [[1, 2, 1], [0, 3, 3], [0, 1, 10]],
          [[10, 11, 12], [13, 14, 15], [16, 17, 18]]],
         [[[0., 1, 1], [1, 2, 1], [0, 1, 0]], [[1, 2, 1], [0, 3, 3], [0, 1, 10]],
          [[10, 11, 12], [13, 14, 15], [16, 17, 18]]]])
    batch = np.arange(2 * 3 * 4 * 4, dtype=np.float64).reshape(2, 3, 4, 4)

    def show_batched():
        _matrix("the weight as a matrix, one row per output channel (2×27)", kernel_2x3.reshape(2, -1))
        _matrix("im2col(input)[0]ᵀ, one row per output position (1×27)", convmm.im2col(batch, 3, stride=2)[0].T)

    examples.append(Example(
        "a batch of 2 images, 3 channels, 4×4, two 3×3 filters, stride 2", show_batched,
        lambda xp, m: convmm.conv(xp.asarray(batch), xp.asarray(kernel_2x3), stride=2, method=m),
        CONV_METHODS, reference.conv(batch, kernel_2x3, stride=2)))

    # a full 2-d convolution as a doubly blocked Toeplitz matrix ---------------------------
    a = np.array([[[[5.0, 1, 3], [1, 1, 2], [2, 1, 3]]]])
    b = np.array([[[[4.0, 3], [1, 2]]]])

    def show_full():
        _matrix("scipy.signal.convolve2d(a, b, 'full')", scipy.signal.convolve2d(a[0, 0], b[0, 0]))
        _matrix("doubly blocked Toeplitz matrix (16×9) = convmm.toeplitz(flip(b), (1, 3, 3), "
                "padding='full')",
                convmm.toeplitz(np.flip(b).copy(), (1, 3, 3), padding="full").toarray())

    examples.append(Example(
        "full 2-d convolution of a 3×3 input with a 2×2 kernel (the kernel flipped), as SciPy's convolve2d", show_full,
        lambda xp, m: convmm.conv(xp.asarray(a), xp.asarray(np.flip(b).copy()), padding="full", method=m),
        CONV_METHODS, reference.conv(a, np.flip(b), padding="full"),
        scipy.signal.convolve2d(a[0, 0], b[0, 0], mode="full")[None, None]))
    return examples


def main() -> int:
    found = backends()
    print(f"convmm {convmm.__version__} demo — backends: {', '.join(name for name, _, _ in found)}\n")
    failures = 0
    for example in _examples():
        print(f"== {example.title}")
        example.show()
        agree = True
        if example.known_value is not None and not np.allclose(example.expected, example.known_value):
            print("  the literal definition disagrees with the value worked out by hand")
            agree = False
        for name, xp, to_numpy in found:
            for method in example.methods:
                result = to_numpy(example.run(xp, method))
                if result.shape != example.expected.shape or not np.allclose(result, example.expected):
                    print(f"  MISMATCH: {name} / method={method}")
                    agree = False
        runs = len(found) * len(example.methods)
        print(f"  all methods agree: {'yes' if agree else 'NO'} "
              f"({len(example.methods)} methods × {len(found)} backends = {runs} runs)\n")
        failures += not agree
    print("all examples agree" if not failures else f"{failures} example(s) disagree")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
