"""Every generated register tile on this machine: the packed GEMM against numpy.matmul and
ResNet's 3×3 layer, each tile forced (``_CONVMM_MICROKERNEL``) in a process of its own
with a Numba cache of its own.

    python tools/microkernel_tiles.py                 # GEMM 1024³ and 2048³, res2 forward
    python tools/microkernel_tiles.py --size 256 --batch 1   # quick

Best of five calls each; run it while nothing else uses the cores, and write the CPU
model (``lscpu``) beside the figures.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import sys, time
import numpy as np
import convmm
from convmm._engines.cpu import engine, gemm, microkernel

sizes, batch = [int(s) for s in sys.argv[1].split(",")], int(sys.argv[2])
rng = np.random.default_rng(0)


def best(call, repeats=5):
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


line = [f"tile {microkernel.TILE} (MR {gemm.MR}, NR {gemm.NR}; KC {gemm.KC}, MC {gemm.MC}, NC {gemm.NC})"]
for n in sizes:
    a, b = rng.random((n, n), np.float32), rng.random((n, n), np.float32)
    c = np.empty((n, n), np.float32)
    ours, theirs = best(lambda: engine.gemm(a, b, c)), best(lambda: a @ b)
    line.append(f"GEMM {n}³ {2 * n ** 3 / ours / 1e9:.1f} GFLOP/s (numpy.matmul "
                f"{2 * n ** 3 / theirs / 1e9:.1f})")
x = rng.random((batch, 64, 56, 56), np.float32)
w = rng.random((64, 64, 3, 3), np.float32)
seconds = best(lambda: convmm.conv(x, w, padding=1))
flops = 2 * batch * 64 * 64 * 9 * 56 * 56
line.append(f"res2 forward (N={batch}) {seconds * 1e3:.2f} ms, {flops / seconds / 1e9:.1f} GFLOP/s")
print("; ".join(line))
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs="*", default=[1024, 2048],
                        help="GEMM sizes (n for n×n×n)")
    parser.add_argument("--batch", type=int, default=8, help="res2's batch")
    args = parser.parse_args(argv)
    from convmm._engines.cpu import microkernel

    print(f"this machine's tile: {microkernel.TILE}")
    for tile in microkernel.TILES:
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "_CONVMM_MICROKERNEL": tile, "NUMBA_CACHE_DIR": cache}
            done = subprocess.run([sys.executable, "-c", CHILD, ",".join(map(str, args.size)),
                                   str(args.batch)], env=env, capture_output=True, text=True)
            print(done.stdout.strip() if done.returncode == 0 else done.stderr.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
