"""The pictures of the lowering (convmm.plot), rendered headless: what they draw is
convmm's own result, and bad input gets the pictured function's errors."""

import subprocess
import sys

import numpy as np
import pytest

import convmm

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
from convmm import plot  # noqa: E402

TOEPLITZ_CASES = [
    (np.arange(1., 10).reshape(1, 1, 3, 3), (1, 4, 4), {}),
    (np.array([[[1., 2, 3]], [[-1, -2, -3]]]), (1, 6), dict(padding=2, padding_mode="reflect")),
    (np.ones((2, 2, 2, 2)), (2, 3, 3), dict(stride=2, padding=1, padding_mode="circular")),
    (np.ones((3, 2, 1, 2)), (4, 3, 1), dict(data_format="channels_last", padding=1,
                                            padding_mode="symmetric")),
    (np.arange(1., 7).reshape(2, 1, 3), (2, 7), dict(groups=2, dilation=2, padding="same")),
]


@pytest.mark.parametrize("weight, shape, keywords", TOEPLITZ_CASES)
def test_toeplitz_colours_exactly_the_non_zeros_by_tap(weight, shape, keywords):
    figure = plot.toeplitz(weight, shape, **keywords)
    codes = np.asarray(figure.axes[0].images[0].get_array())
    dense = convmm.toeplitz(weight, shape, format="dense", **keywords)
    assert codes.shape == dense.shape
    np.testing.assert_array_equal(codes != 0, dense != 0)
    taps = int(np.prod(weight.shape[2:] if keywords.get("data_format") != "channels_last"
                       else weight.shape[:-2]))
    assert codes.min() >= 0 and codes.max() <= taps + 1
    figure.canvas.draw()                     # renders without error


def test_toeplitz_marks_folded_taps_and_each_tap_once():
    """Reflect padding folds two taps onto one sample at each end (the black cells);
    elsewhere each coloured cell is the one tap that reads it."""
    weight, shape, keywords = TOEPLITZ_CASES[1]
    codes = np.asarray(plot.toeplitz(weight, shape, **keywords).axes[0].images[0].get_array())
    assert (codes == 4).sum() == 2 * 2          # two folded cells per output channel
    row = codes[3]                              # an interior output: taps 1, 2, 3 in order
    assert list(row[row > 0]) == [1, 2, 3]


SPARSITY_CASES = [
    # One pixel per cell (288×288 cells, over DENSE_CELLS), then binned (1600×1600 and
    # 3200×1800 into 512×512 pixels), every layout and a folding padding mode.
    (np.ones((2, 2, 3, 3)), (2, 12, 12), dict(padding=1, padding_mode="reflect")),
    (np.ones((1, 1, 3, 3)), (1, 40, 40), dict(padding="same", padding_mode="circular")),
    (np.ones((2, 2, 1, 3)), (30, 20, 3), dict(data_format="channels_last", groups=3,
                                               stride=(1, 2), padding=1,
                                               padding_mode="symmetric")),
    (np.ones((2, 1, 5)), (1, 1000), dict(dilation=3, padding=6, padding_mode="replicate")),
]


@pytest.mark.parametrize("weight, shape, keywords", SPARSITY_CASES)
def test_toeplitz_draws_large_matrices_as_a_sparsity_picture(weight, shape, keywords):
    """Every pixel holding a non-zero of convmm.toeplitz's C is coloured and no other;
    its colour is the one tap its cells carry, black where taps fold, grey where the
    cells of one pixel carry different taps."""
    figure = plot.toeplitz(weight, shape, **keywords)
    codes = np.asarray(figure.axes[0].images[0].get_array())
    matrix = convmm.toeplitz(weight, shape, format="coo", **keywords)
    rows, columns = matrix.shape
    assert rows * columns > plot.DENSE_CELLS
    height, width = min(rows, plot.SPARSITY_PIXELS), min(columns, plot.SPARSITY_PIXELS)
    assert codes.shape == (height, width)
    occupied = np.zeros((height, width), dtype=bool)
    occupied[matrix.row * height // rows, matrix.col * width // columns] = True
    np.testing.assert_array_equal(codes != 0, occupied)
    # Each cell's own code, from the matrices of one tap at a time.
    kernel = weight.shape[2:] if keywords.get("data_format") != "channels_last" else weight.shape[:-2]
    taps = int(np.prod(kernel))
    cells = {}
    for t in range(taps):
        indicator = np.zeros(weight.shape)
        index = np.unravel_index(t, kernel)
        if keywords.get("data_format") == "channels_last":
            indicator[index] = 1
        else:
            indicator[(slice(None), slice(None), *index)] = 1
        carries = convmm.toeplitz(indicator, shape, format="coo", **keywords)
        for r, c in zip(*(index[carries.data != 0] for index in carries.coords)):
            cells.setdefault((r * height // rows, c * width // columns), {}).setdefault(
                (r, c), set()).add(t + 1)
    for (i, j), by_cell in cells.items():
        per_cell = {next(iter(t)) if len(t) == 1 else taps + 1 for t in by_cell.values()}
        assert codes[i, j] == (per_cell.pop() if len(per_cell) == 1 else taps + 2), (i, j)
    title = figure.axes[0].get_title()
    assert f"{matrix.nnz} non-zeros" in title
    assert ("one pixel per cell" in title) == ((height, width) == (rows, columns))
    figure.canvas.draw()


@pytest.mark.parametrize("shape, kernel, keywords", [
    ((1, 5, 5), 3, dict(stride=2, padding=1)),
    ((2, 6), (3,), dict(dilation=2, padding="same", padding_mode="reflect")),
    ((4, 4, 3), (2, 2), dict(data_format="channels_last", padding=1, padding_mode="replicate")),
])
def test_im2col_draws_im2cols_columns_and_outlines_their_patches(shape, kernel, keywords):
    figure = plot.im2col(shape, kernel, **keywords)
    drawn = np.asarray(figure.axes[1].images[0].get_array())
    numbered = np.arange(np.prod(shape), dtype=float).reshape(shape) + 1
    kernel = kernel if isinstance(kernel, tuple) else (kernel,) * (len(shape) - 1)
    cols = convmm.im2col(numbered, kernel, **keywords) - 1
    first = keywords.get("data_format", "channels_first") == "channels_first"
    np.testing.assert_array_equal(drawn, cols if first else cols.T)
    # The first outlined patch on the left, tap by tap, reads the samples of column 0.
    from matplotlib.colors import to_rgba

    from convmm._core.index_tables import coordinate_source

    outline = to_rgba(matplotlib.colormaps["tab10"](0))
    centres = [(p.get_x() + p.get_width() / 2, p.get_y() + p.get_height() / 2)
               for p in figure.axes[0].patches
               if p.get_linestyle() == "solid" and np.allclose(to_rgba(p.get_edgecolor()), outline)]
    taps = int(np.prod(kernel))
    assert len(centres) == taps
    spatial = shape[1:] if first else shape[:-1]
    mode = keywords.get("padding_mode", "zeros").replace("edge", "replicate")
    channels = shape[0] if first else shape[-1]
    plane = (numbered[0] if first else np.moveaxis(numbered, -1, 0)[0]).reshape(-1)
    read = []
    for x, y in centres:
        at = [round(y), round(x)] if len(spatial) == 2 else [round(x)]
        src = [int(coordinate_source(np.array([a]), n, mode)[0]) for a, n in zip(at, spatial)]
        flat = int(np.ravel_multi_index(src, spatial)) if min(src) >= 0 else None
        read.append(-1 if flat is None else plane[flat] - 1)
    column = drawn[:taps, 0] if first else drawn[0::channels, 0][:taps]
    np.testing.assert_array_equal(read, column)
    figure.canvas.draw()


def test_pictures_raise_what_the_pictured_function_raises():
    with pytest.raises(ValueError, match="padding_mode"):
        plot.toeplitz(np.ones((1, 1, 3)), (1, 6), padding_mode="mirror")
    with pytest.raises(ValueError, match="kernel"):
        plot.im2col((1, 2, 2), 5)
    with pytest.raises(ValueError, match="1 or 2 spatial dims"):
        plot.im2col((1, 3, 3, 3), 2)
    with pytest.raises(ValueError, match="at most 4000000 non-zeros.*has 8667136"):
        plot.toeplitz(np.ones((64, 64, 3, 3)), (64, 16, 16), padding=1)


def test_importing_convmm_imports_no_matplotlib_and_plot_says_how_to_get_it():
    code = "import sys, convmm; print('matplotlib' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.strip() == "False", done.stderr
    blocked = ("import sys; sys.modules['matplotlib'] = None\n"
               "try:\n    import convmm.plot\nexcept ImportError as e:\n    print(e)")
    done = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True,
                          timeout=60)
    assert "pip install 'convmm[plot]'" in done.stdout, done.stdout + done.stderr


@pytest.mark.parametrize("x, weight, keywords", [
    (np.array([[[1., 2], [3, 4]]]), np.array([[[[1., 0], [0, -1]]]]), dict(stride=2)),
    (np.array([[1., 2, 3]]), np.array([[[1., 2, 3]]]), dict(stride=2, padding=1,
                                                            output_padding=1)),
    (np.arange(12.).reshape(1, 1, 3, 4), np.ones((1, 1, 2, 3)),
     dict(stride=(2, 1), padding=((1, 0), (2, 1)), dilation=(1, 2))),
    (np.array([[1., -1, 2, 0, 3]]), np.array([[[2., 1]]]), dict(stride=3, padding=2)),
])
def test_conv_transpose_steps_follow_the_recipe_and_agree_with_conv_transpose(x, weight,
                                                                             keywords):
    figure = plot.conv_transpose_steps(x, weight, **keywords)
    panels = [np.asarray(axes.images[0].get_array()) for axes in figure.axes[:8]]
    want = convmm.conv_transpose(x, weight, **keywords)
    want = want.reshape(want.shape[-(weight.ndim - 2):])
    np.testing.assert_array_equal(panels[5].reshape(want.shape), want)
    np.testing.assert_allclose(panels[4].reshape(want.shape), want, atol=1e-12)
    steps = keywords["stride"] if isinstance(keywords["stride"], tuple) else (
        (keywords["stride"],) * (weight.ndim - 2))
    inserted = panels[1].reshape(tuple((n - 1) * s + 1 for n, s in zip(
        x.shape[-(weight.ndim - 2):], steps)))
    np.testing.assert_array_equal(inserted[tuple(slice(None, None, s) for s in steps)],
                                  x.reshape(x.shape[-(weight.ndim - 2):]))
    assert inserted.sum() == x.sum()            # only zeros were inserted
    # The Cᵀ view: toeplitz's matrix of the forward convolution, transposed, times x.
    forward = {k: v for k, v in keywords.items() if k != "output_padding"}
    C = convmm.toeplitz(weight, (1, *want.shape), format="dense", **forward)
    np.testing.assert_array_equal(panels[6], C.T)
    np.testing.assert_allclose(panels[7].reshape(want.shape),
                               (C.T @ x.reshape(-1)).reshape(want.shape), atol=1e-12)
    assert "differ by at most 0" in figure._suptitle.get_text()


def test_conv_transpose_steps_draws_one_channel_and_explicit_padding():
    with pytest.raises(ValueError, match="one channel in and out"):
        plot.conv_transpose_steps(np.ones((1, 2, 3)), np.ones((2, 1, 2)))
    with pytest.raises(ValueError, match="explicit padding"):
        plot.conv_transpose_steps(np.ones((1, 1, 3)), np.ones((1, 1, 2)), padding="same")


@pytest.mark.parametrize("weight, shape, keywords", [
    (np.ones((1, 1, 3, 3)) / 9, (1, 8, 8), dict(padding=1, padding_mode="circular")),
    (np.random.default_rng(0).standard_normal((3, 2, 3, 3)), (2, 6, 5),
     dict(padding=1, padding_mode="circular")),
    (np.random.default_rng(1).standard_normal((2, 2, 3)), (2, 9), dict(stride=2, padding=1)),
])
def test_spectrum_draws_the_operators_singular_values_and_gains(weight, shape, keywords):
    op = convmm.ConvOperator(weight, shape, **keywords)
    figure = plot.spectrum(op)
    drawn = np.asarray(figure.axes[0].lines[0].get_ydata())
    np.testing.assert_allclose(drawn, np.sort(op.singular_values())[::-1], atol=1e-12)
    if len(shape) == 3:
        gain = np.asarray(figure.axes[1].images[0].get_array())
        assert gain.shape == shape[1:]
        # A circular convolution's norm is its largest gain over the frequencies.
        np.testing.assert_allclose(gain.max(), op.norm(), rtol=1e-10)
    figure.canvas.draw()


def test_spectrum_takes_an_operator():
    with pytest.raises(TypeError, match="ConvOperator"):
        plot.spectrum(np.ones((3, 3)))


@pytest.mark.parametrize("size, kernel, keywords", [
    (5, 3, dict(stride=2, padding=1)),
    ((6, 5), (3, 2), dict(stride=(1, 2), padding=((1, 0), (0, 1)), dilation=(2, 1))),
    (4, 3, dict(padding="full")),
])
def test_arithmetic_frames_cover_the_samples_each_output_reads(size, kernel, keywords):
    """Each frame's taps, where they fall on the input, are the samples convmm's own
    matrix C reads for that output (the non-zeros of its row)."""
    animation = plot.arithmetic(size, kernel, **keywords)
    size = size if isinstance(size, tuple) else (size, size)
    kernel = kernel if isinstance(kernel, tuple) else (kernel, kernel)
    C = convmm.toeplitz(np.ones((1, 1, *kernel)), (1, *size), format="dense", **keywords)
    pairs = convmm.resolve_padding(size, kernel, **keywords)
    assert len(animation.frames) == C.shape[0]
    for k, cells in enumerate(animation.frames):
        read = {(i - pairs[0][0]) * size[1] + (j - pairs[1][0]) for i, j in cells
                if 0 <= i - pairs[0][0] < size[0] and 0 <= j - pairs[1][0] < size[1]}
        assert read == set(np.flatnonzero(C[k])), k


def test_arithmetic_of_a_transposed_convolution_and_its_gif(tmp_path):
    """Transposed: frame k covers the inserted input samples whose forward window holds
    output k (column k of the forward C), and the animation saves as a GIF."""
    size, kernel, stride, padding = (3, 3), (3, 3), (2, 2), (1, 1)
    animation = plot.arithmetic(size, kernel, stride=stride, padding=padding,
                                transposed=True, output_padding=1)
    out = convmm.conv_transpose_output_shape(size, kernel, stride=stride, padding=padding,
                                             output_padding=1)
    C = convmm.toeplitz(np.ones((1, 1, *kernel)), (1, *out), stride=stride, padding=padding,
                        format="dense")
    before = [k - 1 - p for k, p in zip(kernel, padding)]
    assert len(animation.frames) == C.shape[1]
    for k, cells in enumerate(animation.frames):
        read = set()
        for i, j in cells:
            a, b = i - before[0], j - before[1]
            if a % stride[0] == 0 and b % stride[1] == 0 and 0 <= a // stride[0] < size[0] \
                    and 0 <= b // stride[1] < size[1]:
                read.add(a // stride[0] * size[1] + b // stride[1])
        assert read == set(np.flatnonzero(C[:, k])), k
    path = tmp_path / "transposed.gif"
    animation.save(path, dpi=40)
    from PIL import Image

    with Image.open(path) as image:
        assert image.n_frames == len(animation.frames)


def test_the_gallery_command_writes_every_picture_and_an_index(tmp_path):
    from convmm import gallery

    done = subprocess.run([sys.executable, "-m", "convmm", "show", "--out", str(tmp_path),
                           "--format", "svg"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    stems = [stem for stem, _, _ in gallery.pictures()]
    index = (tmp_path / "index.html").read_text()
    for stem in stems:
        names = [p.name for p in tmp_path.glob(f"{stem}.*")]
        assert len(names) == 1 and names[0].endswith((".svg", ".gif")), (stem, names)
        assert (tmp_path / names[0]).stat().st_size > 1000
        assert f'src="{names[0]}"' in index
    assert f"{len(stems) + 1} files written" in done.stdout


def test_the_gallery_says_how_to_install_matplotlib_without_it(tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from convmm.__main__ import main\n"
            f"sys.exit(main(['show', '--out', {str(tmp_path)!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1 and "pip install 'convmm[plot]'" in done.stdout


def test_the_readmes_pictures_are_what_show_draws_now(tmp_path):
    """The README's pictures, committed under docs/pictures, against a fresh drawing by
    ``python -m convmm show`` (matplotlib's image comparison, a small RMS tolerance for
    anti-aliasing).  To update them: python -m convmm show --out docs/pictures --only
    matrix_4x16 transposed_stride2 full_convolution."""
    from pathlib import Path

    from matplotlib.testing.compare import compare_images

    from convmm import gallery

    committed = Path(__file__).resolve().parent.parent / "docs" / "pictures"
    gallery.render(str(tmp_path), "png", gallery.README_PICTURES)
    for stem in gallery.README_PICTURES:
        difference = compare_images(str(committed / f"{stem}.png"), str(tmp_path / f"{stem}.png"),
                                    tol=2)
        assert difference is None, (f"docs/pictures/{stem}.png is out of date ({difference}); "
                                    "regenerate it as this test's docstring says")


def test_the_bench_chart_draws_each_ratio(tmp_path):
    from convmm._bench.reports import plot_report

    report = dict(peer="torch", backend="numpy", dtype="float32", date="2026-11-30",
                  results=[dict(layer="a", which="forward", ratio=0.5),
                           dict(layer="a", which="backward", ratio=1.5),
                           dict(layer="b", which="forward", ratio=2.0),
                           dict(layer="b", which="backward", ratio=None, refused="no")],
                  large=[dict(case="blur", peer="scipy", ratio=0.9, target=1.0)])
    figure = plot_report(report, tmp_path / "chart.png")
    heights = [round(p.get_height(), 6) for p in figure.axes[0].patches]
    assert heights == [0.5, 2.0, 1.5, 0.0]        # forward a, b; backward a, (b refused)
    assert [p.get_height() for p in figure.axes[1].patches] == [0.9]
    assert (tmp_path / "chart.png").stat().st_size > 1000
