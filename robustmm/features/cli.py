"""`robustmm extract` and `robustmm assemble`: flags, or a section of a YAML/JSON config file (flags win)."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from robustmm.config import read_config_section
from robustmm.features.assemble import assemble, describe_truncation
from robustmm.features.extract import DEFAULT_MAX_FAILURE_SHARE, extract
from robustmm.presets import MODALITIES


def _extractor_spec(modality: str, spec) -> tuple[str, dict]:
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, dict) and isinstance(spec.get("extractor"), str):
        return spec["extractor"], {key: value for key, value in spec.items() if key != "extractor"}
    raise ValueError(f"config {modality}: expected an extractor name or a mapping with `extractor`, got {spec!r}")


def _parse_option(text: str) -> tuple[str, str, object]:
    target, separator, value = text.partition("=")
    modality, dot, key = target.partition(".")
    if not separator or not dot or modality not in MODALITIES or not key:
        raise ValueError(f"--option {text!r}: expected MODALITY.KEY=VALUE with MODALITY one of {', '.join(MODALITIES)}")
    return modality, key, yaml.safe_load(value)


def cmd_extract(args: argparse.Namespace) -> int:
    config = read_config_section(args.config, args.section)
    specs = {modality: _extractor_spec(modality, config[modality]) for modality in MODALITIES if config.get(modality)}
    for modality in MODALITIES:
        name = getattr(args, modality)
        if name:
            # The config's options belong to the extractor it names; a flag naming another one starts from defaults.
            config_name, options = specs.get(modality, (None, {}))
            specs[modality] = (name, options if name == config_name else {})
    if not specs:
        raise ValueError("name at least one extractor: --text, --audio or --vision (or those keys in the config section)")
    overrides = [("text", "max_length", args.text_length), ("vision", "fps", args.fps)]
    overrides += [_parse_option(option) for option in args.option]
    for modality, key, value in overrides:
        if value is not None:
            if modality not in specs:
                raise ValueError(f"{modality}.{key} given but no {modality} extractor is named")
            specs[modality][1][key] = value
    dataset = args.dataset or config.get("dataset")
    if not dataset:
        raise ValueError("--dataset (or `dataset` in the config section) is required")
    output_dir = Path(args.output_dir or config.get("output_dir", "features"))
    reports = extract(
        dataset_dir=dataset,
        extractors=specs,
        outputs={modality: output_dir / f"{modality}.pkl" for modality in specs},
        cache_dir=args.cache_dir or config.get("cache_dir", "cache/features"),
        workers=args.workers if args.workers is not None else config.get("workers"),
        max_failure_share=float(args.max_failure_share if args.max_failure_share is not None
                                else config.get("max_failure_share", DEFAULT_MAX_FAILURE_SHARE)),
        progress=not args.no_progress,
    )
    for modality, report in reports.items():
        faces = f", faces found in {report['face_detected_share']:.1%} of sampled frames" if modality == "vision" and report["face_detected_share"] is not None else ""
        print(f"{modality} ({report['extractor']}): {report['clips']} clips, {report['failed']} failed{faces} -> {output_dir / f'{modality}.pkl'}")
    return 0


def cmd_assemble(args: argparse.Namespace) -> int:
    config = read_config_section(args.config, args.section)
    features_dir = Path(args.features_dir or config.get("features_dir", "features"))
    paths = {modality: getattr(args, f"{modality}_features") or config.get(f"{modality}_features") or features_dir / f"{modality}.pkl"
             for modality in MODALITIES}
    lengths = args.lengths or config.get("lengths")
    dataset, output = args.dataset or config.get("dataset"), args.output or config.get("output")
    if not dataset or not output or not lengths:
        raise ValueError("--dataset, --output and --lengths (or those keys in the config section) are required")
    if isinstance(lengths, dict):
        lengths = [lengths[modality] for modality in MODALITIES]
    assembled = assemble(dataset_dir=dataset, output=output, lengths=lengths, **paths)
    sizes = ", ".join(f"{split} {len(assembled[split]['id'])}" for split in ("train", "valid", "test"))
    print(f"wrote {output}: {sizes}; {len(assembled['meta']['failures'])} modality failures")
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
    parser.add_argument("--workers", type=int, help="worker processes for audio/vision (default: CPU count)")
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
