"""convmm's command line: worked examples of the lowering (demo), their pictures (show),
benchmarks against PyTorch (bench) and this machine's rates for 'auto' (calibrate)."""

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from . import __version__

    parser = argparse.ArgumentParser(prog="python -m convmm", description=__doc__)
    parser.add_argument("--version", action="version", version=f"convmm {__version__}")
    commands = parser.add_subparsers(dest="command")
    demo_help = "run six worked examples of the lowering through every method on every backend present"
    commands.add_parser("demo", help=demo_help, description=demo_help[0].upper() + demo_help[1:]
                        + " (a few seconds).")
    from ._bench.cli import add_arguments

    show = commands.add_parser(
        "show", help="draw the pictures of the lowering for the worked examples",
        description="Draw the pictures of the lowering (convmm.plot) for the worked examples "
                    "into a folder, with an index.html that shows them. Needs the plot "
                    "extra (matplotlib).")
    show.add_argument("--out", default="convmm-gallery",
                      help="the folder to write into (default convmm-gallery)")
    show.add_argument("--format", dest="image_format", default="png", choices=("png", "svg"),
                      help="the format of the still pictures (the animations are GIFs)")
    show.add_argument("--only", nargs="+", default=(), metavar="NAME",
                      help="draw only these pictures (file names without extension), and no "
                           "index.html")
    bench_help = "time the layer suite against PyTorch"
    add_arguments(commands.add_parser(
        "bench", help=bench_help,
        description="Time convmm against PyTorch (or convmm alone) on the layer suite: every "
                    "layer, pass and library in processes of their own, rounds alternating, "
                    "medians. The whole suite takes about ten minutes on two cores and keeps "
                    "them busy; --layers, --pass and --repeats make it shorter."))
    calibrate_help = "measure this machine's rates that 'auto' weighs the FFT with, afresh"
    calibrate = commands.add_parser(
        "calibrate", help=calibrate_help,
        description="Measure afresh the rates 'auto' weighs the FFT against the GEMM methods "
                    "with (a GEMM, real transforms, memory bandwidth, the FFT's channel "
                    "products), held to this core's measured floating-point peak, and store "
                    "them where every later process reads them. Run it on an idle machine "
                    "(a few seconds).")
    calibrate.add_argument("--threads", type=int, default=None,
                           help="the thread setting to measure for (default: convmm's "
                                "current one, convmm.get_num_threads())")
    args = parser.parse_args(argv)
    if args.command is None:        # no command: what there is, not an argparse error
        parser.print_help()
        return 0
    if args.command == "demo":
        from .demo import main as demo

        return demo()
    if args.command == "show":
        from .gallery import main as show_gallery

        return show_gallery(args.out, args.image_format, tuple(args.only))
    if args.command == "calibrate":
        return _calibrate(calibrate, args.threads)
    if args.command == "bench":
        from ._bench.cli import run

        return run(args)
    return 2


def _calibrate(parser: argparse.ArgumentParser, threads: int | None) -> int:
    import numpy as np

    from . import get_num_threads
    from ._engines.cpu import calibration
    from ._engines.cpu.threads import MAX_THREADS

    if threads is None:
        threads = get_num_threads()
    if not 1 <= threads <= MAX_THREADS:
        parser.error(f"--threads must be between 1 and {MAX_THREADS} (4 per CPU), got {threads}")
    for dtype in (np.float32, np.float64):
        print(calibration.describe(calibration.record(dtype, threads, fresh=True)))
    if all(calibration.stored(dtype, threads) for dtype in (np.float32, np.float64)):
        print(f"stored in {calibration.cache_path()}")
    else:
        print(f"could not store them in {calibration.cache_path()} (set CONVMM_CACHE_DIR to a "
              f"folder you can write): every process measures them again")
    return 0


if __name__ == "__main__":
    sys.exit(main())
