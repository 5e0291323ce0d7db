"""The README and the docstrings say what the code does: their examples run, and CI runs
the README's test command."""

import doctest
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import convmm

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _commands():
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one():
    commands = _commands()
    assert len(commands) == 2, commands
    demo, tests = commands
    assert demo.endswith("python -m convmm demo")
    assert tests.endswith("python -m pytest")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in [line.strip() for line in ci]


def test_readme_examples():
    pytest.importorskip("torch")
    result = doctest.testfile(str(README), module_relative=False, optionflags=FLAGS)
    assert result.attempted > 10 and result.failed == 0


@pytest.mark.parametrize("module", ["_api", "_core.geometry", "_core.index_plans", "_core.lowering",
                                    "_core.algorithms", "_core.layout", "_core.validation",
                                    "_operator.toeplitz", "_operator.conv_operator",
                                    "_operator.bilinear"])
def test_docstring_examples(module):
    mod = importlib.import_module(f"convmm.{module}")
    result = doctest.testmod(mod, optionflags=FLAGS)
    assert result.failed == 0


def test_demo_runs_and_all_methods_agree():
    done = subprocess.run([sys.executable, "-m", "convmm", "demo"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Warning" not in done.stderr, done.stderr
    assert "all examples agree" in done.stdout
    assert done.stdout.count("all methods agree: yes") == 7


def test_import_loads_no_kernel_and_no_framework():
    """Importing convmm imports numba itself (so that a first call does not pay for it) but
    defines no kernel, so nothing compiles or loads from the cache; no framework either."""
    modules = ("numba", "threadpoolctl", "torch", "cupy", "array_api_strict", "numba_cuda",
               "convmm._engines.cpu.gemm", "convmm._engines.cpu.kernels",
               "convmm._engines.cpu.microkernel", "convmm._engines.cuda.kernels",
               "convmm._engines.cuda.gemm")
    code = f"import sys, convmm; print(sorted(m for m in {modules!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "['numba']", done.stdout + done.stderr


def test_public_names():
    for name in ("conv", "conv_transpose", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
                 "conv_transpose2d", "conv_transpose3d", "conv_backward", "conv_transpose_backward",
                 "im2col", "col2im", "conv_output_shape", "conv_transpose_output_shape", "reference",
                 "toeplitz", "ConvOperator", "bilinear_kernel", "upsample_bilinear"):
        assert hasattr(convmm, name), name
