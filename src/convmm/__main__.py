"""convmm's command line: worked examples of the lowering (demo) and benchmarks against
PyTorch (bench)."""

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
    from .bench import add_arguments

    bench_help = "time the layer suite against PyTorch"
    add_arguments(commands.add_parser(
        "bench", help=bench_help,
        description="Time convmm against PyTorch (or convmm alone) on the layer suite: every "
                    "layer, pass and library in processes of their own, rounds alternating, "
                    "medians. The whole suite takes about ten minutes on two cores and keeps "
                    "them busy; --layers, --pass and --repeats make it shorter."))
    args = parser.parse_args(argv)
    if args.command is None:        # no command: what there is, not an argparse error
        parser.print_help()
        return 0
    if args.command == "demo":
        from .demo import main as demo

        return demo()
    if args.command == "bench":
        from .bench import run

        return run(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
