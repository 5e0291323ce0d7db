"""The GEMM micro-kernel of this machine: the register tile that fits its vector registers.

``tools/generate_microkernel.py`` writes one module per register tile (MR × NR, float32
lanes): ``microkernel_8x32`` for AVX-512, whose 32 vector registers hold the 16 zmm
accumulators of an 8×32 tile, and ``microkernel_6x16`` for AVX2 (and any target without
AVX-512), whose 16 hold 12 ymm accumulators, two vectors of B and a broadcast of A.  An
8×32 tile on AVX2 needs 32 ymm accumulators and spills: measured on a 2-core AMD EPYC
(family 25 model 1, AVX2, no AVX-512), the packed GEMM at 2048³ ran at 34 GFLOP/s with
8×32, 104-114 with 6×16 and 85 with 4×24 (OpenBLAS: 155-181); ResNet's 3×3 layer
(8×64×56×56) forward in 41 ms with 8×32 and 25-26 ms with 6×16.

The tile follows the CPU features Numba compiles for (``NUMBA_CPU_FEATURES``, else the
host's).  Those features are in Numba's on-disk cache key, so every process on one
machine with one cache runs the same tile and gets the same bits; another machine may
run the other tile, whose GEMM blocking (``gemm.blocking``) splits the sums differently,
so its results may differ in the last bits.  ``_CONVMM_MICROKERNEL`` (a tile's name)
stands in for the features, for the tests, which run it with a Numba cache of their own.
"""

from __future__ import annotations

import os

TILES = {"8x32": (8, 32), "6x16": (6, 16)}
"""The generated tiles, by name: (MR, NR)."""


def tile_for(features: str) -> str:
    """The tile for an LLVM feature string ("+avx2,-avx512f,…"): 8×32 where AVX-512F is
    on, else 6×16."""
    return "8x32" if "+avx512f" in features.split(",") else "6x16"


def _target_features() -> str:
    """The features Numba compiles for: ``NUMBA_CPU_FEATURES`` where set, else the host's."""
    from numba.core import config
    from numba.core.codegen import get_host_cpu_features

    return config.CPU_FEATURES if config.CPU_FEATURES is not None else get_host_cpu_features()


TILE = os.environ.get("_CONVMM_MICROKERNEL") or tile_for(_target_features())
if TILE not in TILES:
    raise ValueError(f"_CONVMM_MICROKERNEL must be one of {sorted(TILES)}, got {TILE!r}")

if TILE == "8x32":
    from .microkernel_8x32 import MR, NR, microkernel, microkernel_padded
else:
    from .microkernel_6x16 import MR, NR, microkernel, microkernel_padded

__all__ = ["MR", "NR", "TILE", "TILES", "microkernel", "microkernel_padded", "tile_for"]
