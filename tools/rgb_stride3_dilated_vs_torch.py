"""conv(method="im2col") against torch.nn.functional.conv2d on a strided, dilated layer on RGB images.

Batch 32, 3×256×256 (and a non-square 3×256×200), kernel (2, 3, 3, 3), stride 3,
dilation 2, padding 1, float32.  The two are timed interleaved, several repeats,
medians, so that the ratio is measured under the same machine load.

    python tools/rgb_stride3_dilated_vs_torch.py [--repeats 25] [--threads 2]
"""

import argparse
import time

import numpy as np

import convmm


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    kw = dict(stride=3, padding=1, dilation=2)
    print(f"threads={args.threads} repeats={args.repeats} (medians, interleaved)")
    with threadpool_limits(args.threads):
        for width in (256, 200):
            x = rng.standard_normal((32, 3, 256, width)).astype(np.float32)
            tx, tk = torch.from_numpy(x), torch.from_numpy(kernel)
            ours, theirs = [], []
            for _ in range(args.repeats):
                start = time.perf_counter()
                y = convmm.conv(x, kernel, method="im2col", **kw)
                ours.append(time.perf_counter() - start)
                start = time.perf_counter()
                ty = torch.nn.functional.conv2d(tx, tk, **kw)
                theirs.append(time.perf_counter() - start)
            assert np.allclose(y, ty.numpy(), rtol=1e-4, atol=1e-3)
            a, b = np.median(ours), np.median(theirs)
            print(f"(32, 3, 256, {width}) → {y.shape}: convmm im2col {a * 1e3:7.2f} ms   "
                  f"torch {b * 1e3:7.2f} ms   ratio {a / b:.2f}")


if __name__ == "__main__":
    main()
