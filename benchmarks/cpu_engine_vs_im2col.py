"""The CPU engine's method="tiled_blas" against the whole-matrix "im2col" path, per layer.

    python benchmarks/cpu_engine_vs_im2col.py [layer names...]

float32 forward convolution over ../shared/bench/layers.json (or $CONVMM_LAYERS),
the two methods interleaved, medians of 5 runs after a warm-up (which also
compiles the Numba kernels). A stop-gap until ``python -m convmm bench``.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import convmm

LAYERS = Path(os.environ.get("CONVMM_LAYERS", Path(__file__).resolve().parents[2] / "shared"
                             / "bench" / "layers.json"))
METHODS = ("tiled_blas", "im2col")


def main(names):
    for layer in json.loads(LAYERS.read_text())["layers"]:
        if names and layer["name"] not in names:
            continue
        rng = np.random.default_rng(0)
        x = rng.standard_normal((layer["N"], layer["C"], *layer["spatial"])).astype(np.float32)
        w = rng.standard_normal((layer["K"], layer["C"] // layer["groups"],
                                 *layer["kernel"])).astype(np.float32)
        kw = {k: layer[k] for k in ("stride", "padding", "dilation", "groups")}
        times = {m: [] for m in METHODS}
        for m in METHODS:
            convmm.conv(x, w, method=m, **kw)
        for _ in range(5):
            for m in METHODS:
                start = time.perf_counter()
                convmm.conv(x, w, method=m, **kw)
                times[m].append(time.perf_counter() - start)
        tiled, whole = (statistics.median(times[m]) for m in METHODS)
        print(f"{layer['name']:20} tiled_blas {tiled * 1e3:8.2f} ms   im2col {whole * 1e3:8.2f} ms"
              f"   ratio {tiled / whole:5.2f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
