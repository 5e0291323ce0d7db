"""The suite's two ways of running, each giving the report's figures: on the CPU
(``_run_host``), convmm, PyTorch and SciPy each in a worker process of its own, rounds
alternating between them; on the GPU (``_run_device``), convmm and PyTorch in this
process, timed on the device's stream."""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np

from . import cases
from .cases import GEMM_PEER_METHODS, convmm_call, large_call, large_cases, small_cases, torch_call
from .measure import HANDOVER_S, Host, same_bits, timed_pair
from .reports import _report
from .workers import _Worker


def _progress(done, total, label):
    width = 24
    filled = width * done // total
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label:<40}")
    sys.stderr.flush()
    if done == total:
        sys.stderr.write("\n")


def _alternating(ours, theirs, repeats, **request):
    """Medians of ``repeats`` rounds of ``request`` to each worker process (``theirs``
    may be None), the order alternating round by round, a handover before each: the
    two libraries' (median, median or None) seconds."""
    mine, other = [], []
    for round_ in range(repeats):
        order = [(ours, mine), (theirs, other)] if theirs else [(ours, mine)]
        for worker, times in (order if round_ % 2 == 0 else order[::-1]):
            time.sleep(HANDOVER_S)
            times.append(worker.ask(**request)["seconds"])
    return statistics.median(mine), statistics.median(other) if other else None


def _run_host(args, backend, layers, batch):
    import importlib.util

    config = dict(layers=[layer.spec for layer in layers], batch=batch, dtype=args.dtype,
                  method=args.method, threads=args.threads, passes=args.passes)
    ours = _Worker("convmm", config)
    theirs = (None if args.no_torch or importlib.util.find_spec("torch") is None
              else _Worker("torch", config))
    try:
        info = ours.ask(op="info")
        peer_info = theirs.ask(op="info") if theirs else None
        jobs = [(layer, which) for layer in layers for which in args.passes]
        results = []
        for job, (layer, which) in enumerate(jobs):
            _progress(job, len(jobs), f"{layer.name} {which}")
            refused = ours.ask(op="warm", job=job).get("refused")
            if refused:     # a method asked for by name that cannot run this layer
                results.append(dict(layer=layer.name, shape=layer.shape(), which=which,
                                    refused=refused))
                continue
            if theirs:
                theirs.ask(op="warm", job=job)
            t_ours, t_torch = _alternating(ours, theirs, args.repeats, op="time", job=job)
            extra = ours.ask(op="memory", job=job)["bytes"]
            results.append(dict(layer=layer.name, shape=layer.shape(), which=which,
                                seconds=t_ours, gflops=layer.flops(which) / t_ours / 1e9,
                                extra_bytes=extra, torch_seconds=t_torch,
                                ratio=None if t_torch is None else t_ours / t_torch))
        _progress(len(jobs), len(jobs), "done")
        small = []
        for name in (small_cases() if args.small else []):
            t_ours, t_torch = _alternating(ours, theirs, args.repeats, op="small", name=name)
            small.append(dict(case=name, seconds=t_ours, torch_seconds=t_torch,
                              ratio=None if t_torch is None else t_ours / t_torch))
        large = _large_kernels(args, config, ours, theirs) if args.large else []
        gemm = ours.ask(op="gemm", repeats=max(args.repeats, 5))["rows"] if args.gemm else []
    finally:
        ours.close()
        if theirs:
            theirs.close()
    setting = ((f"each library in its own process at its own defaults, rounds alternating, "
                f"medians of {args.repeats}: " if peer_info else
                f"convmm alone (PyTorch not installed, or --no-torch), medians of "
                f"{args.repeats}: ")
               + f"convmm on {info['threads']} thread(s) (BLAS {info['blas_threads']})"
               + (f", torch on {peer_info['threads']} thread(s)" if peer_info else ""))
    report = _report(args, backend, batch, results, gemm,
                     peer_info["version"] if peer_info else None, setting)
    report["convmm_process_imported_torch"] = info["imported_torch"]
    report["small"] = small
    report["large"] = large
    return report


def _large_kernels(args, config, ours, torch_worker):
    """The large-kernel section: convmm's ``auto`` against each case's peer, rounds
    alternating, medians; ``explain``'s first words give the method ``auto`` ran."""
    import convmm

    scipy_worker = _Worker("scipy", config)
    rows = []
    try:
        for name in large_cases():
            spec = next(spec for spec in cases.LARGE_KERNELS if spec["name"] == name)
            _progress(len(rows), len(cases.LARGE_KERNELS), name)
            random = Host.random(spec["dtype"], seed=7)
            x, w = random(spec["x"]), random(spec["w"])
            same = [((k - 1) // 2, k // 2) for k in spec["w"][2:]]
            function = convmm.conv_backward if spec.get("backward") else convmm.conv
            arguments = (np.zeros((spec["x"][0], spec["w"][0], *spec["x"][2:]), x.dtype),) \
                if spec.get("backward") else ()
            method = convmm.explain(function, *arguments, x, w,
                                    padding=same).split(":")[1].split("(")[0].strip()
            if spec["peer"] == "convmm_gemm":     # auto and each GEMM method, alternating
                runs = [m for m in ("auto", *GEMM_PEER_METHODS)
                        if "refused" not in ours.ask(op="large", name=name, method=m)]
                times: dict = {m: [] for m in runs}
                for round_ in range(args.repeats):
                    for m in (runs if round_ % 2 == 0 else runs[::-1]):
                        time.sleep(HANDOVER_S)
                        times[m].append(ours.ask(op="large", name=name, method=m)["seconds"])
                medians = {m: statistics.median(t) for m, t in times.items()}
                best = min(runs[1:], key=medians.get)
                rows.append(dict(case=name, method=method, seconds=medians["auto"],
                                 peer=f"convmm {best}", peer_seconds=medians[best],
                                 ratio=medians["auto"] / medians[best], target=spec["target"]))
                continue
            peer = scipy_worker if spec["peer"] == "scipy" else torch_worker
            if peer is None:
                t_auto, _ = _alternating(ours, None, args.repeats, op="large", name=name)
                rows.append(dict(case=name, method=method, seconds=t_auto, peer=spec["peer"],
                                 peer_seconds=None, ratio=None, target=spec["target"]))
                continue
            t_auto, t_peer = _alternating(ours, peer, args.repeats, op="large", name=name)
            rows.append(dict(case=name, method=method, seconds=t_auto, peer=spec["peer"],
                             peer_seconds=t_peer, ratio=t_auto / t_peer, target=spec["target"]))
        _progress(len(rows), len(cases.LARGE_KERNELS), "done")
    finally:
        scipy_worker.close()
    return rows


def _run_device(args, backend, layers, batch):
    """The GPU backend: convmm and PyTorch in this process, timed on the device's stream."""
    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            torch = None
    random = backend.random(args.dtype, seed=0)
    results = []
    if torch is not None:
        torch = backend.setup_torch(torch)
    jobs = [(layer, which) for layer in layers for which in args.passes]
    for done, (layer, which) in enumerate(jobs):
        _progress(done, len(jobs), f"{layer.name} {which}")
        ours, calls, arrays = convmm_call(layer, which, args.method, random)
        theirs = torch_call(layer, which, arrays) if torch is not None else None
        t_ours, t_torch = timed_pair(ours, theirs, args.repeats, backend.seconds)
        extra = max(backend.extra_memory(call, out_bytes) for call, out_bytes in calls)
        results.append(dict(layer=layer.name, shape=layer.shape(), which=which,
                            seconds=t_ours, gflops=layer.flops(which) / t_ours / 1e9,
                            extra_bytes=extra, torch_seconds=t_torch,
                            ratio=None if t_torch is None else t_ours / t_torch,
                            repeatable=same_bits(ours(), ours())))
        del ours, theirs, arrays, calls
    _progress(len(jobs), len(jobs), "done")
    large = _large_kernels_device(args, backend, torch) if args.large else []
    gemm = backend.gemm(repeats=max(args.repeats, 5)) if args.gemm else []
    report = _report(args, backend, batch, results, gemm,
                     None if torch is None else torch.__version__, backend.describe())
    report["large"] = large
    if torch is not None:
        report["cudnn"] = torch.backends.cudnn.version()
    return report


def _large_kernels_device(args, backend, torch):
    """The large-kernel section on the GPU: convmm's ``method="fft"`` (cuFFT through
    CuPy) and ``auto`` (a GEMM method: ``auto`` takes the FFT on the CPU only), each
    against PyTorch on cuDNN, timed in this process like the suite."""
    import convmm

    rows = []
    for done, name in enumerate(large_cases()):
        _progress(done, len(cases.LARGE_KERNELS), name)
        spec = next(spec for spec in cases.LARGE_KERNELS if spec["name"] == name)
        theirs = None if torch is None else large_call("torch", name, random=backend.random)
        x = backend.random(spec["dtype"], seed=7)(spec["x"])
        w = backend.random(spec["dtype"], seed=7)(spec["w"])
        same = [((k - 1) // 2, k // 2) for k in spec["w"][2:]]
        auto = convmm.explain(convmm.conv, x, w, padding=same).split(":")[1].split("(")[0].strip()
        for method in ("fft", "auto"):
            ours = large_call("convmm", name, method, random=backend.random)
            t_ours, t_peer = timed_pair(ours, theirs, args.repeats, backend.seconds)
            rows.append(dict(case=name, method=auto if method == "auto" else method,
                             seconds=t_ours, peer=backend.peer, peer_seconds=t_peer,
                             ratio=None if t_peer is None else t_ours / t_peer, target=None))
            del ours
        del theirs
    _progress(len(cases.LARGE_KERNELS), len(cases.LARGE_KERNELS), "done")
    return rows
