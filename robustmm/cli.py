"""The `robustmm` command line."""

from __future__ import annotations

import argparse
import sys

from robustmm import data, demo


def cmd_inspect(args: argparse.Namespace) -> int:
    loaded = data.read_pkl(args.file)
    replaced = data.normalise(loaded)
    print(f"{args.file}")
    print(data.describe(loaded))
    for key, count in replaced.items():
        print(f"note: {key}: {count} non-finite values set to 0")
    problems = data.validate(loaded)
    if problems:
        print(f"INVALID: {len(problems)} problem(s)")
        for problem in problems:
            print(f"  - {problem}")
        return 1
    print("valid")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robustmm", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    inspect = commands.add_parser("inspect", help="summarise and validate a .pkl feature file")
    inspect.add_argument("file", help="the .pkl feature file")
    inspect.set_defaults(handler=cmd_inspect)
    demo.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (data.FormatError, ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"robustmm {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
