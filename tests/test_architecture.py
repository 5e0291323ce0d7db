"""The package's layers, read from the source: imports run one way, public → operator →
engines → core, with no cycle; the core imports no numba and no engine; kernels never
import the policy; the CPU and CUDA engines' files are named alike."""

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "convmm"
LAYERS = ("_core", "_engines", "_chunked", "_operator")   # below them: the public modules
KERNELS = ("convmm._engines.cpu.kernels", "convmm._engines.cpu.gemm",
           "convmm._engines.cpu.microkernel", "convmm._engines.cpu.microkernel_8x32",
           "convmm._engines.cpu.microkernel_6x16", "convmm._engines.cpu.winograd",
           "convmm._engines.cpu.winograd_lines", "convmm._engines.cuda.kernels",
           "convmm._engines.cuda.gemm")


def _modules():
    """{module name: path} of every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(name, path):
    """The modules ``name`` imports, at module level or inside functions, resolved to
    absolute names (the package's own and third-party ones alike)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:   # ``from . import kernels`` names a module
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in MODULES else base)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(name):
    """0 core, 1 engines, 2 the chunked executor, 3 operator, 4 the public modules (and the
    package itself)."""
    parts = name.split(".")
    if len(parts) > 1 and parts[1] in LAYERS:
        return LAYERS.index(parts[1])
    return len(LAYERS)


def test_every_wing_is_there():
    for wing in ("_core", "_engines", "_engines.cpu", "_engines.cuda", "_chunked", "_operator",
                 "_bench"):
        assert f"convmm.{wing}" in MODULES, wing
    assert len(GRAPH) > 20


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_run_one_way(name):
    """A module imports the package's modules of its own layer or below, never above."""
    above = sorted(other for other in GRAPH[name]
                   if other.startswith("convmm") and _layer(other) > _layer(name))
    assert not above, f"{name} imports {above}, a layer above it"


@pytest.mark.parametrize("name", sorted(m for m in MODULES if _layer(m) == 0))
def test_core_imports_no_numba(name):
    assert not any(m == "numba" or m.startswith(("numba.", "numba_cuda"))
                   for m in GRAPH[name]), GRAPH[name]


@pytest.mark.parametrize("name", KERNELS)
def test_kernels_never_import_the_policy(name):
    own = {m for m in GRAPH[name] if m.startswith("convmm.")}
    assert own <= set(KERNELS) - {name}, own


def test_no_import_cycle():
    own = {name: {m for m in imports if m in MODULES and m != name}
           for name, imports in GRAPH.items()}
    # A package's __init__ runs before its submodules: an edge into a package is real.
    state = {}

    def visit(name, path):
        state[name] = "open"
        for other in sorted(own[name]):
            if state.get(other) == "open":
                pytest.fail(" → ".join(path + [name, other]))
            if other not in state:
                visit(other, path + [name])
        state[name] = "done"

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(own)))
    for name in sorted(own):
        if name not in state:
            visit(name, [])


def test_cpu_and_cuda_engines_name_their_files_alike():
    def files(device):
        return {p.name for p in (PACKAGE / "_engines" / device).glob("*.py")}

    shared = {"__init__.py", "engine.py", "kernels.py", "gemm.py"}
    assert shared <= files("cpu") and shared <= files("cuda")


def test_the_spectrum_is_computed_in_a_room_of_its_own():
    """``ConvOperator`` applies C; its norm, bound and singular values are computed in
    ``_operator/spectrum.py``, which its methods call: the operator's code (its docstrings
    aside) names no eigensolver, SVD or transform."""
    tree = ast.parse(MODULES["convmm._operator.conv_operator"].read_text(encoding="utf-8"))
    names = ({node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
             | {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)})
    assert not names & {"eigsh", "svdvals", "svd", "fftn", "rfftn", "transfer_matrices"}
    assert "convmm._operator.spectrum" in GRAPH["convmm._operator.conv_operator"]


def test_the_bench_stays_out_of_the_library():
    """The bench (``convmm._bench``, the harness behind ``python -m convmm bench``) is no
    part of the library: nothing imports it but the command line, and it reaches the
    library only through the public modules, the engines and the core."""
    bench = {name for name in MODULES if name.split(".")[:2] == ["convmm", "_bench"]}
    assert {"convmm._bench", "convmm._bench.cli"} <= bench
    importers = sorted(name for name, imports in GRAPH.items()
                       if name not in bench and imports & bench)
    assert importers == ["convmm.__main__"], importers

    def reachable(module):
        parts = module.split(".")
        return (not any(part.startswith("_") for part in parts)
                or parts[1] in ("_engines", "_core"))

    for name in sorted(bench):
        through = sorted(m for m in GRAPH[name]
                         if m.split(".")[0] == "convmm" and m not in bench and not reachable(m))
        assert not through, f"{name} imports {through}"


def test_the_chunked_cuts_are_pure_arithmetic():
    """The cut arithmetic (``_chunked/cuts.py``) imports neither Dask nor anything of the
    package: testable without Dask."""
    assert not {m for m in GRAPH["convmm._chunked.cuts"]
                if m.startswith(("dask", "convmm", "numpy"))}


def test_both_executors_offer_one_interface():
    """``_api`` composes each public function once, over either executor: the eager one
    (``_engines/eager.py``) and the chunked one (``_chunked/maps.py``) define the same
    functions with the same parameters, and only ``_api`` and the operators choose one."""
    import inspect

    from convmm._chunked import maps
    from convmm._engines import eager

    for name in ("prepare", "grad_output", "forward", "adjoint", "weight_grad"):
        assert (inspect.signature(getattr(eager, name)).parameters.keys()
                == inspect.signature(getattr(maps, name)).parameters.keys()), name
    public = {"conv", "conv_transpose", "conv_backward", "conv_transpose_backward"}
    for name in MODULES:
        if name.startswith(("convmm._chunked", "convmm._engines")):
            tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
            defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
            assert not defined & public, f"{name} writes {defined & public} again"


def test_a_plan_reads_its_numbers_from_the_record_of_tunables():
    """The policy and the engines' planning modules define no numeric constant of their
    own (the record in ``tunables.py`` holds them, and is the plan cache's key); the CPU
    engine runs the kernel its plan names (``plan.kernel``) and chooses none itself."""
    for name in ("convmm._engines.policy", "convmm._engines.cpu.tiles",
                 "convmm._engines.cpu.fft_cost", "convmm._engines.fft_blocks",
                 "convmm._engines.cpu.winograd_plan",
                 "convmm._engines.cuda.tiles"):
        tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
        constants = [target.id for node in tree.body if isinstance(node, ast.Assign)
                     for target in node.targets if isinstance(target, ast.Name)
                     and isinstance(node.value, (ast.Constant, ast.BinOp))
                     and target.id != "PLAN_CACHE_SIZE"]
        assert not constants, f"{name} defines {constants}"
    engine = MODULES["convmm._engines.cpu.engine"].read_text(encoding="utf-8")
    assert "plan.kernel ==" in engine and "WIDE_" not in engine
