"""`robustmm extract` and `robustmm assemble`: flags, or a section of a YAML/JSON config file (flags win)."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from robustmm.features.assemble import assemble, describe_truncation
from robustmm.features.extract import DEFAULT_MAX_FAILURE_SHARE, extract
from robustmm.presets import MODALITIES
from robustmm.settings import (
    AssembleCommandSettings, ExtractCommandSettings, SettingsError, load_command_settings, read_section,
)


def _parse_option(text: str) -> tuple[str, str, object]:
    target, separator, value = text.partition("=")
    modality, dot, key = target.partition(".")
    if not separator or not dot or modality not in MODALITIES or not key:
        raise SettingsError([f"--option {text!r}: expected MODALITY.KEY=VALUE with MODALITY one of {', '.join(MODALITIES)}"])
    try:
        return modality, key, yaml.safe_load(value)
    except yaml.YAMLError:
        raise SettingsError([f"--option {text!r}: the value is not valid YAML"]) from None


def cmd_extract(args: argparse.Namespace) -> int:
    raw = read_section(args.config, args.section) if args.config else {}
    flags = {name: ("--" + name.replace("_", "-"), getattr(args, name))
             for name in ("dataset", "output_dir", "cache_dir", "workers", "max_failure_share", "executor", "ray_address", "shard")}
    for modality in MODALITIES:
        if isinstance(raw.get(modality), str):
            raw[modality] = {"extractor": raw[modality]}
        name = getattr(args, modality)
        if name:
            # The config's options belong to the extractor it names; a flag naming another one starts from defaults.
            configured = raw.get(modality)
            if not isinstance(configured, dict) or configured.get("extractor") != name:
                raw[modality] = {}
            flags[f"{modality}.extractor"] = (f"--{modality}", name)
    options = [("--fps", "vision", "fps", args.fps), ("--text-length", "text", "max_length", args.text_length)]
    options += [(f"--option {text}", *_parse_option(text)) for text in args.option]
    for flag, modality, key, value in options:
        if value is not None:
            if not raw.get(modality) and f"{modality}.extractor" not in flags:
                raise SettingsError([f"{flag}: given, but no {modality} extractor is named (--{modality} or the config section)"])
            flags[f"{modality}.{key}"] = (flag, value)
    settings = load_command_settings(ExtractCommandSettings, args.config, args.section, flags, raw)
    extractors = settings.extractors()
    output_dir = Path(settings.output_dir)
    reports = extract(
        dataset_dir=settings.dataset,
        extractors={modality: (chosen.extractor, chosen.options) for modality, chosen in extractors.items()},
        outputs={modality: output_dir / f"{modality}.pkl" for modality in extractors},
        cache_dir=settings.cache_dir,
        workers=settings.workers,
        max_failure_share=settings.max_failure_share,
        progress=not args.no_progress,
        executor=settings.executor,
        ray_address=settings.ray_address,
        shard=settings.shard,
    )
    if settings.shard:
        done = ", ".join(f"{modality} {summary['clips']}" for modality, summary in reports.items())
        print(f"shard {settings.shard}: clips extracted into {settings.cache_dir}: {done}; "
              f"an extract without --shard writes the features from the cache")
        return 0
    for modality, report in reports.items():
        faces = f", faces found in {report['face_detected_share']:.1%} of sampled frames" if modality == "vision" and report["face_detected_share"] is not None else ""
        print(f"{modality} ({report['extractor']}): {report['clips']} clips, {report['failed']} failed{faces} -> {output_dir / f'{modality}.pkl'}")
    return 0


def cmd_assemble(args: argparse.Namespace) -> int:
    names = ("dataset", "output", "lengths", "features_dir", *(f"{modality}_features" for modality in MODALITIES))
    flags = {name: ("--" + name.replace("_", "-"), getattr(args, name)) for name in names}
    settings = load_command_settings(AssembleCommandSettings, args.config, args.section, flags)
    features_dir = Path(settings.features_dir)
    paths = {modality: getattr(settings, f"{modality}_features") or features_dir / f"{modality}.pkl" for modality in MODALITIES}
    assembled = assemble(dataset_dir=settings.dataset, output=settings.output, lengths=settings.lengths, **paths)
    sizes = ", ".join(f"{split} {len(assembled[split]['id'])}" for split in ("train", "valid", "test"))
    print(f"wrote {settings.output}: {sizes}; {len(assembled['meta']['failures'])} modality failures")
    for line in describe_truncation(assembled["meta"]):
        print(f"  {line}")
    return 0


def register(commands) -> None:
    parser = commands.add_parser("extract", help="extract text/audio/vision features of a raw dataset (cached per clip)")
    parser.add_argument("--dataset", help="dataset folder with label.csv and Raw/<video_id>/<clip_id>.<ext>")
    parser.add_argument("--text", metavar="EXTRACTOR", help="text extractor (bert)")
    parser.add_argument("--audio", metavar="EXTRACTOR", help="audio extractor (librosa, opensmile, mfcc)")
    parser.add_argument("--vision", metavar="EXTRACTOR", help="vision extractor (mediapipe, openface)")
    parser.add_argument("--output-dir", help="where <modality>.pkl and <modality>.report.json go (default features)")
    parser.add_argument("--cache-dir", help="per-clip cache folder (default cache/features)")
    parser.add_argument("--workers", type=int, help="worker processes (Ray actors with --executor ray) for audio/vision "
                                                    "(default: CPU count)")
    parser.add_argument("--executor", help="local (default) or ray: audio/vision clips on a Ray cluster")
    parser.add_argument("--ray-address", help="the Ray cluster (default: RAY_ADDRESS, else a local Ray instance)")
    parser.add_argument("--shard", metavar="I/N", help="extract only every N-th clip from the I-th (0-based) into the "
                        "cache and write nothing else; an extract without --shard then writes the features")
    parser.add_argument("--fps", type=float, help="video frames sampled per second (vision extractor config fps)")
    parser.add_argument("--text-length", type=int, help="tokens per transcript, L_t (text extractor config max_length)")
    parser.add_argument("--option", action="append", default=[], metavar="MODALITY.KEY=VALUE",
                        help="set one extractor config value, e.g. audio.sample_rate=16000 (repeatable)")
    parser.add_argument("--max-failure-share", type=float,
                        help=f"fail when more than this share of clips fail a modality (default {DEFAULT_MAX_FAILURE_SHARE})")
    parser.add_argument("--config", help="YAML/JSON file holding the settings (flags override it)")
    parser.add_argument("--section", default="extract", help="dotted section of --config (default extract)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=cmd_extract)

    parser = commands.add_parser("assemble", help="combine extracted modalities and label.csv into the .pkl format")
    parser.add_argument("--dataset", help="dataset folder with label.csv (labels, splits, transcripts)")
    parser.add_argument("--features-dir", help="folder of text.pkl, audio.pkl, vision.pkl (default features)")
    for modality in MODALITIES:
        parser.add_argument(f"--{modality}-features", help=f"{modality} features file (default <features-dir>/{modality}.pkl)")
    parser.add_argument("--output", help="the .pkl to write")
    parser.add_argument("--lengths", type=int, nargs=3, metavar=("L_T", "L_A", "L_V"), help="padded lengths text audio vision")
    parser.add_argument("--config", help="YAML/JSON file holding the settings (flags override it)")
    parser.add_argument("--section", default="assemble", help="dotted section of --config (default assemble)")
    parser.set_defaults(handler=cmd_assemble)
