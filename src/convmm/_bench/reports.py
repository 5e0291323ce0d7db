"""The bench's reports: the report of a run (a dictionary of its figures, which ``--json``
writes as it is), its text (``format_report``), its bar chart (``plot_report``, with
matplotlib), and the ``--scaling`` table (``format_scaling``)."""

from __future__ import annotations

import json
import math
import statistics
import time

import numpy as np

from .cases import SCALING_METHODS, SMALL_CALLS


def _report(args, backend, batch, results, gemm, torch_version, setting):
    return dict(backend=backend.name, setting=setting, peer=backend.peer, dtype=args.dtype,
                threads=args.threads, method=args.method, batch=batch, torch=torch_version,
                numpy=np.__version__, date=time.strftime("%Y-%m-%d"), results=results,
                gemm=gemm)


def write_json(report, path):
    """The report's figures, as JSON, into the file ``path``."""
    with open(path, "w", encoding="utf-8") as out:
        json.dump(report, out, indent=1)


def format_scaling(rows):
    lines = ["every method's time over auto's (best of at least 7 calls and 0.05 s), on "
             f"{len({r['case'] for r in rows})} configurations:",
             f"{'map':<10} {'method':<15} {'median':>7} {'worst':>7}  worst case"]
    for which, methods in SCALING_METHODS.items():
        for method in methods:
            mine = [r for r in rows if r["which"] == which and r["method"] == method]
            if mine:
                worst = max(mine, key=lambda r: r["ratio"])
                lines.append(f"{which:<10} {method:<15} "
                             f"{statistics.median(r['ratio'] for r in mine):7.2f} "
                             f"{worst['ratio']:7.2f}  {worst['case']}")
    over = [r for r in rows if r["ratio"] > 10]
    lines.append(f"over 10× auto: {len(over)}" + "".join(
        f"\n  {r['case']} {r['which']} {r['method']}: {r['ratio']:.1f}×" for r in over))
    return "\n".join(lines)


def geometric_mean(values):
    values = [v for v in values if v]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def plot_report(report, path):
    """A bar chart of convmm/peer ratios: per layer and pass (one colour per pass), and
    the large-kernel cases against their targets; 1.0 marked (below it convmm is faster)."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("bench --plot draws with matplotlib: pip install 'convmm[plot]'") \
            from None
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    rows = [r for r in report["results"] if r.get("ratio") is not None]
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    passes = list(dict.fromkeys(r["which"] for r in rows))
    large = [r for r in report.get("large") or [] if r.get("ratio") is not None]
    figure = Figure(figsize=(max(8, 0.6 * len(layers) * max(len(passes), 1) / 2 + 3), 8 if large
                             else 5), layout="constrained")
    panels = figure.subplots(2 if large else 1, 1, squeeze=False).reshape(-1)
    width = 0.8 / max(len(passes), 1)
    for k, which in enumerate(passes):
        heights = [next((r["ratio"] for r in rows if r["layer"] == layer and r["which"] == which),
                        0.0) for layer in layers]
        panels[0].bar([i + k * width for i in range(len(layers))], heights, width, label=which)
    panels[0].axhline(1.0, color="black", linewidth=0.8)
    panels[0].set_xticks([i + width * (len(passes) - 1) / 2 for i in range(len(layers))],
                         layers, rotation=45, ha="right", fontsize=8)
    panels[0].set_ylabel(f"time convmm / {report['peer']}")
    panels[0].set_title(f"convmm against {report['peer']} ({report['backend']}, {report['dtype']},"
                        f" {report['date']}): below 1, convmm is faster", fontsize=10)
    panels[0].legend(fontsize=8, frameon=False)
    if large:
        names = [r["case"] for r in large]
        panels[1].bar(range(len(large)), [r["ratio"] for r in large], 0.6, label="convmm / peer")
        panels[1].scatter(range(len(large)), [r["target"] for r in large], marker="_", s=400,
                          color="red", label="target", zorder=3)
        panels[1].axhline(1.0, color="black", linewidth=0.8)
        panels[1].set_xticks(range(len(large)),
                             [f"{n}\n({r['peer']})" for n, r in zip(names, large)],
                             rotation=30, ha="right", fontsize=8)
        panels[1].set_ylabel("time convmm / peer")
        panels[1].set_title("large kernels (auto, the FFT lowering)", fontsize=10)
        panels[1].legend(fontsize=8, frameon=False)
    figure.savefig(path, dpi=110)
    return figure


def format_report(report, passes):
    peer = report["peer"]
    lines = [f"convmm bench ({report['backend']}, {report['date']}): {report['dtype']}, "
             f"method={report['method']}, batch {report['batch'] or 'as the suite'}, torch "
             f"{report['torch'] or 'not timed'}"
             + (f", cuDNN {report['cudnn']}" if report.get("cudnn") else ""),
             report["setting"]]
    for which in passes:
        rows = [r for r in report["results"] if r["which"] == which]
        if not rows:
            continue
        lines += ["", f"{which}:",
                  f"{'layer':<19} {'ms':>9} {'GFLOP/s':>8} {'extra MiB':>9} {peer + ' ms':>9} "
                  f"{'ratio':>6}"]
        for r in rows:
            if r.get("refused"):
                lines.append(f"{r['layer']:<19} refused: {r['refused'].split(';')[0]}")
                continue
            torch_ms = "" if r["torch_seconds"] is None else f"{r['torch_seconds'] * 1e3:9.2f}"
            ratio = "" if r["ratio"] is None else f"{r['ratio']:6.2f}"
            lines.append(f"{r['layer']:<19} {r['seconds'] * 1e3:9.2f} {r['gflops']:8.1f} "
                         f"{r['extra_bytes'] / 2 ** 20:9.1f} {torch_ms:>9} {ratio:>6}")
        rows = [r for r in rows if not r.get("refused")]
        mean = geometric_mean([r["ratio"] for r in rows])
        if mean is not None:
            worst = max(rows, key=lambda r: r["ratio"] or 0)
            lines.append(f"geometric mean convmm/{peer}: {mean:.2f}   worst: {worst['layer']} "
                         f"{worst['ratio']:.2f}")
        checked = [r for r in rows if "repeatable" in r]
        if checked:
            differing = [r["layer"] for r in checked if not r["repeatable"]]
            lines.append(f"same bits on a second run: {len(checked) - len(differing)} of "
                         f"{len(checked)} layers" + (f" (differ: {', '.join(differing)})"
                                                     if differing else ""))
    small = report.get("small") or []
    if small:
        lines += ["", f"small layers (per call, the median of {SMALL_CALLS} calls a round):",
                  f"{'case':<24} {'µs':>9} {peer + ' µs':>9} {'ratio':>6}"]
        for r in small:
            torch_us = "" if r["torch_seconds"] is None else f"{r['torch_seconds'] * 1e6:9.1f}"
            ratio = "" if r["ratio"] is None else f"{r['ratio']:6.2f}"
            lines.append(f"{r['case']:<24} {r['seconds'] * 1e6:9.1f} {torch_us:>9} {ratio:>6}")
        lines.append("")
    large = report.get("large") or []
    if large:
        lines += [""] if lines[-1] else []
        lines += ["large kernels (" + ("fft and auto against cuDNN" if report["backend"] == "cupy"
                                       else "auto against each case's peer") + "):",
                  f"{'case':<28} {'method':<14} {'ms':>9} {'peer':<20} {'peer ms':>9} "
                  f"{'ratio':>6} {'target':>6}"]
        for r in large:
            peer_ms = "" if r["peer_seconds"] is None else f"{r['peer_seconds'] * 1e3:9.2f}"
            ratio = "" if r["ratio"] is None else f"{r['ratio']:6.2f}"
            target = "" if r["target"] is None else f"{r['target']:6.2f}"
            lines.append(f"{r['case']:<28} {r['method']:<14} {r['seconds'] * 1e3:9.2f} "
                         f"{r['peer']:<20} {peer_ms:>9} {ratio:>6} {target:>6}")
        lines.append("")
    for row in report.get("gemm", []):
        lines.append(f"GEMM {row['size']}³ float32: convmm {row['convmm_gflops']:.1f} GFLOP/s, "
                     f"{row['peer']} {row['peer_gflops']:.1f} GFLOP/s: convmm at "
                     f"{100 * row['share']:.0f}% (max rel. error {row['relative_error']:.1e})")
    for key, label in (("startup_cold", "cold Numba cache"), ("startup_warm", "warm Numba cache")):
        if key in report:
            s = report[key]
            lines.append(f"start-up, {label}: import {s['import_s']:.2f} s, first calls of "
                         f"every kernel {s['first_call_s']:.2f} s, the same calls on new shapes "
                         f"{s['later_call_s']:.3f} s")
    return "\n".join(lines)
