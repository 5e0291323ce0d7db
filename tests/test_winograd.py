"""The Winograd lowering: its exact transforms, and every map it serves against the
definition, on random configurations (every rank, padding mode, dilation, group count,
layout and dtype), with both tile sizes."""

import dataclasses
import importlib.util
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import convmm
from convmm import reference
from convmm._core.winograd import LINES, OUTPUT_TILE, transform
from helpers import assert_close, make_conv_inputs, random_config, tune, wide

# One worker runs this file: on a cold cache its first tests compile the Winograd kernels,
# which two workers would otherwise compile at the same time.
pytestmark = pytest.mark.xdist_group("winograd")

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("m, r", LINES)
def test_transforms_compute_the_correlation_exactly(m, r):
    """Aᵀ[(G g) ⊙ (Bᵀ d)] = Σ_k g_k d_{i+k} on exact rationals; the float64 matrices are
    those rationals rounded (Aᵀ and Bᵀ small integers, exactly)."""
    t = transform(m, r)
    rng = np.random.default_rng(m * 10 + r)
    d = [Fraction(int(v)) for v in rng.integers(-9, 10, t.alpha)]
    g = [Fraction(int(v)) for v in rng.integers(-9, 10, r)]
    at, gm, bt = t.exact
    for rows, matrix in zip(t.exact, (t.AT, t.G, t.BT)):
        assert np.array_equal(matrix, [[float(v) for v in row] for row in rows])
    u = [sum(gm[j][k] * g[k] for k in range(r)) for j in range(t.alpha)]
    v = [sum(bt[j][c] * d[c] for c in range(t.alpha)) for j in range(t.alpha)]
    y = [sum(at[i][j] * u[j] * v[j] for j in range(t.alpha)) for i in range(m)]
    assert y == [sum(g[k] * d[i + k] for k in range(r)) for i in range(m)]
    assert np.all(t.BT == np.round(t.BT)) and np.all(t.AT == np.round(t.AT))


def test_the_line_transforms_are_generated():
    """src/convmm/_engines/cpu/winograd_lines.py is what tools/generate_winograd.py writes."""
    spec = importlib.util.spec_from_file_location("generator", ROOT / "tools" / "generate_winograd.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    target = ROOT / "src" / "convmm" / "_engines" / "cpu" / "winograd_lines.py"
    assert target.read_text(encoding="utf-8") == generator.source()


def _stride_one(rng, **keywords):
    while True:
        cfg = random_config(rng, **keywords)
        if max(cfg.kernel) <= max(OUTPUT_TILE):
            return dataclasses.replace(cfg, stride=(1,) * cfg.nd)


@pytest.fixture(params=[2, 0], ids=["F2", "largest"])
def tile(request, monkeypatch):
    tune(monkeypatch, winograd_tile=request.param)
    return request.param


@pytest.mark.parametrize("seed", range(30))
def test_winograd_conv(seed, tile):
    rng = np.random.default_rng(seed)
    cfg = _stride_one(rng)
    x, w, b = make_conv_inputs(rng, cfg)
    kept = x.copy(), w.copy()
    kw = cfg.kwargs(padding_mode=cfg.padding_mode)
    got = convmm.conv(x, w, b, method="winograd", **kw)
    want = reference.conv(wide(x), wide(w), wide(b), **kw)
    # F(4×4, 3×3)'s transforms lose about a digit in float32 (tools/winograd_accuracy.py).
    assert_close(got, want, np, dtype=cfg.dtype, factor=1 if tile == 2 else 16)
    np.testing.assert_array_equal(x, kept[0])
    np.testing.assert_array_equal(w, kept[1])
    assert "winograd" in convmm.explain(convmm.conv, x, w, b, method="winograd", **kw)


@pytest.mark.parametrize("seed", range(20))
def test_winograd_runs_stride_one_transposes_and_input_gradients(seed, tile):
    rng = np.random.default_rng(100 + seed)
    cfg = _stride_one(rng, modes=("zeros",))
    x, w, _ = make_conv_inputs(rng, cfg)
    kw = cfg.kwargs(padding_mode="zeros")
    y = convmm.conv(x, w, method="im2col", **kw)
    g = np.ones_like(y) if y.size == 0 else y[::-1].copy()
    got = convmm.conv_backward(g, x, w, method="winograd", **kw)
    want = reference.conv_backward(wide(g), wide(x), wide(w), **kw)
    assert_close(got.input, want[0], np, dtype=cfg.dtype, factor=1 if tile == 2 else 16)
    assert_close(got.weight, want[1], np, dtype=cfg.dtype)
    plans = convmm.explain(convmm.conv_backward, g, x, w, method="winograd", **kw)
    # The adjoint is a stride-1 forward map where the flipped padding d·(K − 1) − p is
    # not negative (and the kernel is not 1×1); otherwise another method runs it.
    first = plans.splitlines()[0]
    assert ("flipped kernel (stride 1, zero padding: no col2im); forward: winograd:" in first
            or "(winograd: this adjoint is no stride-1 convolution with the flipped" in first
            or "(winograd: its transforms take kernels of at most" in first), first


def test_winograd_refuses_what_it_cannot_compute():
    """conv and conv_transpose refuse where their one map cannot run Winograd (and
    explain says the same); a backward pass runs another method for such a map."""
    x, w = np.ones((1, 2, 9, 9)), np.ones((2, 2, 3, 3))
    with pytest.raises(ValueError, match="stride-1"):
        convmm.conv(x, w, stride=2, method="winograd")
    with pytest.raises(ValueError, match="at most 5 taps"):
        convmm.conv(x, np.ones((2, 2, 7, 7)), method="winograd")
    with pytest.raises(ValueError, match="at most 5 taps"):      # a stride-1 transpose
        convmm.conv_transpose(np.ones((1, 4, 10, 10)), np.ones((4, 3, 7, 7)), method="winograd")
    for keywords in (dict(stride=2), dict(padding=1, padding_mode="reflect"), dict(padding=3)):
        with pytest.raises(ValueError, match="no stride-1 convolution with the flipped"):
            convmm.conv_transpose(x, w, method="winograd", **keywords)
        with pytest.raises(ValueError, match="no stride-1 convolution with the flipped"):
            convmm.explain(convmm.conv_transpose, x, w, method="winograd", **keywords)
    import array_api_strict as xp
    with pytest.raises(ValueError, match="NumPy arrays"):
        convmm.conv(xp.asarray(x), xp.asarray(w), method="winograd")
    # A backward pass runs every map, another method where Winograd cannot, and says why.
    g = np.ones((1, 4, 10, 10))
    grads = convmm.conv_backward(g, np.ones((1, 3, 10, 10)), np.ones((4, 3, 7, 7)), padding=3,
                                 method="winograd")
    assert grads.input.shape == (1, 3, 10, 10)
    plans = convmm.explain(convmm.conv_backward, np.ones((1, 2, 4, 4)), x, w, stride=2,
                           method="winograd", needs=("input", "weight"))
    assert "winograd: this adjoint is no stride-1 convolution" in plans
    assert "winograd: it runs forward maps and stride-1 adjoints, not weight gradients" in plans


def test_a_substitute_for_winograd_falls_back_as_auto_would():
    """Where Winograd's substitute would need an index table over the limit, it falls
    back as "auto" does instead of refusing a method the user never named."""
    x, w = np.zeros((1, 4, 600, 600)), np.zeros((4, 4, 5, 5))
    plans = convmm.explain(convmm.conv_backward, x, x, w, padding=2, method="winograd")
    assert "weight: im2col" in plans and "index table" in plans
    assert convmm.conv_backward(x, x, w, padding=2, method="winograd").weight.shape == w.shape


def test_winograd_is_deterministic_and_agrees_with_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 16, 23, 19)).astype(np.float32)
    w = rng.standard_normal((24, 16, 3, 3)).astype(np.float32)
    first = convmm.conv(x, w, padding=1, method="winograd")
    np.testing.assert_array_equal(convmm.conv(x, w, padding=1, method="winograd"), first)
    want = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding=1)
    np.testing.assert_allclose(first, want.numpy(), rtol=1e-4, atol=1e-4)
