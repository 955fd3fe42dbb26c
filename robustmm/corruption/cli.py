"""The `robustmm corrupt` command: a raw dataset folder -> a corrupted copy of the same layout."""

from __future__ import annotations

import argparse

import yaml

from robustmm.corruption.noises import NOISES


def _option(text: str) -> tuple[str, object]:
    name, equals, value = text.partition("=")
    if not equals or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE, e.g. span_seconds=0.25")
    return name.strip(), yaml.safe_load(value)


def cmd_corrupt(args: argparse.Namespace) -> int:
    from robustmm.corruption.clips import corrupt_dataset
    from robustmm.corruption.noises import create_noise
    from robustmm.settings import CorruptCommandSettings, load_command_settings

    flags = {name: ("--" + name, getattr(args, name)) for name in ("dataset", "noise", "level", "seed", "out")}
    flags["options"] = ("--set", None)  # names the flag in a problem of the options as a whole
    flags.update({f"options.{name}": ("--set", value) for name, value in args.options or []})
    settings = load_command_settings(CorruptCommandSettings, None, "", flags)
    noise = create_noise(settings.noise, settings.level, settings.options)
    summary = corrupt_dataset(settings.dataset, noise, settings.seed, settings.out, progress=args.progress)
    print(
        f"wrote {summary['clips']} clips to {settings.out} ({noise.name} at level {noise.level:g}, seed {settings.seed})"
    )
    if summary["unchanged"]:
        stream = "audio" if noise.modality == "audio" else "video"
        print(
            f"{len(summary['unchanged'])} clip(s) without a{'n' if stream == 'audio' else ''} {stream} stream, "
            f"copied unchanged: {', '.join(summary['unchanged'])}"
        )
    return 0


def register(commands) -> None:
    parser = commands.add_parser(
        "corrupt", help="corrupt the audio or video of every clip of a raw dataset (a new dataset folder)"
    )
    parser.add_argument("--dataset", help="the raw dataset folder (label.csv and Raw/<video_id>/<clip_id>.<ext>)")
    parser.add_argument("--noise", help=f"one of {', '.join(sorted(NOISES))} (docs/corruption.md)")
    parser.add_argument(
        "--level", type=float, help="the noise's level: SNR in dB, a share, a cutoff in Hz, a blur sigma, a gain"
    )
    parser.add_argument(
        "--seed", type=int, help="seed of the noise's randomness, drawn per clip from it and the clip's id (default 0)"
    )
    parser.add_argument("--out", help="the dataset folder to write (must not exist or be empty)")
    parser.add_argument(
        "--set",
        dest="options",
        type=_option,
        action="append",
        metavar="NAME=VALUE",
        help="one option of the noise, e.g. span_seconds=0.25 for mute (repeatable)",
    )
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.set_defaults(handler=cmd_corrupt)
