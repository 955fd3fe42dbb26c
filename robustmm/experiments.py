"""The missing-rate sweep: one TFR-Net trained and tested per (rate, seed), then mean/std per rate and AUILC.

Outputs in `out`: `runs/rate_<r>_seed_<s>/` (fingerprint, checkpoint and result.json of each run), `results.csv`
(one row per run), `metrics.json` (flat numeric keys for `dvc metrics show`: per rate, AUILC over the grid and
the mean over rates 0..0.9), `run_info.json` (which mode, preset source, settings and protocol produced them),
`robustness.csv` (metric mean/std vs rate, for `dvc plots show`) and `robustness.png`. Finished runs of the
same fingerprint are reused and unfinished ones resumed, so an interrupted sweep continues.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import torch

from robustmm import metrics, report
from robustmm.device import resolve_device
from robustmm.missing import PER_TRAINING_SEED, PROTOCOL_MISSING_SEEDS, check_missing_seeds
from robustmm.models.tfr_net import TEXT_MODES
from robustmm.presets import PRESET_SOURCES, Preset, check_tfr_net_overrides
from robustmm.progress import SweepProgress
from robustmm.settings import SweepCommandSettings, TrainCommandSettings, load_command_settings
from robustmm.train import TEXT_TARGETS, RunConfig, data_sha256, evaluate_checkpoint, load_features, train

MODEL_NAMES = ("tfr_net",)


def rate_name(rate: float) -> str:
    """`rate_0.001`: the shortest text that reads back as the same float, so distinct rates never share a name."""
    return f"rate_{float(rate)!r}"


def run_dir_name(rate: float, seed: int) -> str:
    return f"{rate_name(rate)}_seed_{seed}"


def sweep(
    data: str | Path,
    dataset: str,
    rates: list[float] | None = None,
    seeds: list[int] | None = None,
    out: str | Path = "results/sweep",
    model_dir: str | Path | None = None,
    text_mode: str = "finetune",
    text_encoder: str | None = None,
    text_target: str = "encoder",
    simam: bool = False,
    faithful: bool = False,
    device: str = "auto",
    amp: bool = False,
    epochs: int | None = None,
    batch_size: int | None = None,
    keep_models: bool = True,
    progress: bool = True,
    metric_family: str | None = None,
    label_range: tuple[float, float] | None = None,
    overwrite: bool = False,
    missing_seeds: tuple[int, int, int] | str = PROTOCOL_MISSING_SEEDS,
    preset_source: str | None = None,
    tfr_net: dict | None = None,
) -> dict:
    """Train and test one model per (rate, seed) on the feature file `data`; returns the metrics.json dict.

    `rates` and `seeds` (training seeds) default to the preset's protocol; `missing_seeds` are the (text,
    audio, vision) seeds of the masks, the same for every training seed (or "per_training_seed");
    `preset_source` picks the upstream TFR-Net configuration ("tfr-net", "mmsa", "emt-dlfr"; None: the
    preset's default) and `tfr_net` changes single settings by name. `epochs` caps the epochs (default: the
    preset's, with early stopping); `model_dir` holds the per-run folders (default `out/runs`);
    `keep_models=False` deletes each run's checkpoint once it is tested. `metric_family` and `label_range`
    describe a `custom` dataset (default mosi metrics, labels in (-3, 3)). A run folder made with other data,
    settings or robustmm version is an error, or with `overwrite` trained afresh."""
    from robustmm.text_encoder import TextEncoder

    missing_seeds = check_missing_seeds(missing_seeds)
    tfr_net = check_tfr_net_overrides(tfr_net) if tfr_net else None
    loaded, preset = load_features(data, dataset, metric_family, label_range, preset_source, tfr_net)
    rates = sorted(float(rate) for rate in (preset.missing_rates if rates is None else rates))
    seeds = [int(seed) for seed in (preset.seeds if seeds is None else seeds)]
    if not rates or not seeds:
        raise ValueError("a sweep needs at least one rate and one seed")
    for name, values in (("rate", rates), ("seed", seeds)):
        repeated = sorted({value for value in values if values.count(value) > 1})
        if repeated:
            raise ValueError(f"{name} {', '.join(map(str, repeated))} listed twice: each run would count twice in the mean")
    out = Path(out)
    model_dir = Path(model_dir) if model_dir is not None else out / "runs"
    encoder = TextEncoder(text_encoder or preset.text_encoder, device=resolve_device(device), load_weights=text_mode == "frozen")
    complete_cache: dict = {}
    data_hash = data_sha256(loaded)
    rows = []
    with SweepProgress(len(rates) * len(seeds), bar=progress) as progress_display:
        for rate in rates:
            for seed in seeds:
                config = RunConfig(
                    dataset=dataset, rate=rate, seed=seed, text_mode=text_mode, text_encoder=encoder.name,
                    text_target=text_target, simam=simam, faithful=faithful, device=device, amp=amp,
                    max_epochs=epochs, batch_size=batch_size, progress=progress, metric_family=metric_family,
                    label_range=None if label_range is None else tuple(label_range), missing_seeds=missing_seeds,
                    preset_source=preset_source, tfr_net=tfr_net,
                )
                run_dir = model_dir / run_dir_name(rate, seed)
                finished_before = _modified(run_dir / "result.json")
                progress_display.run_started(rate, seed)
                result = train(loaded, preset, config, run_dir, encoder, complete_cache, data_hash=data_hash, overwrite=overwrite)
                reused = finished_before is not None and finished_before == _modified(run_dir / "result.json")
                progress_display.run_finished(rate, seed, result, reused=reused)
                if not keep_models:
                    (run_dir / "best.pt").unlink(missing_ok=True)
                rows.append({"rate": rate, "seed": seed, "epochs": result["epochs"], "best_epoch": result["best_epoch"],
                             "train_seconds": result["train_seconds"], **result["test"]})
    return write_outputs(rows, out, preset.key_metrics, run_info(preset, config, seeds))


def _modified(path: Path) -> int | None:
    """The file's modification time in ns, None when absent: an unchanged result.json means a reused run."""
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def run_info(preset: Preset, config: RunConfig, seeds: list[int]) -> dict:
    """What produced a sweep's numbers: model mode, TFR-Net settings and their source, the missing protocol."""
    return {
        "dataset": preset.name,
        "mode": "faithful" if config.faithful else "corrected",
        "simam": config.simam,
        "text_mode": config.text_mode,
        "text_encoder": config.text_encoder,
        "preset_source": preset.preset_source,
        "tfr_net_overrides": config.tfr_net or {},
        "tfr_net": dataclasses.asdict(preset.tfr_net),
        "protocol": {
            "masks": ("drawn with each training seed for all three modalities" if config.missing_seeds == PER_TRAINING_SEED
                      else "fixed per modality, the same for every training seed"),
            "missing_seeds": config.missing_seeds if config.missing_seeds == PER_TRAINING_SEED else list(config.missing_seeds),
            "training_seeds": seeds,
            "auilc": report.AUILC_PROTOCOL,
            report.MEAN_KEY: report.MEAN_PROTOCOL,
        },
    }


def write_outputs(rows: list[dict], out: Path, key_metrics: tuple[str, ...], info: dict | None = None) -> dict:
    """results.csv (the rows), robustness.csv, metrics.json (mean/std per rate, AUILC, mean over rates 0..0.9),
    run_info.json (`info`, with the rates swept and those the mean covers), robustness.png."""
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out / "results.csv", index=False)
    names = [name for name in rows[0] if name not in ("rate", "seed", "epochs", "best_epoch", "train_seconds")]
    by_metric = report.curves(rows, names, source=str(out / "results.csv"))
    rates = by_metric[names[0]].rates
    columns = {"rate": rates}
    for name, curve in by_metric.items():
        columns[f"{name}_mean"], columns[f"{name}_std"] = curve.mean, curve.std
    pd.DataFrame(columns).to_csv(out / "robustness.csv", index=False)

    flat = {
        f"{rate_name(rate)}/{name}_{statistic}": getattr(curve, statistic)[index]
        for name, curve in by_metric.items()
        for index, rate in enumerate(rates)
        for statistic in ("mean", "std")
    }
    if len(rates) > 1:
        flat.update({f"auilc/{name}": curve.auilc for name, curve in by_metric.items()})
    mean_rates = report.mean_rates(rates)
    if mean_rates:
        flat.update({f"{report.MEAN_KEY}/{name}": report.mean_over_rates(curve) for name, curve in by_metric.items()})
    # NaN (e.g. Corr of constant predictions) is not JSON: DVC and strict parsers need null.
    flat = {key: None if math.isnan(value) else value for key, value in flat.items()}
    (out / "metrics.json").write_text(json.dumps(flat, indent=2, sort_keys=True, allow_nan=False))
    if info is not None:
        info = {**info, "protocol": {**info["protocol"], "rates": list(rates), f"{report.MEAN_KEY}_rates": list(mean_rates)}}
        (out / report.RUN_INFO).write_text(json.dumps(info, indent=2, sort_keys=True))
    report.plot({out.name: {name: by_metric[name] for name in key_metrics if name in by_metric}}, out / "robustness.png")
    return flat


def run(model_name: str, dataset_name: str, seeds: list[int] | None = None, *, data: str | Path,
        model_save_dir: str | Path | None = None, res_save_dir: str | Path = "results/sweep",
        gpu_ids: list[int] | None = None, **settings) -> dict:
    """MMSA_run's call shape: `run('tfr_net', 'mosi', seeds=[1111], data='unaligned_50.pkl', gpu_ids=[0])`.

    gpu_ids [] or None picks the device automatically, [i] means cuda:i; other keyword arguments go to `sweep`."""
    if model_name.lower() not in MODEL_NAMES:
        raise ValueError(f"unknown model {model_name!r}: robustmm trains {', '.join(MODEL_NAMES)}")
    if gpu_ids and len(gpu_ids) > 1:
        raise ValueError("one GPU per run: pass gpu_ids=[i]")
    device = f"cuda:{gpu_ids[0]}" if gpu_ids else settings.pop("device", "auto")
    return sweep(data, dataset_name.lower(), seeds=seeds, out=res_save_dir, model_dir=model_save_dir, device=device, **settings)


# ---------------------------------------------------------------------------------------- command line


def _floats(text: str) -> list[float]:
    return [float(value) for value in text.split(",") if value.strip()]


def _ints(text: str) -> list[int]:
    return [int(value) for value in text.split(",") if value.strip()]


def _missing_seeds(text: str) -> tuple[int, int, int] | str:
    try:
        return check_missing_seeds(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _setting(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE, e.g. learning_rate_other=1e-3")
    return name.strip(), value.strip()


def _label_range(text: str) -> tuple[float, float]:
    values = _floats(text)
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"{text!r} is not LOW,HIGH")
    return values[0], values[1]


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    # Defaults are None ("not given"): the settings schema (robustmm.settings) holds the defaults and checks
    # every value, so that a flag, a --config key and a params.yaml key fail the same way.
    parser.add_argument("--data", required=True, help="the .pkl feature file")
    parser.add_argument("--dataset", required=True, help="preset: mosi, mosei, sims, simsv2, avec2019 or custom")
    parser.add_argument("--text-mode", choices=TEXT_MODES, help="finetune BERT on corrupted ids (default), or frozen cached encoder outputs")
    parser.add_argument("--text-encoder", help="Hugging Face name or local folder (default: the preset's)")
    parser.add_argument("--text-target", choices=TEXT_TARGETS, help="frozen mode: complete-text target from the encoder (default) or the file's `text`")
    parser.add_argument("--simam", action="store_true", default=None, help="insert SimAM (see docs/training.md)")
    parser.add_argument("--faithful", action="store_true", default=None, help="reproduce the upstream implementation's quirks")
    parser.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--amp", action="store_true", default=None, help="mixed precision (bf16 where supported, else fp16 on CUDA)")
    parser.add_argument("--epochs", type=int, help="maximum epochs (default: the preset's cap; early stopping applies)")
    parser.add_argument("--batch-size", type=int, help="default: the preset's")
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bars")
    parser.add_argument("--metric-family", choices=metrics.FAMILIES, help="--dataset custom: metrics of mosi (default), sims or avec")
    parser.add_argument("--label-range", type=_label_range, metavar="LOW,HIGH",
                        help="--dataset custom: the labels' scale, checked against the file (default -3,3)")
    parser.add_argument("--overwrite", action="store_true", default=None,
                        help="train afresh in a run folder made with other data, settings or robustmm version (default: refuse)")
    parser.add_argument("--missing-seeds", metavar="T,A,V",
                        help=f"seeds of the text,audio,vision masks, the same for every training seed (default "
                             f"111,1111,11111; MMSA: 1111,1111,1111), or {PER_TRAINING_SEED}")
    parser.add_argument("--preset-source", choices=PRESET_SOURCES,
                        help="upstream configuration of the TFR-Net settings (default: the preset's; docs/training.md)")
    parser.add_argument("--set", dest="tfr_net", type=_setting, action="append", metavar="NAME=VALUE",
                        help="change one TFR-Net setting, e.g. learning_rate_other=1e-3 or recon_weights=1,1,1 (repeatable)")


MODEL_FLAGS = ("text_mode", "text_encoder", "text_target", "simam", "faithful", "device", "amp", "epochs", "batch_size",
               "metric_family", "label_range", "missing_seeds", "preset_source")


def _flags(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, tuple[str, object]]:
    """The settings given as flags: {key: (flag, value)}, value None when the flag was not given. Each --set
    NAME=VALUE is the key tfr_net.NAME, so that it changes one entry of a config section's `tfr_net`."""
    flags = {name: ("--" + name.replace("_", "-"), getattr(args, name)) for name in names}
    flags["progress"] = ("--no-progress", args.progress)
    if "keep_models" in names:
        flags["keep_models"] = ("--no-keep-models", args.keep_models)
    flags.update({f"tfr_net.{name}": ("--set", value) for name, value in args.tfr_net or []})
    return flags


def cmd_sweep(args: argparse.Namespace) -> int:
    names = (*MODEL_FLAGS, "rates", "seeds", "out", "model_dir", "keep_models", "torch_threads", "overwrite")
    settings = load_command_settings(SweepCommandSettings, args.config, args.section, _flags(args, names))
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    flat = sweep(args.data, args.dataset, **settings.sweep_arguments())
    for key in sorted(flat):
        if key.startswith(("auilc/", f"{report.MEAN_KEY}/")) and flat[key] is not None:
            print(f"{key}: {flat[key]:.4f}")
    print(f"wrote {Path(settings.out) / 'results.csv'}, metrics.json, robustness.csv, robustness.png")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from robustmm.text_encoder import TextEncoder

    settings = load_command_settings(TrainCommandSettings, None, "", _flags(args, (*MODEL_FLAGS, "rate", "seed", "out", "overwrite")))
    loaded, preset = load_features(args.data, args.dataset, settings.metric_family, settings.label_range,
                                   settings.preset_source, settings.tfr_net)
    encoder = TextEncoder(settings.text_encoder or preset.text_encoder, device=resolve_device(settings.device),
                          load_weights=settings.text_mode == "frozen")
    config = RunConfig(
        dataset=args.dataset, rate=settings.rate, seed=settings.seed, text_mode=settings.text_mode,
        text_encoder=encoder.name, text_target=settings.text_target, simam=settings.simam, faithful=settings.faithful,
        device=settings.device, amp=settings.amp, max_epochs=settings.epochs, batch_size=settings.batch_size,
        progress=settings.progress, metric_family=settings.metric_family, label_range=settings.label_range,
        missing_seeds=settings.missing_seeds, preset_source=settings.preset_source, tfr_net=settings.tfr_net,
    )
    result = train(loaded, preset, config, settings.out, encoder, overwrite=settings.overwrite)
    print(json.dumps({"rate": result["rate"], "seed": result["seed"], "best_epoch": result["best_epoch"], **result["test"]}, indent=2))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    result = evaluate_checkpoint(args.checkpoint, args.data, rate=args.rate, missing_seeds=args.missing_seeds,
                                 split=args.split, device=args.device)
    text = json.dumps(result, indent=2)
    if args.output:
        Path(args.output).write_text(text)
    print(text)
    return 0


def register(commands) -> None:
    train_parser = commands.add_parser("train", help="train and test TFR-Net at one missing rate and seed")
    _add_model_flags(train_parser)
    train_parser.add_argument("--rate", type=float, help="missing rate of every modality and split (default 0)")
    train_parser.add_argument("--seed", type=int, help="training seed: init, dropout, shuffling (default 1111)")
    train_parser.add_argument("--out", help="run folder (checkpoints, result.json; default results/train); resumes if interrupted")
    train_parser.set_defaults(handler=cmd_train)

    sweep_parser = commands.add_parser("sweep", help="train and test one model per (missing rate, seed); table, metrics, figure")
    _add_model_flags(sweep_parser)
    sweep_parser.add_argument("--rates", type=_floats, help="comma-separated, e.g. 0,0.5 (default: the preset's grid)")
    sweep_parser.add_argument("--seeds", type=_ints, help="training seeds, comma-separated (default: 111,1111,11111)")
    sweep_parser.add_argument("--out", help="output folder (default results/sweep)")
    sweep_parser.add_argument("--model-dir", help="checkpoint folder (default: OUT/runs)")
    sweep_parser.add_argument("--no-keep-models", dest="keep_models", action="store_false", default=None,
                              help="delete each run's checkpoint after testing")
    sweep_parser.add_argument("--torch-threads", type=int, help="CPU threads for PyTorch (default: one per core)")
    sweep_parser.add_argument("--config", help="YAML/JSON file holding the settings (flags override it)")
    sweep_parser.add_argument("--section", default="sweep", help="dotted section of --config (default sweep)")
    sweep_parser.set_defaults(handler=cmd_sweep)

    evaluate_parser = commands.add_parser("evaluate", help="metrics of a saved checkpoint on a feature file")
    evaluate_parser.add_argument("checkpoint", help="a run's best.pt")
    evaluate_parser.add_argument("--data", required=True, help="the .pkl feature file")
    evaluate_parser.add_argument("--rate", type=float, default=None, help="missing rate (default: the run's)")
    evaluate_parser.add_argument("--missing-seeds", type=_missing_seeds, default=None, metavar="T,A,V",
                                 help=f"seeds of the text,audio,vision masks or {PER_TRAINING_SEED} (default: the run's)")
    evaluate_parser.add_argument("--split", default="test", help="train, valid or test")
    evaluate_parser.add_argument("--device", default="auto")
    evaluate_parser.add_argument("--output", default=None, help="also write the metrics JSON here")
    evaluate_parser.set_defaults(handler=cmd_evaluate)
