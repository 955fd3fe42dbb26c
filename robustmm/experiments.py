"""The missing-rate sweep: TFR-Net tested at every rate of a grid, then mean/std per rate and AUILC.

Two protocols: `per_rate` (TFR-Net / EMT-DLFR) trains and tests one model per (rate, seed); `train_once` (LNLN)
trains one model per seed with per-sample random rates, selects it on the validation split at a stated rate
and tests it at every rate. The rate drops features in a missing pattern of robustmm.missing (default iid).

Outputs in `out`: `runs/rate_<r>_seed_<s>/` (fingerprint, checkpoint and result.json of each run; another
pattern's runs are `<pattern>_rate_<r>_seed_<s>/`, train-once runs `[<pattern>_]train_once_seed_<s>/`),
`results.csv` (one row per (rate, seed)), `metrics.json` (flat numeric keys for `dvc metrics show`: per rate,
AUILC over the grid and the mean over rates 0..0.9; prefixed `<pattern>/` and `train_once/` away from the
default, so that `dvc metrics diff` never pairs numbers of different patterns or protocols), `run_info.json`
(which mode, preset source, settings, missing pattern and protocol produced them),
`robustness.csv` (metric mean/std vs rate, for `dvc plots show`), `robustness.png` and `curves/<curve>.tsv`
(every run's per-epoch train_loss, valid_loss and learning rates, for `dvc plots show`). Finished runs of the
same fingerprint are reused and unfinished ones resumed, so an interrupted sweep continues.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import multiprocessing
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import torch

from robustmm import metrics, report
from robustmm.device import resolve_device
from robustmm.executors import Shard
from robustmm.missing import (
    PATTERNS,
    PER_TRAINING_SEED,
    PROTOCOL_MISSING_SEEDS,
    PROTOCOLS,
    SPAN_DISTRIBUTIONS,
    MissingPattern,
    TrainOnce,
    check_missing_seeds,
    missing_pattern,
    pattern_record,
)
from robustmm.presets import PRESET_SOURCES, Preset, check_tfr_net_overrides
from robustmm.progress import SweepProgress
from robustmm.run_options import KERNELS, TEXT_MODES, TEXT_TARGETS
from robustmm.settings import RunResources, SweepCommandSettings, TrainCommandSettings, load_command_settings
from robustmm.train import (
    RunConfig,
    data_sha256,
    evaluate_checkpoint,
    finished_result,
    load_features,
    run_fingerprint,
    train,
)

MODEL_NAMES = ("tfr_net",)


def rate_name(rate: float) -> str:
    """`rate_0.001`: the shortest text that reads back as the same float, so distinct rates never share a name."""
    return f"rate_{float(rate)!r}"


def run_dir_name(rate: float, seed: int, pattern: MissingPattern | None = None) -> str:
    return f"{pattern_prefix(pattern)}{rate_name(rate)}_seed_{seed}"


def train_once_dir_name(seed: int, pattern: MissingPattern | None = None) -> str:
    return f"{pattern_prefix(pattern)}train_once_seed_{seed}"


def pattern_prefix(pattern: MissingPattern | None) -> str:
    """`block_`: another pattern's runs live beside the iid ones (whose names are those of earlier versions)."""
    return "" if pattern is None or pattern.name == "iid" else f"{pattern.name}_"


def metrics_label(pattern: MissingPattern, protocol: str) -> str:
    """The metrics.json prefix of a pattern and protocol other than the default (iid, per_rate)."""
    return "".join(f"{part}/" for part in (pattern.name, protocol) if part not in ("iid", "per_rate"))


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
    checkpointing: bool | str = "auto",
    kernels: str = "auto",
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
    missing: str = "iid",
    patterns: dict | None = None,
    protocol: str = "per_rate",
    train_once: dict | None = None,
    torch_threads: int | None = None,
    executor: str = "local",
    workers: int = 1,
    resources: RunResources | Mapping = RunResources(),
    ray_address: str | None = None,
    shard: Shard | None = None,
) -> dict:
    """Test TFR-Net at every rate of a grid on the feature file `data`; returns the metrics.json dict.

    `missing` names the pattern the rate drops features in (robustmm.missing: iid, per_modality, block,
    modality), with its settings in `patterns[missing]`. `protocol` "per_rate" trains one model per (rate, seed);
    "train_once" one per seed, with the robustmm.missing.TrainOnce settings `train_once` (per-sample training
    rates, complete share, validation rate), tested at every rate.

    `rates` and `seeds` (training seeds) default to the preset's protocol; `missing_seeds` are the (text,
    audio, vision) seeds of the masks, the same for every training seed (or "per_training_seed");
    `preset_source` picks the upstream TFR-Net configuration ("tfr-net", "mmsa", "emt-dlfr"; None: the
    preset's default) and `tfr_net` changes single settings by name. `epochs` caps the epochs (default: the
    preset's, with early stopping); `model_dir` holds the per-run folders (default `out/runs`);
    `keep_models=False` deletes each run's checkpoint once it is tested. `metric_family` and `label_range`
    describe a `custom` dataset (default mosi metrics, labels in (-3, 3)). A run folder made with other data,
    settings or robustmm version is an error, or with `overwrite` trained afresh.

    Each run trains with `torch_threads` PyTorch threads (None: PyTorch's default), `workers` runs at once in
    their own processes (`executor` "local"), or as one Ray task per run claiming `resources` on the cluster at
    `ray_address` ("ray"; robustmm.executors.connect_ray); the results do not depend on either. `shard` trains
    only that shard's runs (every N-th of the rate-major list), writes nothing else and returns {}."""
    missing_seeds = check_missing_seeds(missing_seeds)
    tfr_net = check_tfr_net_overrides(tfr_net) if tfr_net else None
    pattern = missing_pattern(missing, (patterns or {}).get(missing))
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}")
    once = TrainOnce(**(train_once or {})) if protocol == "train_once" else None
    resources = RunResources(**resources) if isinstance(resources, Mapping) else resources
    shared = SweepData(
        str(data),
        dataset,
        metric_family,
        None if label_range is None else tuple(label_range),
        preset_source,
        json.dumps(tfr_net, sort_keys=True) if tfr_net else None,
        text_encoder,
        text_mode,
        device,
    )
    one_at_a_time = executor == "local" and workers == 1
    try:
        with _torch_threads(torch_threads):
            # Runs trained in other processes load the encoder's weights there: here it is checked without them.
            _, preset, encoder, _, _ = _sweep_context(shared, load_weights=one_at_a_time)
        rates = sorted(float(rate) for rate in (preset.missing_rates if rates is None else rates))
        seeds = [int(seed) for seed in (preset.seeds if seeds is None else seeds)]
        if not rates or not seeds:
            raise ValueError("a sweep needs at least one rate and one seed")
        for name, values in (("rate", rates), ("seed", seeds)):
            repeated = sorted({value for value in values if values.count(value) > 1})
            if repeated:
                raise ValueError(
                    f"{name} {', '.join(map(str, repeated))} listed twice: each run would count twice in the mean"
                )
        out = Path(out)
        model_dir = Path(model_dir) if model_dir is not None else out / "runs"
        common = dict(
            dataset=dataset,
            text_mode=text_mode,
            text_encoder=encoder.name,
            text_target=text_target,
            simam=simam,
            faithful=faithful,
            device=device,
            amp=amp,
            checkpointing=checkpointing,
            kernels=kernels,
            max_epochs=epochs,
            batch_size=batch_size,
            progress=progress and one_at_a_time,
            metric_family=metric_family,
            label_range=shared.label_range,
            missing_seeds=missing_seeds,
            preset_source=preset_source,
            tfr_net=tfr_net,
            missing=pattern_record(pattern),
        )
        if once is None:
            planned = [
                (RunConfig(**common, rate=rate, seed=seed), run_dir_name(rate, seed, pattern))
                for rate in rates
                for seed in seeds
            ]
        else:
            planned = [
                (
                    RunConfig(**common, rate=once.valid_rate, seed=seed, train_once=once, test_rates=tuple(rates)),
                    train_once_dir_name(seed, pattern),
                )
                for seed in seeds
            ]
        tasks = [RunTask(config, str(model_dir / name), overwrite, keep_models) for config, name in planned]
        chosen = shard.select(tasks) if shard else tasks
        at_once = 1 if one_at_a_time else (workers if executor == "local" else None)
        with SweepProgress(len(chosen), bar=progress, parallel=at_once) as shown:
            if executor == "ray":
                from robustmm.executors import connect_ray, ray_sweep

                rows = ray_sweep.run_tasks(connect_ray(ray_address), shared, chosen, resources, torch_threads, shown)
            elif one_at_a_time:
                with _torch_threads(torch_threads):
                    rows = _in_order(chosen, collect_rows(_one_by_one(shared, chosen, shown), shown))
            else:
                rows = _run_in_processes(shared, chosen, workers, torch_threads, shown)
    finally:
        _SWEEP_CONTEXT.clear()  # the data and the encoder are not kept past the sweep
    if shard:
        return {}
    write_curves(Path(out) / CURVES, {Path(task.run_dir).name: run_history(task.run_dir) for task in tasks})
    return write_outputs(
        rows, out, preset.key_metrics, run_info(preset, tasks[-1].config, seeds), metrics_label(pattern, protocol)
    )


# ------------------------------------------------------------------------------------- the runs of a sweep


@dataclass(frozen=True)
class SweepData:
    """What every run of a sweep reads: the feature file, how to read it, and the text encoder. Each process
    that trains runs builds these once (_sweep_context)."""

    data: str
    dataset: str
    metric_family: str | None
    label_range: tuple[float, float] | None
    preset_source: str | None
    tfr_net: str | None  # the overrides as sorted JSON (hashable)
    text_encoder: str | None
    text_mode: str
    device: str


@dataclass(frozen=True)
class RunTask:
    """One (rate, seed) run of a sweep: its settings and its folder."""

    config: RunConfig
    run_dir: str
    overwrite: bool
    keep_models: bool


_SWEEP_CONTEXT: dict = {}  # this process's loaded data, preset, encoder, complete-text cache and data hash


def _sweep_context(shared: SweepData, load_weights: bool = True) -> tuple:
    """The loaded data, preset, text encoder, frozen complete-text cache and data hash of `shared`, built once per
    process (keyed also by the file's size and time, so a rewritten file is read again). Without `load_weights`
    the encoder has its tokenizer and config only, and cannot train a frozen-mode run."""
    from robustmm.text_encoder import TextEncoder

    try:
        stat = os.stat(shared.data)
        key = (shared, load_weights, stat.st_size, stat.st_mtime_ns)
    except OSError:  # load_features says what is wrong with the path
        key = (shared, load_weights, None, None)
    if key not in _SWEEP_CONTEXT:
        _SWEEP_CONTEXT.clear()
        tfr_net = json.loads(shared.tfr_net) if shared.tfr_net else None
        loaded, preset = load_features(
            shared.data, shared.dataset, shared.metric_family, shared.label_range, shared.preset_source, tfr_net
        )
        encoder = TextEncoder(
            shared.text_encoder or preset.text_encoder,
            device=resolve_device(shared.device),
            load_weights=load_weights and shared.text_mode == "frozen",
        )
        _SWEEP_CONTEXT[key] = (loaded, preset, encoder, {}, data_sha256(loaded))
    return _SWEEP_CONTEXT[key]


def train_run(shared: SweepData, task: RunTask) -> dict:
    """Train (or reuse, or resume) one run of a sweep: its rows of results.csv ("rows"), what the progress line
    shows of it ("result"), whether a finished run was reused ("reused") and the seconds it took here."""
    loaded, preset, encoder, complete_cache, data_hash = _sweep_context(shared)
    result_path = Path(task.run_dir) / "result.json"
    finished_before, started = _modified(result_path), time.perf_counter()
    result = train(
        loaded,
        preset,
        task.config,
        task.run_dir,
        encoder,
        complete_cache,
        data_hash=data_hash,
        overwrite=task.overwrite,
    )
    reused = finished_before is not None and finished_before == _modified(result_path)
    return _outcome(task, result, time.perf_counter() - started, reused)


def _finished_outcome(shared: SweepData, task: RunTask) -> dict | None:
    """train_run's outcome of a run already finished with this fingerprint, read from its folder; else None."""
    _, preset, _, _, data_hash = _sweep_context(shared, load_weights=False)
    result = finished_result(Path(task.run_dir), run_fingerprint(preset, task.config, data_hash))
    return None if result is None else _outcome(task, result, 0.0, reused=True)


def _outcome(task: RunTask, result: dict, seconds: float, reused: bool) -> dict:
    if not task.keep_models:
        (Path(task.run_dir) / "best.pt").unlink(missing_ok=True)
    shown = {key: result[key] for key in ("epochs", "best_epoch", "best_valid_loss", "test")}
    return {"rows": result_rows(result), "result": shown, "seconds": seconds, "reused": reused}


def result_rows(result: dict) -> list[dict]:
    """A run's rows of results.csv: its test at its rate, or (train-once) one row per test rate."""
    tested = result.get("test_by_rate") or [{"rate": result["rate"], "metrics": result["test"]}]
    return [
        {
            "rate": entry["rate"],
            "seed": result["seed"],
            "epochs": result["epochs"],
            "best_epoch": result["best_epoch"],
            "train_seconds": result["train_seconds"],
            **entry["metrics"],
        }
        for entry in tested
    ]


@contextlib.contextmanager
def _torch_threads(count: int | None):
    """PyTorch's intra-op threads set to `count` (None: unchanged) while in the block."""
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _start_worker(torch_threads: int | None) -> None:
    if torch_threads:
        torch.set_num_threads(torch_threads)


def _one_by_one(shared: SweepData, tasks: list[RunTask], shown: SweepProgress) -> Iterator[tuple[RunTask, dict]]:
    for task in tasks:
        shown.run_started(task.config.rate, task.config.seed)
        yield task, train_run(shared, task)


def collect_rows(done: Iterable[tuple[RunTask, dict]], shown: SweepProgress) -> dict[str, list[dict]]:
    """The rows of the runs as they finish ({run folder: rows}), each run's line shown as it finishes."""
    rows = {}
    for task, outcome in done:
        rows[task.run_dir] = outcome["rows"]
        shown.run_finished(
            task.config.rate, task.config.seed, outcome["result"], reused=outcome["reused"], seconds=outcome["seconds"]
        )
    return rows


def _in_order(tasks: list[RunTask], rows: dict[str, list[dict]]) -> list[dict]:
    return [row for task in tasks for row in rows[task.run_dir]]


def _run_in_processes(
    shared: SweepData, tasks: list[RunTask], workers: int, torch_threads: int | None, shown: SweepProgress
) -> list[dict]:
    """`workers` runs at once, each process loading the data once; the rows in the order of `tasks`. Finished
    runs are read here, and no process starts for them (a worker's start-up takes seconds)."""
    finished = {task.run_dir: outcome for task in tasks if (outcome := _finished_outcome(shared, task)) is not None}
    rows = collect_rows(((task, finished[task.run_dir]) for task in tasks if task.run_dir in finished), shown)
    to_train = [task for task in tasks if task.run_dir not in finished]
    if not to_train:
        return _in_order(tasks, rows)
    context = multiprocessing.get_context("spawn")  # no forked copies of PyTorch's thread pools
    with ProcessPoolExecutor(
        min(workers, len(to_train)), mp_context=context, initializer=_start_worker, initargs=(torch_threads,)
    ) as pool:
        futures = {pool.submit(train_run, shared, task): task for task in to_train}
        try:
            done = ((futures[future], future.result()) for future in as_completed(futures))
            rows |= collect_rows(done, shown)
        except BrokenProcessPool:
            raise RuntimeError(
                "a sweep worker process died (killed or out of memory); finished runs are kept, "
                "a rerun resumes the others"
            ) from None
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return _in_order(tasks, rows)


def _modified(path: Path) -> int | None:
    """The file's modification time in ns, None when absent: an unchanged result.json means a reused run."""
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def run_info(preset: Preset, config: RunConfig, seeds: list[int]) -> dict:
    """What produced a sweep's numbers: model mode, TFR-Net settings and their source, the missing pattern and
    protocol."""
    pattern = config.pattern
    once = config.train_once
    return {
        "dataset": preset.name,
        "mode": "faithful" if config.faithful else "corrected",
        "simam": config.simam,
        "text_mode": config.text_mode,
        "text_encoder": config.text_encoder,
        "preset_source": preset.preset_source,
        "tfr_net_overrides": config.tfr_net or {},
        "tfr_net": dataclasses.asdict(preset.tfr_net),
        "missing": {**pattern_record(pattern), "rate": pattern.rate_meaning},
        "protocol": {
            "name": "per_rate" if once is None else "train_once",
            "training": (
                "one model trained and tested per (rate, seed), the same rate on train, valid and test"
                if once is None
                else f"one model per seed trained with per-sample rates uniform in [{once.train_rates[0]:g}, "
                f"{once.train_rates[1]:g}] ({once.complete_share:g} of the samples complete), selected on the "
                f"validation split at rate {once.valid_rate:g}, tested at every rate"
            ),
            "selection": "early stopping and the best checkpoint on the validation split; the test split selects nothing",
            **({} if once is None else {"train_once": dataclasses.asdict(once)}),
            "masks": (
                "drawn with each training seed for all three modalities"
                if config.missing_seeds == PER_TRAINING_SEED
                else "fixed per modality, the same for every training seed"
            ),
            "missing_seeds": config.missing_seeds
            if config.missing_seeds == PER_TRAINING_SEED
            else list(config.missing_seeds),
            "training_seeds": seeds,
            "auilc": report.AUILC_PROTOCOL,
            report.MEAN_KEY: report.MEAN_PROTOCOL,
        },
    }


# The training curves of every run in one file per curve, for `dvc plots show` (dvc.yaml, .dvc/plots/run_curves.json):
# the run folders' own DVCLive logs hold the same points, but DVC cannot declare a glob over runs/.
CURVES = "curves"
CURVE_NAMES = ("train_loss", "valid_loss", "learning_rate", "learning_rate_bert")


def run_history(run_dir: str | Path) -> list[dict]:
    """A finished run's per-epoch history (result.json), trained here or reused."""
    return json.loads((Path(run_dir) / "result.json").read_text())["history"]


def write_curves(folder: Path, histories: Mapping[str, list[dict]]) -> None:
    """`folder`/<curve>.tsv for each curve some run logged: columns run, epoch, <curve>; one row per run and epoch
    (an epoch whose value is undefined, e.g. a NaN loss, is left out). Files of curves no run logged are removed."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in CURVE_NAMES:
        lines = [
            f"{run}\t{entry['epoch']}\t{float(entry[name])!r}"
            for run, history in histories.items()
            for entry in history
            if entry.get(name) is not None and math.isfinite(entry[name])
        ]
        path = folder / f"{name}.tsv"
        if lines:
            path.write_text("\n".join([f"run\tepoch\t{name}", *lines]) + "\n")
        else:
            path.unlink(missing_ok=True)


def write_outputs(
    rows: list[dict], out: Path, key_metrics: tuple[str, ...], info: dict | None = None, label: str = ""
) -> dict:
    """results.csv (the rows), robustness.csv, metrics.json (mean/std per rate, AUILC, mean over rates 0..0.9,
    each key prefixed with `label`), run_info.json (`info`, with the rates swept and those the mean covers),
    robustness.png."""
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out / "results.csv", index=False)
    names = [name for name in rows[0] if name not in report.RUN_COLUMNS]
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
    flat = {label + key: None if math.isnan(value) else value for key, value in flat.items()}
    (out / "metrics.json").write_text(json.dumps(flat, indent=2, sort_keys=True, allow_nan=False))
    if info is not None:
        info = {
            **info,
            "protocol": {**info["protocol"], "rates": list(rates), f"{report.MEAN_KEY}_rates": list(mean_rates)},
        }
        (out / report.RUN_INFO).write_text(json.dumps(info, indent=2, sort_keys=True))
    report.plot(
        {out.name: {name: by_metric[name] for name in key_metrics if name in by_metric}}, out / "robustness.png"
    )
    return flat


def run(
    model_name: str,
    dataset_name: str,
    seeds: list[int] | None = None,
    *,
    data: str | Path,
    model_save_dir: str | Path | None = None,
    res_save_dir: str | Path = "results/sweep",
    gpu_ids: list[int] | None = None,
    **settings,
) -> dict:
    """MMSA_run's call shape: `run('tfr_net', 'mosi', seeds=[1111], data='unaligned_50.pkl', gpu_ids=[0])`.

    gpu_ids [] or None picks the device automatically, [i] means cuda:i; other keyword arguments go to `sweep`."""
    if model_name.lower() not in MODEL_NAMES:
        raise ValueError(f"unknown model {model_name!r}: robustmm trains {', '.join(MODEL_NAMES)}")
    if gpu_ids and len(gpu_ids) > 1:
        raise ValueError("one GPU per run: pass gpu_ids=[i]")
    device = f"cuda:{gpu_ids[0]}" if gpu_ids else settings.pop("device", "auto")
    return sweep(
        data, dataset_name.lower(), seeds=seeds, out=res_save_dir, model_dir=model_save_dir, device=device, **settings
    )


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


def _names(text: str) -> list[str]:
    return [value.strip() for value in text.split(",") if value.strip()]


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


def _checkpointing(text: str) -> bool | str:
    """The flag's words as the setting's values (the settings schema checks them)."""
    return {"true": True, "false": False}.get(text.lower(), text)


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    # Defaults are None ("not given"): the settings schema (robustmm.settings) holds the defaults and checks
    # every value, so that a flag, a --config key and a params.yaml key fail the same way.
    parser.add_argument("--data", required=True, help="the .pkl feature file")
    parser.add_argument("--dataset", required=True, help="preset: mosi, mosei, sims, simsv2, avec2019 or custom")
    parser.add_argument(
        "--text-mode",
        choices=TEXT_MODES,
        help="finetune BERT on corrupted ids (default), or frozen cached encoder outputs",
    )
    parser.add_argument("--text-encoder", help="Hugging Face name or local folder (default: the preset's)")
    parser.add_argument(
        "--text-target",
        choices=TEXT_TARGETS,
        help="frozen mode: complete-text target from the encoder (default) or the file's `text`",
    )
    parser.add_argument("--simam", action="store_true", default=None, help="insert SimAM (see docs/training.md)")
    parser.add_argument(
        "--faithful", action="store_true", default=None, help="reproduce the upstream implementation's quirks"
    )
    parser.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument(
        "--amp", action="store_true", default=None, help="mixed precision (bf16 where supported, else fp16 on CUDA)"
    )
    parser.add_argument(
        "--checkpointing",
        type=_checkpointing,
        metavar="auto|true|false|text-encoder",
        help="recompute activations in backward to save memory: everywhere, nowhere, in the text encoder only, "
        "or (default auto) the least that fits in half the free memory",
    )
    parser.add_argument(
        "--kernels",
        choices=KERNELS,
        help="auto (default): robustmm's compiled CPU kernels (attention of heads of up to 8 dims, dropout) where "
        "they apply, else PyTorch's; pytorch: PyTorch's always. The same function",
    )
    parser.add_argument("--epochs", type=int, help="maximum epochs (default: the preset's cap; early stopping applies)")
    parser.add_argument("--batch-size", type=int, help="default: the preset's")
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bars")
    parser.add_argument(
        "--metric-family", choices=metrics.FAMILIES, help="--dataset custom: metrics of mosi (default), sims or avec"
    )
    parser.add_argument(
        "--label-range",
        type=_label_range,
        metavar="LOW,HIGH",
        help="--dataset custom: the labels' scale, checked against the file (default -3,3)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        default=None,
        help="train afresh in a run folder made with other data, settings or robustmm version (default: refuse)",
    )
    parser.add_argument(
        "--missing-seeds",
        metavar="T,A,V",
        help=f"seeds of the text,audio,vision masks, the same for every training seed (default "
        f"111,1111,11111; MMSA: 1111,1111,1111), or {PER_TRAINING_SEED}",
    )
    parser.add_argument(
        "--preset-source",
        choices=PRESET_SOURCES,
        help="upstream configuration of the TFR-Net settings (default: the preset's; docs/training.md)",
    )
    parser.add_argument(
        "--set",
        dest="tfr_net",
        type=_setting,
        action="append",
        metavar="NAME=VALUE",
        help="change one TFR-Net setting, e.g. learning_rate_other=1e-3 or recon_weights=1,1,1 (repeatable)",
    )
    parser.add_argument(
        "--missing", choices=PATTERNS, help="missing pattern the rate drops features in (default iid; docs/training.md)"
    )
    parser.add_argument(
        "--modality-rates",
        type=_floats,
        metavar="T,A,V",
        help="per_modality: fixed text,audio,vision rates of the modalities not swept (default 0,0,0)",
    )
    parser.add_argument(
        "--swept", type=_names, metavar="MODALITIES", help="per_modality: modalities that take the rate (default audio)"
    )
    parser.add_argument(
        "--block-modalities",
        type=_names,
        metavar="MODALITIES",
        help="block: modalities with missing blocks (default all)",
    )
    parser.add_argument(
        "--span-distribution",
        choices=SPAN_DISTRIBUTIONS,
        help="block: span lengths uniform in [min, max] (default) or geometric",
    )
    parser.add_argument("--min-span", type=int, help="block: shortest span in steps (default 1)")
    parser.add_argument("--max-span", type=int, help="block: longest span in steps (default 10)")
    parser.add_argument("--mean-span", type=float, help="block, geometric: mean span in steps")
    parser.add_argument(
        "--absent-modalities",
        type=_names,
        metavar="MODALITIES",
        help="modality: modalities that may be absent as a whole (default all)",
    )


# Flags of one missing pattern's or protocol's settings: {settings key: flag destination}.
OPTION_FLAGS = {
    "patterns.per_modality.rates": "modality_rates",
    "patterns.per_modality.swept": "swept",
    "patterns.block.modalities": "block_modalities",
    "patterns.block.distribution": "span_distribution",
    "patterns.block.min_span": "min_span",
    "patterns.block.max_span": "max_span",
    "patterns.block.mean_span": "mean_span",
    "patterns.modality.modalities": "absent_modalities",
    "train_once.train_rates": "train_rates",
    "train_once.complete_share": "complete_share",
    "train_once.valid_rate": "valid_rate",
}

MODEL_FLAGS = (
    "text_mode",
    "text_encoder",
    "text_target",
    "simam",
    "faithful",
    "device",
    "amp",
    "checkpointing",
    "kernels",
    "epochs",
    "batch_size",
    "metric_family",
    "label_range",
    "missing_seeds",
    "preset_source",
    "missing",
)


def _flags(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, tuple[str, object]]:
    """The settings given as flags: {key: (flag, value)}, value None when the flag was not given. Each --set
    NAME=VALUE is the key tfr_net.NAME, so that it changes one entry of a config section's `tfr_net`."""
    flags = {name: ("--" + name.replace("_", "-"), getattr(args, name)) for name in names}
    flags["progress"] = ("--no-progress", args.progress)
    if "keep_models" in names:
        flags["keep_models"] = ("--no-keep-models", args.keep_models)
    flags.update({f"tfr_net.{name}": ("--set", value) for name, value in args.tfr_net or []})
    flags.update(
        {
            key: ("--" + dest.replace("_", "-"), getattr(args, dest))
            for key, dest in OPTION_FLAGS.items()
            if hasattr(args, dest)
        }
    )
    return flags


def cmd_sweep(args: argparse.Namespace) -> int:
    names = (
        *MODEL_FLAGS,
        "rates",
        "seeds",
        "out",
        "model_dir",
        "keep_models",
        "torch_threads",
        "overwrite",
        "executor",
        "workers",
        "ray_address",
        "shard",
        "protocol",
    )
    flags = {
        **_flags(args, names),
        "resources.cpus": ("--run-cpus", args.run_cpus),
        "resources.gpus": ("--run-gpus", args.run_gpus),
    }
    settings = load_command_settings(SweepCommandSettings, args.config, args.section, flags)
    flat = sweep(args.data, args.dataset, **settings.sweep_arguments())
    if settings.shard:
        model_dir = settings.model_dir or Path(settings.out) / "runs"
        print(
            f"shard {settings.shard}: its runs are in {model_dir}; a sweep without --shard writes the results from them"
        )
        return 0
    for key in sorted(flat):
        if ("auilc/" in key or f"{report.MEAN_KEY}/" in key) and flat[key] is not None:
            print(f"{key}: {flat[key]:.4f}")
    print(f"wrote {Path(settings.out) / 'results.csv'}, metrics.json, robustness.csv, robustness.png, curves/")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from robustmm.text_encoder import TextEncoder

    settings = load_command_settings(
        TrainCommandSettings, None, "", _flags(args, (*MODEL_FLAGS, "rate", "seed", "out", "overwrite"))
    )
    loaded, preset = load_features(
        args.data, args.dataset, settings.metric_family, settings.label_range, settings.preset_source, settings.tfr_net
    )
    encoder = TextEncoder(
        settings.text_encoder or preset.text_encoder,
        device=resolve_device(settings.device),
        load_weights=settings.text_mode == "frozen",
    )
    config = RunConfig(
        dataset=args.dataset,
        rate=settings.rate,
        seed=settings.seed,
        text_mode=settings.text_mode,
        text_encoder=encoder.name,
        text_target=settings.text_target,
        simam=settings.simam,
        faithful=settings.faithful,
        device=settings.device,
        amp=settings.amp,
        checkpointing=settings.checkpointing,
        kernels=settings.kernels,
        max_epochs=settings.epochs,
        batch_size=settings.batch_size,
        progress=settings.progress,
        metric_family=settings.metric_family,
        label_range=settings.label_range,
        missing_seeds=settings.missing_seeds,
        preset_source=settings.preset_source,
        tfr_net=settings.tfr_net,
        missing=missing_pattern(settings.missing, (settings.patterns or {}).get(settings.missing)),
    )
    result = train(loaded, preset, config, settings.out, encoder, overwrite=settings.overwrite)
    print(
        json.dumps(
            {"rate": result["rate"], "seed": result["seed"], "best_epoch": result["best_epoch"], **result["test"]},
            indent=2,
        )
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    result = evaluate_checkpoint(
        args.checkpoint,
        args.data,
        rate=args.rate,
        missing_seeds=args.missing_seeds,
        split=args.split,
        device=args.device,
    )
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
    train_parser.add_argument(
        "--out", help="run folder (checkpoints, result.json; default results/train); resumes if interrupted"
    )
    train_parser.set_defaults(handler=cmd_train)

    sweep_parser = commands.add_parser(
        "sweep", help="train and test one model per (missing rate, seed); table, metrics, figure"
    )
    _add_model_flags(sweep_parser)
    sweep_parser.add_argument("--rates", type=_floats, help="comma-separated, e.g. 0,0.5 (default: the preset's grid)")
    sweep_parser.add_argument("--seeds", type=_ints, help="training seeds, comma-separated (default: 111,1111,11111)")
    sweep_parser.add_argument("--out", help="output folder (default results/sweep)")
    sweep_parser.add_argument("--model-dir", help="checkpoint folder (default: OUT/runs)")
    sweep_parser.add_argument(
        "--no-keep-models",
        dest="keep_models",
        action="store_false",
        default=None,
        help="delete each run's checkpoint after testing",
    )
    sweep_parser.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        help="per_rate: one model per (rate, seed) (default); train_once: one model per seed, tested at every rate",
    )
    sweep_parser.add_argument(
        "--train-rates",
        type=_floats,
        metavar="LOW,HIGH",
        help="train_once: per-sample training rates uniform in [LOW, HIGH] (default 0,1)",
    )
    sweep_parser.add_argument(
        "--complete-share", type=float, help="train_once: share of complete training samples (default 0)"
    )
    sweep_parser.add_argument(
        "--valid-rate", type=float, help="train_once: rate of the validation split that selects the model (default 0.5)"
    )
    sweep_parser.add_argument(
        "--torch-threads", type=int, help="CPU threads for PyTorch in each run (default: one per core)"
    )
    sweep_parser.add_argument("--executor", help="local (default) or ray: one Ray task per (rate, seed)")
    sweep_parser.add_argument(
        "--workers", type=int, help="local executor: runs at once, each in its own process (default 1)"
    )
    sweep_parser.add_argument("--ray-address", help="the Ray cluster (default: RAY_ADDRESS, else a local Ray instance)")
    sweep_parser.add_argument("--run-cpus", type=float, help="ray: CPUs each run claims (default 1)")
    sweep_parser.add_argument(
        "--run-gpus", type=float, help="ray: share of a GPU each run claims, e.g. 0.25 (default 0)"
    )
    sweep_parser.add_argument(
        "--shard",
        metavar="I/N",
        help="train only every N-th run from the I-th (0-based) "
        "and write nothing else; a sweep without --shard then writes the results",
    )
    sweep_parser.add_argument("--config", help="YAML/JSON file holding the settings (flags override it)")
    sweep_parser.add_argument("--section", default="sweep", help="dotted section of --config (default sweep)")
    sweep_parser.set_defaults(handler=cmd_sweep)

    evaluate_parser = commands.add_parser("evaluate", help="metrics of a saved checkpoint on a feature file")
    evaluate_parser.add_argument("checkpoint", help="a run's best.pt")
    evaluate_parser.add_argument("--data", required=True, help="the .pkl feature file")
    evaluate_parser.add_argument("--rate", type=float, default=None, help="missing rate (default: the run's)")
    evaluate_parser.add_argument(
        "--missing-seeds",
        type=_missing_seeds,
        default=None,
        metavar="T,A,V",
        help=f"seeds of the text,audio,vision masks or {PER_TRAINING_SEED} (default: the run's)",
    )
    evaluate_parser.add_argument("--split", default="test", help="train, valid or test")
    evaluate_parser.add_argument("--device", default="auto")
    evaluate_parser.add_argument("--output", default=None, help="also write the metrics JSON here")
    evaluate_parser.set_defaults(handler=cmd_evaluate)
