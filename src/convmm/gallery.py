"""``python -m convmm show``: a gallery of the lowering's pictures for the worked examples,
with an ``index.html`` that shows each with one line of explanation."""

from __future__ import annotations

import html
import os
from collections.abc import Callable

import numpy as np

INSTALL = "convmm show draws with matplotlib: pip install 'convmm[plot]'"


def pictures() -> list[tuple[str, str, Callable]]:
    """(file stem, one line of explanation, a function returning a Figure or an
    ``Arithmetic``) for every picture of the gallery."""
    import convmm
    from convmm import plot

    signal_kernel = np.array([[[5.0, 4]]])
    nine = np.arange(1.0, 10).reshape(1, 1, 3, 3)
    flipped = np.flip(np.array([[[[4.0, 3], [1, 2]]]])).copy()
    blur = np.full((1, 1, 3, 3), 1 / 9)
    return [
        ("banded_1d", "A 1-d convolution with the kernel [5 4] as a banded 5×6 matrix: each "
                      "row is one output, each colour one tap.",
         lambda: plot.toeplitz(signal_kernel, (1, 6))),
        ("matrix_4x16", "A 3×3 filter (1…9 row by row) on a 4×4 input as a 4×16 sparse "
                        "matrix: Y = C·X with X flattened row by row.",
         lambda: plot.toeplitz(nine, (1, 4, 4))),
        ("im2col_stride2", "The patch matrix of a 5×5 input, 3×3 kernel, stride 2, padding "
                           "1: each column one patch, read from the numbered input.",
         lambda: plot.im2col((1, 5, 5), 3, stride=2, padding=1)),
        ("reflect_folding", "With reflect padding the padding's samples are copies: taps "
                            "fold onto one input sample (black cells) in C.",
         lambda: plot.toeplitz(np.array([[[1.0, 2, 3]]]), (1, 6), padding=2,
                               padding_mode="reflect")),
        ("transposed_stride2", "[[1 2] [3 4]] transposed-convolved with [[1 0] [0 −1]] at "
                               "stride 2: zeros inserted, padded, the kernel flipped, and "
                               "the stride-1 result, equal to conv_transpose.",
         lambda: plot.conv_transpose_steps(np.array([[[1.0, 2], [3, 4]]]),
                                           np.array([[[[1.0, 0], [0, -1]]]]), stride=2)),
        ("full_convolution", "The doubly blocked Toeplitz matrix (16×9) of the full 2-d "
                             "convolution of a 3×3 input with a 2×2 kernel: blocks of "
                             "Toeplitz blocks.",
         lambda: plot.toeplitz(flipped, (1, 3, 3), padding="full")),
        ("layer_sparsity", "A layer's matrix too large to draw cell by cell (2 to 4 "
                           "channels, 32×32, 3×3, reflect padding): its sparsity, one "
                           "banded block per channel pair, folded taps at the edges.",
         lambda: plot.toeplitz(np.random.default_rng(0).standard_normal((4, 2, 3, 3)),
                               (2, 32, 32), padding=1, padding_mode="reflect")),
        ("bilinear_upsampling", "Bilinear upsampling by 2 as a transposed convolution with "
                                "the tent kernel, stride 2, padding 1.",
         lambda: plot.conv_transpose_steps(np.array([[[0.0, 1, 2], [3, 4, 5]]]),
                                           convmm.bilinear_kernel(2, 1), stride=2,
                                           padding=1)),
        ("spectrum_blur", "A circular 3×3 box blur on 16×16: its singular values, and its "
                          "gain per frequency (1 at zero frequency, falling away from it, "
                          "zero where the box's transfer function vanishes).",
         lambda: plot.spectrum(convmm.ConvOperator(blur, (1, 16, 16), padding=1,
                                                   padding_mode="circular"))),
        ("arithmetic_padding_stride", "Convolution arithmetic: a 3×3 kernel over a 5×5 "
                                      "input, padding 1, stride 2 (3×3 outputs).",
         lambda: plot.arithmetic(5, 3, stride=2, padding=1)),
        ("arithmetic_dilation", "A 3×3 kernel with dilation 2 over a 7×7 input (3×3 "
                                "outputs): the taps 2 apart.",
         lambda: plot.arithmetic(7, 3, dilation=2)),
        ("arithmetic_same_stride2", "\"same\" padding at stride 2 on a 6×6 input: ⌈6/2⌉ = 3 "
                                    "outputs per axis, the one padding sample at the end.",
         lambda: plot.arithmetic(6, 3, stride=2, padding="same")),
        ("arithmetic_transposed", "A transposed convolution, 3×3 input, 3×3 kernel, stride "
                                  "2, padding 1, output padding 1: the stride-1 "
                                  "convolution over the zero-inserted input (6×6 outputs).",
         lambda: plot.arithmetic(3, 3, stride=2, padding=1, transposed=True,
                                 output_padding=1)),
    ]


README_PICTURES = ("matrix_4x16", "transposed_stride2", "full_convolution")
"""The gallery's pictures the README shows, committed under ``docs/pictures`` (a test
checks they are what ``show`` draws now)."""


def render(out: str, image_format: str = "png", only: tuple[str, ...] = ()) -> list[str]:
    """Write every picture (or those named in ``only``, then without an index) into
    ``out`` (``image_format`` for figures, GIF for the animations) and an
    ``index.html``; the file names written."""
    import matplotlib

    matplotlib.use("Agg")
    from convmm.plot import Arithmetic

    known = [stem for stem, _, _ in pictures()]
    unknown = [name for name in only if name not in known]
    if unknown:
        raise SystemExit(f"show --only: no picture named {', '.join(unknown)}; the gallery has "
                         f"{', '.join(known)}")
    os.makedirs(out, exist_ok=True)
    written, items = [], []
    for stem, caption, draw in pictures():
        if only and stem not in only:
            continue
        picture = draw()
        if isinstance(picture, Arithmetic):
            name = f"{stem}.gif"
            picture.save(os.path.join(out, name), dpi=80)
        else:
            name = f"{stem}.{image_format}"
            picture.savefig(os.path.join(out, name), dpi=110)
        written.append(name)
        items.append(f'<figure><img src="{html.escape(name)}" alt="{html.escape(stem)}">'
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    if only:
        return written
    with open(os.path.join(out, "index.html"), "w", encoding="utf-8") as page:
        page.write("<!doctype html>\n<meta charset=\"utf-8\">\n<title>convmm: pictures of "
                   "the lowering</title>\n<style>body{font-family:sans-serif;max-width:72em;"
                   "margin:auto}figure{margin:2em 0}img{max-width:100%}</style>\n"
                   "<h1>convmm: pictures of the lowering</h1>\n" + "\n".join(items) + "\n")
    return [*written, "index.html"]


def main(out: str, image_format: str, only: tuple[str, ...] = ()) -> int:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(INSTALL)
        return 1
    names = render(out, image_format, only)
    print(f"{len(names)} files written to {out}: {', '.join(names)}")
    return 0
