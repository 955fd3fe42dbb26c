"""The `robustmm` command line.

A bad input or setting ends with `robustmm COMMAND: error: ...` and exit status 2 (robustmm.errors);
`robustmm --debug COMMAND ...` shows the traceback instead.

The commands' modules are imported when the parser is built, not when this module is: extraction workers are
started by spawning a fresh interpreter that imports the main script again (`robustmm`, which imports this
module), and the commands' imports (torch, scikit-learn, pandas: seconds) would run in every worker.
"""

from __future__ import annotations

import argparse
import sys

from robustmm.errors import DEBUG_VARIABLE, report_errors


def cmd_inspect(args: argparse.Namespace) -> int:
    from robustmm import data

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


def cmd_make_synthetic(args: argparse.Namespace) -> int:
    from robustmm import data, presets, synthetic

    preset = presets.get_preset(args.dataset)
    dataset = synthetic.make_dataset(preset, sizes=tuple(args.sizes), seed=args.seed)
    data.write(dataset, args.out)
    print(f"wrote {args.out}: a synthetic {preset.name}-shaped file, splits {args.sizes}")
    return 0


def _int_triple(text: str) -> list[int]:
    values = [int(value) for value in text.split(",")]
    if len(values) != 3 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected three positive integers like 64,16,16, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    from robustmm import avec2019, demo, experiments
    from robustmm.corruption import cli as corruption_cli
    from robustmm.features import cli as features_cli

    parser = argparse.ArgumentParser(prog="robustmm", description=__doc__)
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"show the traceback of an error (also {DEBUG_VARIABLE}=1, which reaches pipeline stages too)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    inspect = commands.add_parser("inspect", help="summarise and validate a .pkl feature file")
    inspect.add_argument("file", help="the .pkl feature file")
    inspect.set_defaults(handler=cmd_inspect)

    make_synthetic = commands.add_parser(
        "make-synthetic", help="write a synthetic feature file shaped like a dataset preset, with a learnable signal"
    )
    make_synthetic.add_argument(
        "--dataset", required=True, help="preset whose lengths and dims to use (mosi, mosei, sims, simsv2, avec2019)"
    )
    make_synthetic.add_argument("--out", required=True, help="the .pkl file to write")
    make_synthetic.add_argument(
        "--sizes", type=_int_triple, default=[64, 16, 16], help="train,valid,test rows (default 64,16,16)"
    )
    make_synthetic.add_argument("--seed", type=int, default=0)
    make_synthetic.set_defaults(handler=cmd_make_synthetic)
    features_cli.register(commands)
    experiments.register(commands)
    avec2019.register(commands)
    demo.register(commands)
    corruption_cli.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return report_errors(f"robustmm {args.command}", args.handler, args, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
