"""The README and the docstrings say what the code does: their examples run, and CI runs
the README's test command."""

import doctest
import importlib
import inspect
import os
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


DOC_PAGES = sorted((ROOT / "docs").glob("*.md"))


@pytest.mark.parametrize("page", DOC_PAGES, ids=[page.name for page in DOC_PAGES])
def test_documentation_page_examples(page):
    """The documentation site's pages: their examples run (the site itself is built in
    CI, .ci/run, with warnings as errors)."""
    pytest.importorskip("torch")
    result = doctest.testfile(str(page), module_relative=False, optionflags=FLAGS)
    assert result.failed == 0
    assert result.attempted > 0 or page.name in ("gpu.md", "index.md")  # index: the README


# The modules that define public functions (each of which has an example), then internal
# modules whose docstrings have examples of their own.
DOCTEST_MODULES = ["_api", "_operator.toeplitz", "_operator.conv_operator", "_operator.bilinear",
                   "_engines.cpu.threads", "reference", "plot"]
INTERNAL_DOCTEST_MODULES = ["_core.geometry", "_core.index_tables", "_core.lowering",
                            "_core.algorithms", "_core.layout", "_core.validation"]


@pytest.mark.parametrize("module", DOCTEST_MODULES + INTERNAL_DOCTEST_MODULES)
def test_docstring_examples(module):
    mod = importlib.import_module(f"convmm.{module}")
    result = doctest.testmod(mod, optionflags=FLAGS)
    assert result.failed == 0
    assert result.attempted > 0 or module in INTERNAL_DOCTEST_MODULES


def _public():
    """(dotted name, object) for every public function, class, method and property."""
    found = []
    import convmm.plot

    for prefix, module in (("convmm", convmm), ("convmm.reference", convmm.reference),
                           ("convmm.plot", convmm.plot)):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isfunction(obj) or inspect.isclass(obj):
                found.append((f"{prefix}.{name}", obj))
            if inspect.isclass(obj) and not issubclass(obj, tuple):
                found += [(f"{prefix}.{name}.{member}", attr) for member, attr in vars(obj).items()
                          if not member.startswith("_")
                          and (inspect.isfunction(attr) or isinstance(attr, property))]
    return found


PUBLIC = _public()


def test_every_public_function_is_in_a_doctested_module():
    """Each public function's example runs: it lives in a module test_docstring_examples runs
    (a function defined elsewhere would slip past the doctests)."""
    doctested = {f"convmm.{m}" for m in DOCTEST_MODULES}
    for name, obj in PUBLIC:
        function = obj.fget if isinstance(obj, property) else obj
        assert function.__module__ in doctested, (name, function.__module__)


@pytest.mark.parametrize("name, obj", PUBLIC, ids=[name for name, _ in PUBLIC])
def test_public_signature_is_fully_annotated(name, obj):
    """Every parameter and the return value carry a type hint that resolves at run time."""
    if isinstance(obj, property):
        assert "return" in inspect.get_annotations(obj.fget, eval_str=True), name
        return
    signature = inspect.signature(obj.__init__ if inspect.isclass(obj) and not issubclass(
        obj, tuple) else obj, eval_str=True)
    for parameter in signature.parameters.values():
        if parameter.name != "self":
            assert parameter.annotation is not inspect.Parameter.empty, (name, parameter.name)
    if not (inspect.isclass(obj) and issubclass(obj, tuple)):
        assert signature.return_annotation is not inspect.Signature.empty, name


# numpydoc's checks that a docstring documents what the signature has: every parameter
# described (PR01, PR07) and none that is not there (PR02), a described return value
# (RT01, RT03), an example (EX01), a docstring at all (GL08).
NUMPYDOC_CHECKS = {"GL08", "PR01", "PR02", "PR07", "RT01", "RT03", "EX01"}


@pytest.mark.parametrize("name, obj", PUBLIC, ids=[name for name, _ in PUBLIC])
def test_public_docstring_is_complete_numpydoc(name, obj):
    validate = pytest.importorskip("numpydoc.validate").validate
    checks = NUMPYDOC_CHECKS - ({"RT01", "EX01"} if isinstance(obj, property) else set())
    errors = [(code, message) for code, message in validate(name)["errors"] if code in checks]
    assert not errors, errors
    function = obj.fget if isinstance(obj, property) else obj
    takes_input = [p for p in inspect.signature(function).parameters if p != "self"]
    containers = ("convmm.ConvGrads", "convmm.plot.Arithmetic")   # results, not checks
    if takes_input and not name.startswith("convmm.reference.") and name not in containers:
        assert "Raises\n" in inspect.getdoc(function), f"{name}: no Raises section"


def test_correct_user_code_passes_the_type_checker():
    """The hints accept what runs: tests/typed_usage.py, correct calls as users write them
    (NumPy integers, the gradients' fields, Literal names), runs and type-checks cleanly."""
    import runpy

    runpy.run_path(str(ROOT / "tests" / "typed_usage.py"))
    pytest.importorskip("mypy")
    done = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental",
                           str(ROOT / "tests" / "typed_usage.py")], cwd=ROOT,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "MYPYPATH": str(ROOT / "src")})
    assert done.returncode == 0, done.stdout + done.stderr


def test_package_is_marked_typed_and_passes_the_type_checker():
    """PEP 561's py.typed marker ships with the package, and mypy (configured in
    pyproject.toml) finds no error in src/."""
    assert (Path(convmm.__file__).parent / "py.typed").is_file()
    pytest.importorskip("mypy")
    done = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr


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
               "jax", "dask", "distributed", "zarr", "matplotlib",
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


def _options(parser):
    """Every option of ``parser`` and of its subcommands' parsers."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _options(sub)
        elif action.option_strings:
            yield parser.prog, action


def test_every_command_line_option_has_help_text(monkeypatch):
    """Every option of ``python -m convmm`` and its commands says what it does (the
    parser is caught as ``main`` builds it)."""
    import argparse

    from convmm import __main__

    captured = {}
    original = argparse.ArgumentParser.parse_args

    def keep(self, *args, **kwargs):
        captured["parser"] = self
        return original(self, *args, **kwargs)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", keep)
    with pytest.raises(SystemExit):
        __main__.main(["--version"])
    options = list(_options(captured["parser"]))
    assert any("--repeats" in action.option_strings for _, action in options)
    for prog, action in options:
        assert action.help, f"{prog} {action.option_strings} has no help text"


def test_subcommands_have_help_and_no_command_prints_it():
    done = subprocess.run([sys.executable, "-m", "convmm"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0
    assert "demo" in done.stdout and "bench" in done.stdout and "--version" in done.stdout
