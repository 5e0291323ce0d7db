"""Winograd's float32 error against a float64 oracle, per tile size, beside the GEMM
methods' and PyTorch's: ``python tools/winograd_accuracy.py``.

Relative RMS and maximum errors, ``‖y − y64‖ / ‖y64‖``, on random normal data
(the oracle: convmm's im2col in float64).  ``Tunables.winograd_tile`` chooses the
tiles: 2 gives F(2, r) (``method="winograd"``), 0 the largest, F(4×4, 3×3).
PyTorch (if installed) is imported here only for its float32 results; no time
is measured.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

import convmm
from convmm._engines import tunables

CASES = [  # (batch, C_in, size, C_out, kernel, spatial dims)
    (4, 64, 28, 64, 3, 2),
    (4, 256, 14, 256, 3, 2),
    (2, 64, 64, 64, 3, 1),
    (2, 32, 12, 32, 3, 3),
    (4, 64, 28, 64, 5, 2),
]


def errors(y, oracle):
    rms = np.sqrt(np.mean((y - oracle) ** 2) / np.mean(oracle ** 2))
    return rms, np.abs(y - oracle).max() / np.abs(oracle).max()


def main():
    try:
        import torch
        torch_conv = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d,
                      3: torch.nn.functional.conv3d}
    except ImportError:
        torch = None
    rng = np.random.default_rng(0)
    print("float32 error against float64 (relative RMS / max), random normal data")
    for n, c, size, o, k, nd in CASES:
        x = rng.standard_normal((n, c) + (size,) * nd).astype(np.float32)
        w = rng.standard_normal((o, c) + (k,) * nd).astype(np.float32)
        keywords = dict(padding=k // 2)
        oracle = convmm.conv(x.astype(np.float64), w.astype(np.float64), method="im2col",
                             **keywords)
        results = {"implicit_gemm": convmm.conv(x, w, method="implicit_gemm", **keywords)}
        for tile in (2, 0):
            previous = tunables.TUNABLES
            tunables.TUNABLES = dataclasses.replace(previous, winograd_tile=tile)
            try:
                name = convmm.explain(convmm.conv, x, w, method="winograd", **keywords)
                name = re.search(r"F\([^)]*\)", name).group(0)
                results[name] = convmm.conv(x, w, method="winograd", **keywords)
            finally:
                tunables.TUNABLES = previous
        if torch is not None:
            results["PyTorch"] = torch_conv[nd](torch.from_numpy(x), torch.from_numpy(w),
                                                **keywords).numpy()
        shape = f"{n}×{c}×{'×'.join([str(size)] * nd)}, {o} outputs, {k}^{nd} kernel"
        print(f"\n{shape}")
        reference = errors(results["PyTorch"], oracle)[0] if torch is not None else None
        for name, y in results.items():
            rms, worst = errors(y, oracle)
            ratio = f"  ({rms / reference:.1f}× PyTorch's)" if reference else ""
            print(f"  {name:22s} {rms:.1e} / {worst:.1e}{ratio}")


if __name__ == "__main__":
    main()
