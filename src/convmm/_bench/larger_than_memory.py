"""The bench's larger-than-memory run: a Zarr volume through convmm on a Dask cluster.

Writes a random float32 volume to Zarr (by default 1024×1024×512, 2 GiB, in chunks
of 64³), then on a ``dask.distributed.LocalCluster`` of 1 and then 2 worker
processes, each with ``--memory-limit`` (default 1 GiB: half the volume) and one thread,
convolves it with a 3×3×3 kernel (1 → 8 channels, reflect padding, stride 2) and
convolves the result back with the transposed convolution, writing both to Zarr.
It reports, per cluster: each worker's peak memory (the scheduler's reading of the
worker process, sampled every 0.1 s) against its limit, the most any worker
spilled to disk, whether a worker was lost, the wall time and the throughput; and
checks two corners of each result against convmm on one in-memory array of the
sub-volume they depend on.

    python -m convmm bench --larger-than-memory            # the full 2 GiB run
    python tools/larger_than_memory.py --shape 128 128 64  # the same, with options

Needs the ``dask`` extra (dask, distributed, zarr): ``pip install "convmm[dask]"``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

KERNEL = (3, 3, 3)
OUT_CHANNELS = 8
STRIDE = 2
KEYWORDS = dict(stride=STRIDE, padding=1, padding_mode="reflect")


def parse(argv=None):
    parser = argparse.ArgumentParser(prog="python tools/larger_than_memory.py",
                                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[1024, 1024, 512],
                        help="the volume's size (default 1024 1024 512: 2 GiB of float32)")
    parser.add_argument("--chunk", type=int, nargs=3, default=[64, 64, 64],
                        help="the volume's Zarr and Dask chunks (default 64³: 1 MiB)")
    parser.add_argument("--memory-limit", default="1GiB",
                        help="each worker's memory limit (default 1GiB; a worker process holds about 140 MiB "
                             "before any data, and pauses at 80%%)")
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2],
                        help="the cluster sizes to run (default 1 2)")
    parser.add_argument("--dir", help="where the Zarr stores go (default a temporary folder, "
                                      "removed at the end)")
    parser.add_argument("--json", help="write the figures to this JSON file")
    return parser.parse_args(argv)


def write_volume(path, shape, chunk):
    """A random standard normal float32 volume (1, 1, *shape) in Zarr, written chunk by chunk."""
    import dask.array as da

    volume = da.random.default_rng(0).standard_normal((1, 1, *shape), dtype=np.float32,
                                                      chunks=(1, 1, *chunk))
    da.to_zarr(volume, str(path), overwrite=True)


class PeakMemory:
    """Each worker's largest process memory and spilled bytes, read from the scheduler
    every ``interval`` seconds while the block runs."""

    def __init__(self, client, interval=0.1) -> None:
        self.client, self.interval = client, interval
        self.peak: dict[str, int] = {}
        self.spilled: dict[str, int] = {}
        self.paused: dict[str, float] = {}
        self.seen: set[str] = set()
        self._stop = threading.Event()

    def _sample(self):
        workers = self.client.scheduler_info(n_workers=-1)["workers"]
        for address, info in workers.items():
            self.seen.add(address)
            metrics = info.get("metrics", {})
            self.peak[address] = max(self.peak.get(address, 0), int(metrics.get("memory", 0)))
            spilled = metrics.get("spilled_bytes", {}).get("disk", 0)
            self.spilled[address] = max(self.spilled.get(address, 0), int(spilled))
            if "paused" in str(info.get("status", "")):     # at the pause threshold (80%)
                self.paused[address] = self.paused.get(address, 0.0) + self.interval

    def _run(self):
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self):
        self._sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_):
        self._stop.set()
        self._thread.join()
        self._sample()
        return False


def _corner_checks(x, y, back, weight, shape):
    """max |difference| of y and back against convmm on one in-memory array, at the
    volume's first and last corners (the global reflect padding included)."""
    import convmm

    sides = [min(128, n // 2) for n in shape]      # a corner, not the whole volume
    errors = []
    # y at the first corner: outputs [0, s/2) read inputs [-1, s) (reflect at the start).
    first = tuple(slice(0, n + 1) for n in sides)
    want = convmm.conv(x[(0, 0, *first)][None, None], weight, stride=STRIDE,
                       padding=[(1, 0)] * 3, padding_mode="reflect")
    got = y[(slice(None), slice(None), *(slice(0, want.shape[2 + i]) for i in range(3)))]
    errors.append(float(np.max(np.abs(got - want))))
    # y at the last corner: the last outputs read the last inputs and the reflect at the end.
    outputs = [(n + 2 - 3) // STRIDE + 1 for n in shape]
    last = [n // 2 for n in sides]
    start = [STRIDE * (o - k) - 1 for o, k in zip(outputs, last)]
    window = tuple(slice(s, None) for s in start)
    want = convmm.conv(x[(0, 0, *window)][None, None], weight, stride=STRIDE,
                       padding=[(0, 1)] * 3, padding_mode="reflect")
    got = y[(slice(None), slice(None), *(slice(o - k, o) for o, k in zip(outputs, last)))]
    errors.append(float(np.max(np.abs(got - want))))
    # back at the first corner: the transpose of the corner's outputs, compared where no
    # output beyond the corner reaches (and away from the small volume's far edge).
    half = [n // 2 for n in sides]
    region = tuple(slice(0, h) for h in half)
    want = convmm.conv_transpose(y[(slice(None), slice(None), *region)], weight,
                                 output_size=tuple(sides), **KEYWORDS)
    inner = tuple(slice(0, n - 8) for n in sides)
    got = back[(slice(None), slice(None), *inner)]
    errors.append(float(np.max(np.abs(got - want[(slice(None), slice(None), *inner)]))))
    return errors


@contextlib.contextmanager
def environment_kept():
    """os.environ as it was, after the block: a LocalCluster of processes sets
    OMP_NUM_THREADS, OPENBLAS_NUM_THREADS and MKL_NUM_THREADS to 1 (and
    MALLOC_TRIM_THRESHOLD_) in its caller's environment for its workers, and leaves them
    there, where every later subprocess's BLAS would start on one thread."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_cluster(workers, source, out, shape, chunk, memory_limit, weight):
    """Both convolutions on a cluster of ``workers`` processes: the figures."""
    import dask.array as da
    import zarr
    from distributed import Client, LocalCluster

    import convmm

    with environment_kept(), LocalCluster(n_workers=workers, threads_per_worker=1, memory_limit=memory_limit,
                      processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        x = da.from_zarr(str(source))
        started = set(client.scheduler_info()["workers"])
        with PeakMemory(client) as memory:
            begin = time.perf_counter()
            y = convmm.conv(x, weight, **KEYWORDS)
            da.to_zarr(y, str(out / "conv.zarr"), overwrite=True)
            middle = time.perf_counter()
            back = convmm.conv_transpose(da.from_zarr(str(out / "conv.zarr")), weight,
                                         output_size=tuple(shape), **KEYWORDS)
            da.to_zarr(back, str(out / "transpose.zarr"), overwrite=True)
            end = time.perf_counter()
        lost = sorted(memory.seen - started) + sorted(
            started - set(client.scheduler_info()["workers"]))
    volume = zarr.open(str(source), mode="r")
    errors = _corner_checks(volume, zarr.open(str(out / "conv.zarr"), mode="r"),
                            zarr.open(str(out / "transpose.zarr"), mode="r"), weight, shape)
    voxels = int(np.prod(shape))
    return dict(workers=workers, memory_limit=memory_limit,
                peak_bytes=sorted(memory.peak.values(), reverse=True),
                spilled_bytes=max(memory.spilled.values(), default=0),
                paused_seconds=round(max(memory.paused.values(), default=0.0), 1),
                workers_lost_or_restarted=lost,
                conv_seconds=middle - begin, transpose_seconds=end - middle,
                conv_voxels_per_second=voxels / (middle - begin),
                transpose_voxels_per_second=voxels / (end - middle),
                corner_errors=errors)


def _memory_bytes(text):
    from dask.utils import parse_bytes

    return parse_bytes(text)


def report(figures, shape):
    from dask.utils import format_bytes

    size = 4 * int(np.prod(shape))
    lines = [f"volume {'×'.join(map(str, shape))} float32 ({format_bytes(size)}), "
             f"kernel 3×3×3, 1 → {OUT_CHANNELS} channels, stride {STRIDE}, reflect padding"]
    for f in figures:
        limit = _memory_bytes(f["memory_limit"])
        peaks = ", ".join(f"{p / 2 ** 20:.0f} MiB ({p / limit:.0%})" for p in f["peak_bytes"])
        lines.append(
            f"{f['workers']} worker{'s' if f['workers'] > 1 else ''} ({f['memory_limit']} each): "
            f"peak memory {peaks}; spilled {f['spilled_bytes'] / 2 ** 20:.0f} MiB; paused "
            f"{f.get('paused_seconds', 0):.0f} s; lost "
            f"{len(f['workers_lost_or_restarted'])}; conv {f['conv_seconds']:.1f} s "
            f"({f['conv_voxels_per_second'] / 1e6:.1f} M voxels/s), transpose "
            f"{f['transpose_seconds']:.1f} s ({f['transpose_voxels_per_second'] / 1e6:.1f} "
            f"M voxels/s); corners against one array: max |Δ| "
            f"{max(f['corner_errors']):.1e}")
    return "\n".join(lines)


def main(argv=None):
    args = parse(argv)
    shape, chunk = tuple(args.shape), tuple(args.chunk)
    weight = (np.random.default_rng(1).standard_normal((OUT_CHANNELS, 1, *KERNEL))
              / np.sqrt(27)).astype(np.float32)
    folder = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="convmm-zarr-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        source = folder / "volume.zarr"
        begin = time.perf_counter()
        write_volume(source, shape, chunk)
        print(f"wrote {source} in {time.perf_counter() - begin:.1f} s", flush=True)
        figures = [run_cluster(n, source, folder, shape, chunk, args.memory_limit, weight)
                   for n in args.workers]
    finally:
        if not args.dir:
            shutil.rmtree(folder, ignore_errors=True)
    print(report(figures, shape))
    if args.json:
        Path(args.json).write_text(json.dumps(dict(shape=shape, chunk=chunk, figures=figures),
                                              indent=1))
    bad = [f for f in figures if f["workers_lost_or_restarted"] or max(f["corner_errors"]) > 1e-4]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
