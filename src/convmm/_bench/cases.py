"""The bench's cases: the layer suite (the bundled ``layers.json`` or another, each row a
``Layer``), the small-layer and large-kernel sections' cases, the random configurations of
``--scaling``, and the calls that run a case with convmm, PyTorch or SciPy on the same data."""

from __future__ import annotations

import json
import math
from importlib import resources

import array_api_compat
import numpy as np

PASSES = ("forward", "transpose", "backward")


def numpy_random(dtype, seed):
    """NumPy's standard normal samples of ``dtype`` drawn from ``seed``: a function of the
    shape (``Host.random``: the CPU bench's data, the same in every process)."""
    rng = np.random.default_rng(seed)
    return lambda shape: rng.standard_normal(shape).astype(dtype)


# --------------------------------------------------------------------------- layers
def load_layers(path=None):
    source = (resources.files("convmm").joinpath("layers.json").open(encoding="utf-8")
              if path is None else open(path, encoding="utf-8"))
    with source as layers:
        text = layers.read()
    return json.loads(text)["layers"]


def pick(layers, names):
    if not names:
        return layers
    chosen = [layer for layer in layers if any(name in layer["name"] for name in names)]
    if not chosen:
        known = ", ".join(layer["name"] for layer in layers)
        raise SystemExit(f"no layer matches {names}; the suite has: {known}")
    return chosen


class Layer:
    """One row of the suite: shapes, keywords and FLOP counts (channels-first)."""

    def __init__(self, spec, batch=None):
        self.spec = spec
        self.name = spec["name"]
        nd = len(spec["spatial"])
        self.n = batch or spec["N"]
        self.in_channels, self.out_channels = spec["C"], spec["K"]
        self.groups = spec.get("groups", 1)
        self.spatial, self.kernel = tuple(spec["spatial"]), tuple(spec["kernel"])
        self.nd = nd
        self.stride, self.padding, self.dilation = spec["stride"], spec["padding"], spec["dilation"]
        import convmm

        self.output = convmm.conv_output_shape(self.spatial, self.kernel, stride=self.stride,
                                               padding=self.padding, dilation=self.dilation)
        # Multiply-adds of the forward map: N·C_out·L·(C_in/G)·∏K.
        self.macs = (self.n * self.out_channels * math.prod(self.output)
                     * self.in_channels // self.groups * math.prod(self.kernel))

    def keywords(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups)

    def flops(self, which):
        return 2 * self.macs * (3 if which == "backward" else 1)

    def shape(self):
        return ", ".join([f"N={self.n} C={self.in_channels}→{self.out_channels}",
                          "×".join(map(str, self.spatial)), "k" + "×".join(map(str, self.kernel)),
                          f"s{self.stride} p{self.padding} d{self.dilation} g{self.groups}"])


# --------------------------------------------------------------------------- the calls
def convmm_call(layer, which, method, random):
    """A no-argument function that runs one pass with convmm, the pass's calls each with
    its output's bytes (for ``extra_memory``), and the arrays (``random(shape)``: standard
    normal samples of the benchmark's dtype, on the backend's device)."""

    import convmm

    kw = layer.keywords()
    x = random((layer.n, layer.in_channels, *layer.spatial))
    w = random((layer.out_channels, layer.in_channels // layer.groups, *layer.kernel))
    w /= math.sqrt(layer.in_channels * math.prod(layer.kernel))
    b = random((layer.in_channels if which == "transpose" else layer.out_channels,))
    g = random((layer.n, layer.out_channels, *layer.output))
    arrays = x, w, b, g

    def forward():
        return convmm.conv(x, w, b, method=method, **kw)

    def backward():
        return convmm.conv_backward(g, x, w, method=method, **kw)

    if which == "forward":
        return forward, [(forward, g.nbytes)], arrays
    if which == "transpose":
        def transpose():
            return convmm.conv_transpose(g, w, b, output_size=layer.spatial, method=method, **kw)

        return transpose, [(transpose, x.nbytes)], arrays

    def forward_backward():
        forward()
        return backward()

    # The forward output is freed before the backward pass starts: each call's
    # extra memory is measured beyond its own output, and the pass reports the larger.
    return forward_backward, [(forward, g.nbytes), (backward, x.nbytes + w.nbytes + b.nbytes)], arrays


def torch_call(layer, which, arrays):
    """The same pass in PyTorch, on the same memory (NumPy's or CuPy's, through DLPack)."""
    import torch

    x, w, b, g = (torch.from_dlpack(a) for a in arrays)
    kw = layer.keywords()
    conv = getattr(torch.nn.functional, f"conv{layer.nd}d")
    if which == "forward":
        return lambda: conv(x, w, b, **kw)
    if which == "transpose":
        transposed = getattr(torch.nn.functional, f"conv_transpose{layer.nd}d")
        # The output padding that brings conv_transpose back to the layer's input size.
        per_dim = [v if isinstance(v, (list, tuple)) else [v] * layer.nd
                   for v in (layer.stride, layer.padding, layer.dilation)]
        smallest = [(o - 1) * s - 2 * p + d * (k - 1) + 1
                    for o, k, s, p, d in zip(layer.output, layer.kernel, *per_dim)]
        extra = tuple(i - m for i, m in zip(layer.spatial, smallest))
        return lambda: transposed(g, w, b, stride=layer.stride, padding=layer.padding,
                                  output_padding=extra, groups=layer.groups,
                                  dilation=layer.dilation)
    xg, wg, bg = (t.clone().requires_grad_(True) for t in (x, w, b))

    def forward_backward():
        conv(xg, wg, bg, **kw).backward(g)
        xg.grad = wg.grad = bg.grad = None

    return forward_backward


# --------------------------------------------------------------------------- small layers
SMALL_LAYERS = (
    dict(name="one_8x8_image", N=1, C=8, spatial=[8, 8], K=8, kernel=[3, 3], stride=1,
         padding=1, dilation=1, groups=1),
    dict(name="batch32_28x28_1to8", N=32, C=1, spatial=[28, 28], K=8, kernel=[3, 3], stride=1,
         padding=1, dilation=1, groups=1),
    dict(name="batch32_28x28_8to16_s2", N=32, C=8, spatial=[28, 28], K=16, kernel=[3, 3],
         stride=2, padding=1, dilation=1, groups=1),
)
"""The small-layer section: calls where per-call overhead, not arithmetic, decides."""

SMALL_CALLS = 200
"""Calls per timing of a small layer (their median is one round's figure)."""

CNN_STEP = "small_cnn_step"
"""A training step of a small CNN: batch 32, 28×28, 1→8→16 channels (3×3, the second
at stride 2), bias and ReLU after each, the loss Σ y; forward, then every gradient."""


def small_cases():
    """The small-layer section's names: ``SMALL_LAYERS``, then the CNN step."""
    return [spec["name"] for spec in SMALL_LAYERS] + [CNN_STEP]


def small_call(library, name, random):
    """A no-argument function running one small case with ``library`` ("convmm" or
    "torch"), on data from ``random(shape)``."""
    if name != CNN_STEP:
        layer = Layer(next(spec for spec in SMALL_LAYERS if spec["name"] == name))
        forward, _, arrays = convmm_call(layer, "forward", "auto", random)
        return forward if library == "convmm" else torch_call(layer, "forward", arrays)
    x = random((32, 1, 28, 28))
    w1, b1 = random((8, 1, 3, 3)) / 3, random((8,))
    w2, b2 = random((16, 8, 3, 3)) / 8, random((16,))
    if library == "torch":
        import torch
        import torch.nn.functional as F

        x, w1, b1, w2, b2 = (torch.from_dlpack(a) for a in (x, w1, b1, w2, b2))
        for t in (w1, b1, w2, b2):
            t.requires_grad_(True)

        def step():
            h = F.relu(F.conv2d(x, w1, b1, padding=1))
            F.relu(F.conv2d(h, w2, b2, stride=2, padding=1)).sum().backward()
            for t in (w1, b1, w2, b2):
                t.grad = None

        return step
    import convmm

    def step():
        h = np.maximum(convmm.conv(x, w1, b1, padding=1), 0)
        y = convmm.conv(h, w2, b2, stride=2, padding=1)
        g2 = (y > 0).astype(y.dtype)                       # ∂Σ relu(y)/∂y
        second = convmm.conv_backward(g2, h, w2, stride=2, padding=1)
        g1 = second.input * (h > 0)
        first = convmm.conv_backward(g1, x, w1, padding=1, needs=("weight", "bias"))
        return first, second

    return step


# --------------------------------------------------------------------------- large kernels
LARGE_KERNELS = (
    dict(name="blur_512x512_31x31_f32", dtype="float32", peer="scipy", target=1.0,
         x=(1, 1, 512, 512), w=(1, 1, 31, 31), padding="same"),
    dict(name="blur_512x512_31x31_f64", dtype="float64", peer="scipy", target=1.0,
         x=(1, 1, 512, 512), w=(1, 1, 31, 31), padding="same"),
    dict(name="filter_bank_32x4096_16x65", dtype="float32", peer="torch", target=1.0,
         x=(32, 1, 4096), w=(16, 1, 65), padding="same"),
    dict(name="conv1d_16to16_16000_1024", dtype="float32", peer="torch", target=0.3,
         x=(1, 16, 16000), w=(16, 16, 1024), padding="same"),
    dict(name="volume_64^3_9^3", dtype="float32", peer="convmm_gemm", target=0.5,
         x=(1, 1, 64, 64, 64), w=(1, 1, 9, 9, 9), padding="same"),
    dict(name="fwd+bwd_8to8_256x256_31x31", dtype="float32", peer="torch", target=0.5,
         x=(4, 8, 256, 256), w=(8, 8, 31, 31), padding="same", backward=True),
)
"""The large-kernel section: where the FFT lowering should win.  ``peer``: the library
timed against ("scipy": ``scipy.signal.fftconvolve`` on the same padded input, in a
process of its own; "torch"; "convmm_gemm": convmm's fastest GEMM method, in convmm's
process), ``target``: the ratio convmm/peer the FFT issue holds ``auto`` to."""

GEMM_PEER_METHODS = ("tiled_blas", "implicit_gemm", "direct")


def large_cases():
    return [spec["name"] for spec in LARGE_KERNELS]


def large_call(library, name, method="auto", random=None):
    """A no-argument function running one large-kernel case with ``library`` ("convmm",
    "torch" or "scipy"), on the same data in every process; ``random(dtype, seed)``
    makes the arrays (default ``numpy_random``, which is ``Host.random``: NumPy's;
    ``Gpu.random``: CuPy's)."""
    spec = next(spec for spec in LARGE_KERNELS if spec["name"] == name)
    random = (random or numpy_random)(spec["dtype"], seed=7)
    x, w = random(spec["x"]), random(spec["w"]) / math.prod(spec["w"][1:]) ** 0.5
    same = [((k - 1) // 2, k // 2) for k in spec["w"][2:]]      # convmm's "same", as pairs
    if library == "scipy":
        import scipy.signal

        padded = np.pad(x[0, 0], same)
        flipped = np.ascontiguousarray(w[0, 0, ::-1, ::-1])
        return lambda: scipy.signal.fftconvolve(padded, flipped, mode="valid")
    if library == "torch":
        import torch
        import torch.nn.functional as F

        conv = {3: F.conv1d, 4: F.conv2d, 5: F.conv3d}[len(spec["x"])]
        tx, tw = torch.from_dlpack(x), torch.from_dlpack(w)
        padding = [p for pair in reversed(same) for p in pair]
        if not spec.get("backward"):
            return lambda: conv(F.pad(tx, padding), tw)
        tx.requires_grad_(True)
        tw.requires_grad_(True)

        def forward_backward():
            y = conv(F.pad(tx, padding), tw)
            y.backward(torch.ones_like(y))
            tx.grad = tw.grad = None

        return forward_backward
    import convmm

    if not spec.get("backward"):
        return lambda: convmm.conv(x, w, padding=same, method=method)

    def forward_backward():
        y = convmm.conv(x, w, padding=same, method=method)
        ones = array_api_compat.array_namespace(y).ones_like(y)
        return convmm.conv_backward(ones, x, w, padding=same, method=method)

    return forward_backward


# --------------------------------------------------------------------------- every method's cost
SCALING_METHODS = {"forward": ("im2col", "tiled_blas", "implicit_gemm", "direct"),
                   "transpose": ("im2col", "zero_insertion", "tiled_blas", "implicit_gemm",
                                 "direct"),
                   "weight": ("im2col", "tiled_blas", "implicit_gemm", "direct")}


def scaling_cases(count=40, seed=0):
    """(name, x, weight, keywords): random small configurations (ranks, channels, groups,
    kernels, strides, dilations, padding modes, both data formats) and patch shapes
    (kernel = stride), float32."""
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < count:
        nd = int(rng.integers(1, 4))
        groups = int(rng.choice([1, 1, 2]))
        kernel = tuple(int(k) for k in rng.integers(1, 5, nd))
        stride = tuple(int(v) for v in rng.integers(1, 4, nd))
        dilation = tuple(int(v) for v in rng.integers(1, 3, nd))
        size = tuple(int(v) for v in rng.integers(6, {1: 200, 2: 40, 3: 14}[nd], nd))
        if any(d * (k - 1) + 1 > n for k, d, n in zip(kernel, dilation, size)):
            continue
        mode = str(rng.choice(["zeros", "reflect", "replicate", "circular"]))
        padding = tuple(min(int(p), n - 1) for p, n in zip(rng.integers(0, 3, nd), size))
        c_in, c_out = groups * int(rng.integers(1, 9)), groups * int(rng.integers(1, 9))
        x = rng.standard_normal((2, c_in, *size)).astype(np.float32)
        w = rng.standard_normal((c_out, c_in // groups, *kernel)).astype(np.float32)
        keywords = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                        padding_mode=mode)
        if rng.random() < 0.5:
            x = np.ascontiguousarray(np.moveaxis(x, 1, -1))
            w = np.ascontiguousarray(np.moveaxis(w, (0, 1), (-1, -2)))
            keywords["data_format"] = "channels_last"
        cases.append((f"random {len(cases)}", x, w, keywords))
    for k, channels, size in ((4, 3, 64), (16, 3, 128), (32, 3, 128), (128, 1, 256)):
        x = rng.standard_normal((2, channels, size, size)).astype(np.float32)
        w = rng.standard_normal((8, channels, k, k)).astype(np.float32)
        cases.append((f"patches {k}×{k}, stride {k}", x, w, dict(stride=k)))
    return cases
