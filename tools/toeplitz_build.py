"""Build time and memory of convmm.toeplitz's CSR matrix for large layers.

    python tools/toeplitz_build.py [--repeats 5]

Each build starts from a cold cache of index tables (they are rebuilt too);
memory is the tracemalloc peak during one build (NumPy reports its buffers to
tracemalloc), next to the size of the finished matrix.
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc

import numpy as np

import convmm
from convmm._core import index_tables

CASES = [
    ("2-d 64→64 3×3 on 56×56, pad 1", (64, 64, 3, 3), (64, 56, 56), {"padding": 1}),
    ("  the same, channels-last", (3, 3, 64, 64), (56, 56, 64),
     {"padding": 1, "data_format": "channels_last"}),
    ("  the same, reflect padding", (64, 64, 3, 3), (64, 56, 56),
     {"padding": 1, "padding_mode": "reflect"}),
    ("3-d 32→32 3×3×3 on 16³, pad 1", (32, 32, 3, 3, 3), (32, 16, 16, 16), {"padding": 1}),
    ("3-d 16→16 3×3×3 on 32³, stride 2", (16, 16, 3, 3, 3), (16, 32, 32, 32),
     {"padding": 1, "stride": 2}),
]


def _cold_build(weight, shape, keywords):
    index_tables.toeplitz_pairs.cache_clear()
    index_tables.gather_index.cache_clear()
    return convmm.toeplitz(weight, shape, **keywords)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"{'case':36} {'shape':>17} {'nnz':>8} {'median s':>9} {'min s':>7} "
          f"{'matrix MiB':>10} {'peak MiB':>9}")
    for name, weight_shape, shape, keywords in CASES:
        weight = np.random.default_rng(0).standard_normal(weight_shape).astype(np.float32)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            matrix = _cold_build(weight, shape, keywords)
            times.append(time.perf_counter() - start)
            del matrix
        tracemalloc.start()
        matrix = _cold_build(weight, shape, keywords)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        size = matrix.data.nbytes + matrix.indices.nbytes + matrix.indptr.nbytes
        rows, cols = matrix.shape
        print(f"{name:36} {f'{rows}×{cols}':>17} {matrix.nnz / 1e6:7.1f}M "
              f"{statistics.median(times):9.3f} {min(times):7.3f} {size / 2 ** 20:10.0f} "
              f"{peak / 2 ** 20:9.0f}")
        del matrix


if __name__ == "__main__":
    main()
