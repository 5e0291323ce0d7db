"""Command line: ``python -m convmm demo`` and ``python -m convmm bench``."""

import argparse
import sys


def main(argv=None) -> int:
    from . import __version__

    parser = argparse.ArgumentParser(prog="python -m convmm", description=__doc__)
    parser.add_argument("--version", action="version", version=f"convmm {__version__}")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("demo", help="run six worked examples of the lowering through every method on every backend present")
    from .bench import add_arguments

    add_arguments(commands.add_parser("bench", help="time the layer suite against PyTorch"))
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
