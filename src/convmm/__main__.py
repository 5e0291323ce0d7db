"""Command line: ``python -m convmm demo`` and ``python -m convmm bench``."""

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m convmm", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="run the seeds' worked examples through the array-API methods on every backend")
    from .bench import add_arguments

    add_arguments(commands.add_parser("bench", help="time the layer suite against PyTorch"))
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import main as demo

        return demo()
    if args.command == "bench":
        from .bench import run

        return run(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
