"""Shared test helpers: backends, conversions, strict comparison, random configurations."""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field

import array_api_compat
import numpy as np


# --------------------------------------------------------------------------- backends
def _cupy_with_gpu():
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no driver, no device
        return False


@dataclass(frozen=True)
class Backend:
    """One array namespace the suite runs its ``xp`` tests on, and what it gets of them.

    ``seeds``: how many seeds of each seed sweep run on it (None: all).  NumPy runs every
    seed, since its arrays go through the engines, whose kernels each configuration
    steers; the other CPU namespaces share one body (the array-API path, where ``auto``
    is ``im2col``), so a few seeds each check that their arrays go through it (two for
    JAX, which compiles every operation anew for each shape).  CuPy's arrays go through
    the CUDA engine, so it runs every seed where a GPU is present.  Every backend here
    supports every ``xp`` test; one that is not installed (or CuPy without a GPU) is
    left out of the fixture's parameters.
    """

    name: str
    module: str             # the import that must be found for the backend to run
    seeds: int | None
    engine: str             # what runs its arrays: "cpu", "cuda" or "array API"
    needs_gpu: bool = False

    def available(self) -> bool:
        if importlib.util.find_spec(self.module) is None:
            return False
        return not self.needs_gpu or _cupy_with_gpu()


BACKENDS = (
    Backend("numpy", "numpy", None, "cpu"),
    Backend("array_api_strict", "array_api_strict", 3, "array API"),
    Backend("torch", "torch", 3, "array API"),
    Backend("jax", "jax", 2, "array API"),      # with x64 on; test_jax.py tests its default
    Backend("cupy", "cupy", None, "cuda", needs_gpu=True),
)
"""The backend matrix: the ``xp`` fixture's parameters, in this order, where available."""

BACKEND = {backend.name: backend for backend in BACKENDS}


def backend_names():
    return [backend.name for backend in BACKENDS if backend.available()]


def within_budget(items) -> list:
    """The collected tests each backend's budget (``Backend.seeds``) keeps, in order: a
    sweep over ``seed`` runs its first ``seeds`` seeds on that backend, and a test marked
    ``sweep`` (a grid of cases rather than seeds) its first ``seeds`` cases; NumPy runs
    all; a test without ``xp`` always runs."""
    kept, cases = [], {}
    for item in items:
        callspec = getattr(item, "callspec", None)
        budget = (BACKEND[callspec.params["xp"]].seeds
                  if callspec is not None and "xp" in callspec.params else None)
        if budget is not None:
            if "seed" in callspec.params:
                if callspec.indices["seed"] >= budget:
                    continue
            elif item.get_closest_marker("sweep") is not None:
                key = (item.nodeid.split("[")[0], callspec.params["xp"])
                cases[key] = cases.get(key, 0) + 1
                if cases[key] > budget:
                    continue
        kept.append(item)
    return kept


def namespace(name):
    if name == "numpy":
        return np
    if name == "array_api_strict":
        import array_api_strict

        return array_api_strict
    if name == "torch":
        return array_api_compat.array_namespace(__import__("torch").zeros(1))
    if name == "cupy":
        return array_api_compat.array_namespace(__import__("cupy").zeros(1))
    if name == "jax":
        import jax

        # float64 and complex128 exist in JAX only with x64 on (the tests compare both).
        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        return array_api_compat.array_namespace(jnp.zeros(1))
    raise ValueError(name)


def to_numpy(a):
    if a is None:
        return None
    if isinstance(a, np.ndarray):
        return a
    if array_api_compat.is_cupy_array(a):
        return a.get()
    if array_api_compat.is_torch_array(a):
        return a.detach().cpu().numpy()
    return np.from_dlpack(a)


def to_xp(xp, a):
    if a is None:
        return None
    return xp.asarray(np.ascontiguousarray(a))


# --------------------------------------------------------------------------- comparison
TOLERANCE = {np.dtype(np.float32): 2e-5, np.dtype(np.complex64): 2e-5,
             np.dtype(np.float64): 1e-12, np.dtype(np.complex128): 1e-12}


def assert_close(actual, desired, xp, dtype=None, factor=1):
    """actual is in xp's namespace, with desired's shape and dtype (or ``dtype``), and close.

    The tolerance is relative to the largest magnitude of the expected result:
    a few hundred ulps of the dtype, for sums of up to a few hundred products;
    ``factor`` times that for a method whose documented error is larger
    (Winograd's F(4×4, 3×3), about a digit in float32).
    """
    if xp is not np:
        assert array_api_compat.array_namespace(actual) == array_api_compat.array_namespace(
            xp.zeros(1)), f"result in the wrong namespace: {type(actual)}"
    else:
        assert isinstance(actual, np.ndarray), f"result is not a NumPy array: {type(actual)}"
    got = to_numpy(actual)
    want = np.asarray(desired)
    expected_dtype = np.dtype(dtype) if dtype is not None else want.dtype
    assert got.dtype == expected_dtype, f"dtype {got.dtype}, expected {expected_dtype}"
    assert got.shape == want.shape, f"shape {got.shape}, expected {want.shape}"
    tol = TOLERANCE[expected_dtype] * factor
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    np.testing.assert_allclose(got, want.astype(got.dtype), rtol=tol, atol=tol * scale)


# --------------------------------------------------------------------------- configurations
@dataclass
class Config:
    """One random convolution configuration (channels-first shapes kept for the oracle)."""

    nd: int
    batch: int | None          # None: unbatched input
    in_channels: int
    out_channels: int
    groups: int
    size: tuple
    kernel: tuple
    stride: tuple
    dilation: tuple
    padding: object            # any accepted padding form
    pairs: tuple               # the same padding as (before, after) pairs
    padding_mode: str = "zeros"
    data_format: str = "channels_first"
    dtype: str = "float64"
    bias: bool = True
    output_padding: tuple = field(default=())

    def kwargs(self, **extra):
        kw = dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                  groups=self.groups, data_format=self.data_format)
        kw.update(extra)
        return kw


def _same_pairs(size, kernel, stride, dilation):
    out = []
    for i, k, s, d in zip(size, kernel, stride, dilation):
        total = max((math.ceil(i / s) - 1) * s + d * (k - 1) + 1 - i, 0)
        out.append((total // 2, total - total // 2))
    return tuple(out)


def random_config(rng, *, nd=None, modes=("zeros", "reflect", "replicate", "circular",
                                           "symmetric"),
                  dtypes=("float32", "float64", "complex64", "complex128"),
                  formats=("channels_first", "channels_last"), max_size=None):
    """A valid configuration drawn from every axis of the parameter space."""
    while True:
        nd = nd or int(rng.integers(1, 4))
        groups = int(rng.choice([1, 1, 2, 3]))
        kernel = tuple(int(k) for k in rng.integers(1, 4, nd))
        stride = tuple(int(s) for s in rng.integers(1, 4, nd))
        dilation = tuple(int(d) for d in rng.integers(1, 3, nd))
        top = max_size or {1: 12, 2: 8, 3: 6}[nd]
        size = tuple(int(s) for s in rng.integers(2, top + 1, nd))
        form = rng.choice(["int", "per_dim", "pairs", "valid", "same", "full"])
        if form == "int":
            padding = int(rng.integers(0, 3))
            pairs = ((padding, padding),) * nd
        elif form == "per_dim":
            padding = tuple(int(p) for p in rng.integers(0, 3, nd))
            pairs = tuple((p, p) for p in padding)
        elif form == "pairs":
            pairs = tuple((int(a), int(b)) for a, b in rng.integers(0, 3, (nd, 2)))
            padding = pairs
        elif form == "valid":
            padding, pairs = "valid", ((0, 0),) * nd
        elif form == "same":
            padding, pairs = "same", _same_pairs(size, kernel, stride, dilation)
        else:
            padding = "full"
            pairs = tuple((d * (k - 1), d * (k - 1)) for k, d in zip(kernel, dilation))
        mode = str(rng.choice(modes))
        padded = [i + a + b for i, (a, b) in zip(size, pairs)]
        if any(d * (k - 1) + 1 > p for k, d, p in zip(kernel, dilation, padded)):
            continue
        if mode == "reflect" and any(max(p) >= i for p, i in zip(pairs, size)):
            continue
        if mode in ("circular", "symmetric") and any(max(p) > i for p, i in zip(pairs, size)):
            continue
        batch = None if rng.random() < 0.15 else int(rng.integers(1, 3))
        return Config(
            nd=nd, batch=batch, groups=groups,
            in_channels=groups * int(rng.integers(1, 3)),
            out_channels=groups * int(rng.integers(1, 3)),
            size=size, kernel=kernel, stride=stride, dilation=dilation,
            padding=padding, pairs=pairs, padding_mode=mode,
            data_format=str(rng.choice(formats)), dtype=str(rng.choice(dtypes)),
            bias=bool(rng.random() < 0.6),
            output_padding=tuple(int(rng.integers(0, max(s, d))) for s, d in zip(stride, dilation)),
        )


def random_array(rng, shape, dtype):
    a = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        a = a + 1j * rng.standard_normal(shape)
    return a.astype(dtype)


def to_layout(image, cfg):
    """A batched channels-first image (N, C, *S) in cfg's data format."""
    if cfg.data_format == "channels_first":
        return image
    return np.moveaxis(image, 1, -1)


def weight_to_layout(weight, data_format):
    """(A, B, *K) → (*K, B, A) for channels-last."""
    if data_format == "channels_first":
        return weight
    return np.moveaxis(np.moveaxis(weight, 0, -1), 0, -2)


def wide(a):
    """The oracle computes in double precision from the same rounded inputs."""
    if a is None:
        return None
    return a.astype(np.complex128 if a.dtype.kind == "c" else np.float64)


def make_conv_inputs(rng, cfg):
    """(x, weight, bias) for conv in cfg's data format, as NumPy arrays of cfg.dtype."""
    x = random_array(rng, (cfg.batch or 1, cfg.in_channels, *cfg.size), cfg.dtype)
    x = to_layout(x, cfg)
    if cfg.batch is None:
        x = x[0]
    w = random_array(rng, (cfg.out_channels, cfg.in_channels // cfg.groups, *cfg.kernel), cfg.dtype)
    b = random_array(rng, (cfg.out_channels,), cfg.dtype) if cfg.bias else None
    return x, weight_to_layout(w, cfg.data_format), b


def random_transpose_case(rng, dtypes=("float32", "float64", "complex64", "complex128")):
    """A conv_transpose case whose output is non-empty: (cfg, x, weight, bias, kwargs).

    The padding mode is drawn from all four where the forward convolution (from
    the transposed output back to x) allows it, and is "zeros" otherwise.
    """
    while True:
        cfg = random_config(rng, modes=("zeros",), dtypes=dtypes)
        if cfg.padding == "same":
            out = [i * s for i, s in zip(cfg.size, cfg.stride)]
            pairs = _same_pairs(out, cfg.kernel, cfg.stride, cfg.dilation)
            break
        smallest = [(i - 1) * s - a - b + d * (k - 1) + 1 for i, s, (a, b), d, k
                    in zip(cfg.size, cfg.stride, cfg.pairs, cfg.dilation, cfg.kernel)]
        if min(smallest) >= 1:
            out = [m + a for m, a in zip(smallest, cfg.output_padding)]
            pairs = cfg.pairs
            break
    mode = str(rng.choice(["zeros", "reflect", "replicate", "circular", "symmetric"]))
    if mode == "reflect" and any(max(p) >= o for p, o in zip(pairs, out)):
        mode = "zeros"
    if mode in ("circular", "symmetric") and any(max(p) > o for p, o in zip(pairs, out)):
        mode = "zeros"
    x = random_array(rng, (cfg.batch or 1, cfg.in_channels, *cfg.size), cfg.dtype)
    x = to_layout(x, cfg)[0] if cfg.batch is None else to_layout(x, cfg)
    w = random_array(rng, (cfg.in_channels, cfg.out_channels // cfg.groups, *cfg.kernel), cfg.dtype)
    b = random_array(rng, (cfg.out_channels,), cfg.dtype) if cfg.bias else None
    kw = cfg.kwargs(padding_mode=mode)
    if cfg.padding != "same":
        kw["output_padding"] = cfg.output_padding
    return cfg, x, weight_to_layout(w, cfg.data_format), b, kw


def signal_pair(rng, dtype, larger_in2=False, *, nd=None, in1_top=8, in2_top=6):
    """(in1, in2) for ``correlate``: plain arrays of one rank (1-3, drawn where ``nd`` is
    None), sides from 1 to below ``in1_top`` and ``in2_top``; ``larger_in2``: in2 at least
    as large as in1 in every dimension."""
    nd = nd or int(rng.integers(1, 4))
    a = tuple(int(v) for v in rng.integers(1, in1_top, nd))
    b = tuple(int(v) for v in rng.integers(1, in2_top, nd))
    if larger_in2:
        a, b = tuple(min(x, y) for x, y in zip(a, b)), tuple(max(x, y) for x, y in zip(a, b))
    x, k = rng.standard_normal(a), rng.standard_normal(b)
    if np.dtype(dtype).kind == "c":
        x, k = x + 1j * rng.standard_normal(a), k + 1j * rng.standard_normal(b)
    return x.astype(dtype), k.astype(dtype)


def tune(monkeypatch, **changes):
    """Run one test under a changed record of tunables (``convmm._engines.tunables``):
    ``tune(monkeypatch, workspace_bytes=600)``.  The record is in every plan's key, so no
    plan made under the production record is handed back."""
    import dataclasses

    from convmm._engines import tunables

    monkeypatch.setattr(tunables, "TUNABLES", dataclasses.replace(tunables.TUNABLES, **changes))
