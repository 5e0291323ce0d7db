"""The capability table (``convmm._engines.capabilities``) against what runs: every method
on every namespace of the backend matrix, the refusals and substitutions it names, and
the docs' copy of it."""

import re
from pathlib import Path

import numpy as np
import pytest

import convmm
from convmm._engines import capabilities
from convmm._engines.capabilities import capability, namespace_of, refusal
from helpers import namespace

DOCS = Path(__file__).resolve().parents[1] / "docs" / "auto.md"


def _arrays(xp):
    x = xp.asarray(np.arange(2 * 4 * 6 * 6, dtype=np.float32).reshape(2, 4, 6, 6) / 100)
    w = xp.asarray(np.linspace(-1, 1, 4 * 4 * 3 * 3, dtype=np.float32).reshape(4, 4, 3, 3))
    return x, w


@pytest.mark.parametrize("transposed", [False, True], ids=["conv", "conv_transpose"])
@pytest.mark.parametrize("method", capabilities.METHODS)
def test_every_method_runs_or_is_refused_as_the_table_says(xp, method, transposed):
    """A method the table refuses on this kind of array raises the ValueError the table
    words; any other runs the call's own map and agrees with ``im2col``; explain names
    the method, or what the table runs instead and why."""
    if method == "zero_insertion" and not transposed:
        pytest.skip("zero_insertion is conv_transpose's method only")
    x, w = _arrays(xp)
    function = convmm.conv_transpose if transposed else convmm.conv
    kind = namespace_of(xp, w)
    why = refusal(method, kind)
    if why:
        with pytest.raises(ValueError, match=re.escape(why)):
            function(x, w, padding=1, method=method)
        return
    operation = "adjoint" if transposed else "forward"
    cell = capability(method, kind, operation)
    # A stride-1 adjoint runs as a forward map with the flipped kernel: stride 2 keeps it
    # an adjoint (Winograd's adjoint is that forward map, and runs at stride 1 only).
    keywords = dict(padding=1, stride=2 if transposed and method != "winograd" else 1)
    got = function(x, w, method=method, **keywords)
    want = function(x, w, method="im2col", **keywords)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-5, atol=2e-5)
    text = convmm.explain(function, x, w, method=method, **keywords)
    if not cell.runs:
        assert cell.why in text, text
    elif method not in ("auto", "im2col"):
        assert method in text, text
    if method in ("tiled_blas", "implicit_gemm", "direct", "winograd"):
        assert "; kernel " in text, text        # the plan names the engine's kernels


def test_each_kind_of_array_is_named_by_its_namespace():
    torch = pytest.importorskip("torch")
    assert namespace_of(np, np.ones(1)) == "numpy"
    assert namespace_of(namespace("torch"), torch.ones(1)) == "array API with fft"

    class NoFFT:
        pass

    assert namespace_of(NoFFT(), torch.ones(1)) == "array API"


def test_the_table_has_a_cell_for_every_method_kind_and_map():
    assert len(capabilities.TABLE) == (len(capabilities.METHODS) * len(capabilities.NAMESPACES)
                                       * len(capabilities.OPERATIONS))
    assert all(cell.runs or cell.why for cell in capabilities.TABLE.values())
    assert capabilities.methods("array API with fft") == ("auto", "im2col", "fft")
    assert "winograd" in capabilities.methods("numpy")
    assert "zero_insertion" in capabilities.methods("cupy", "adjoint", transposed=True)


def test_the_docs_print_the_table_as_the_code_has_it():
    text = DOCS.read_text(encoding="utf-8")
    start, end = "<!-- capabilities-start -->", "<!-- capabilities-end -->"
    assert start in text and end in text
    printed = text.split(start, 1)[1].split(end, 1)[0].strip()
    assert printed == capabilities.markdown_table()
