"""The figures of the robustness work, each from the input that showed the fault.

    python tools/robustness_figures.py [--skip-torch]

1. large kernels and strides: time and tracemalloc peak of every method's first call
   (each in a fresh process under a 6 GiB address-space limit);
2. an empty batch through conv;
3. six threads calling conv_backward: BLAS's thread counts after, bits against serial;
4. float32 error against a float64 oracle, convmm's methods and PyTorch's;
5. ConvOperator.norm on a 13×13 Gaussian blur, reflect and circular padding.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time

import numpy as np

import convmm

_LARGE = r"""
import json, resource, sys, time, tracemalloc
import numpy as np
resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
import convmm
kind, x_shape, w_shape, keywords, method = json.loads(sys.argv[1])
rng = np.random.default_rng(0)
x = rng.standard_normal(x_shape).astype(np.float32)
w = rng.standard_normal(w_shape).astype(np.float32)
call = convmm.conv if kind == "forward" else convmm.conv_transpose
try:
    tracemalloc.start(); start = time.perf_counter()
    call(x, w, method=method, **keywords)
    first = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]; tracemalloc.stop()
    start = time.perf_counter(); call(x, w, method=method, **keywords)
    print(json.dumps(dict(first=first, again=time.perf_counter() - start, peak=peak)))
except Exception as error:
    print(json.dumps(dict(error=f"{type(error).__name__}: {str(error)[:120]}")))
"""

LARGE = {
    "FCN-32s head (x 1×21×16×16, w 21×21×64×64, stride 32, padding 16)":
        ("transpose", (1, 21, 16, 16), (21, 21, 64, 64), dict(stride=32, padding=16)),
    "kernel = stride = 128 on a 2×2 single-channel input":
        ("transpose", (1, 1, 2, 2), (1, 1, 128, 128), dict(stride=128)),
    "1-d, 4→4 channels, 2048 taps on 16000 samples":
        ("forward", (1, 4, 16000), (4, 4, 2048), dict(padding="same")),
}


def large():
    print("1. large kernels and strides (first call: plans built; again: plans cached)")
    for name, (kind, x_shape, w_shape, keywords) in LARGE.items():
        print(f"  {name}")
        methods = ["auto", "im2col", "tiled_blas", "implicit_gemm", "direct"]
        if kind == "transpose":
            methods.append("zero_insertion")
        for method in methods:
            done = subprocess.run([sys.executable, "-c", _LARGE,
                                   json.dumps([kind, x_shape, w_shape, keywords, method])],
                                  capture_output=True, text=True, timeout=600)
            row = json.loads(done.stdout.splitlines()[-1]) if done.stdout else dict(
                error=done.stderr[-200:])
            if "error" in row:
                print(f"    {method:<15} {row['error']}")
            else:
                print(f"    {method:<15} first {row['first'] * 1e3:8.1f} ms, again "
                      f"{row['again'] * 1e3:8.1f} ms, peak {row['peak'] / 2 ** 20:7.1f} MiB")


def empty():
    y = convmm.conv(np.zeros((0, 3, 30, 30), np.float32), np.ones((16, 3, 3, 3), np.float32))
    print(f"2. an empty batch: conv of (0, 3, 30, 30) by (16, 3, 3, 3) gives {y.shape}")


def concurrent():
    from threadpoolctl import threadpool_info

    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((3, 6, 30, 28)), rng.standard_normal((8, 6, 3, 3))
    g = rng.standard_normal((3, 8, 28, 26))
    serial = convmm.conv_backward(g, x, w)
    before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    differ = []

    def worker():
        for _ in range(20):
            got = convmm.conv_backward(g, x, w)
            differ.append(any(not np.array_equal(a, b) for a, b in zip(got, serial)))

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    print(f"3. six threads × 20 conv_backward: BLAS threads before {before}, after {after}; "
          f"{sum(differ)} of {len(differ)} results differ from the serial bits; explain: "
          + convmm.explain(convmm.conv_backward, g, x, w).splitlines()[1].split(" on ")[1][:12])


def accuracy(skip_torch):
    print("4. float32 error against float64 (max |error| / max |exact|)")
    rng = np.random.default_rng(0)
    cases = {"512 channels of 0.1, 3×3 ones": (np.full((1, 512, 16, 16), np.float32(0.1)),
                                                np.ones((16, 512, 3, 3), np.float32)),
             "random 512→16, 3×3": (rng.standard_normal((2, 512, 16, 16)).astype(np.float32),
                                    rng.standard_normal((16, 512, 3, 3)).astype(np.float32))}
    for name, (x, w) in cases.items():
        exact = convmm.conv(x.astype(np.float64), w.astype(np.float64), padding=1)
        row = {m: convmm.conv(x, w, padding=1, method=m)
               for m in ("auto", "im2col", "tiled_blas", "implicit_gemm", "direct")}
        if not skip_torch:
            import torch

            row["PyTorch"] = torch.nn.functional.conv2d(torch.from_numpy(x),
                                                        torch.from_numpy(w), padding=1).numpy()
        errors = {m: float(np.abs(v - exact).max() / np.abs(exact).max()) for m, v in row.items()}
        print(f"  {name}: " + ", ".join(f"{m} {e:.1e}" for m, e in errors.items()))


def norms():
    t = np.arange(13) - 6
    g = np.exp(-t ** 2 / 8.0)
    kernel = np.outer(g, g) / np.outer(g, g).sum()
    for mode in ("reflect", "circular"):
        op = convmm.ConvOperator(kernel[None, None], (1, 128, 128), padding="same",
                                 padding_mode=mode)
        start = time.perf_counter()
        value = op.norm()
        took = time.perf_counter() - start
        print(f"5. norm of the 13×13 Gaussian (σ = 2) on 128×128, {mode}: {value:.10f} in "
              f"{took:.2f} s; norm_bound() {op.norm_bound():.6f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-torch", action="store_true")
    args = parser.parse_args()
    large()
    empty()
    concurrent()
    accuracy(args.skip_torch)
    norms()


if __name__ == "__main__":
    main()
