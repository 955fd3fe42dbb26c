"""Clean-trained models tested on corrupted features: the robustness of TFR-Net to signal noise, per noise and level.

The models are the sweep's at missing rate 0 (trained here with the sweep's settings, one per training seed, and
kept: their folders are reused while the data and settings are unchanged). Each is tested on the test split of
the clean file and of every corrupted file, with nothing missing. A corrupted file must hold the same test clips
with the same assembled lengths and dims as the clean one, so that only the signal differs.

Outputs in `out`: `corruptions.csv` (one row per corrupted set and the clean one: noise, level, mean and std of
every metric over the training seeds), `corruptions.json` (flat `<set>/<metric>_mean|_std` keys for
`dvc metrics show`) and `corruptions.png` (each key metric against the level, one column per noise, the clean
value dashed).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robustmm import data as feature_data
from robustmm import metrics

CLEAN = "clean"
COMPARED_KEYS = ("text_bert", "audio", "vision")  # their lengths and dims must match the clean file's


@dataclass(frozen=True)
class CorruptedSet:
    name: str  # the corrupted dataset, e.g. demo-white_noise-10
    noise: str
    level: float
    data: str  # its feature file


def check_comparable(clean: dict, clean_path: str | Path, corrupted: dict, corrupted_path: str | Path) -> None:
    """The corrupted test split holds the clean one's clips, in order, with the same lengths and dims."""
    problems = []
    clean_test, test = clean["test"], corrupted["test"]
    if list(map(str, clean_test["id"])) != list(map(str, test["id"])):
        problems.append(f"its test clips differ from those of {clean_path} (a corrupted copy holds the same clips)")
    for key in COMPARED_KEYS:
        if np.shape(test[key])[1:] != np.shape(clean_test[key])[1:]:
            problems.append(
                f"test/{key} has shape (N, {', '.join(map(str, np.shape(test[key])[1:]))}), {clean_path} "
                f"(N, {', '.join(map(str, np.shape(clean_test[key])[1:]))}): assemble both with the same lengths and extractors"
            )
    if problems:
        raise feature_data.FormatError(corrupted_path, problems)


def evaluate_corruptions(
    data: str | Path,
    dataset: str,
    corrupted: list[CorruptedSet],
    out: str | Path,
    model_dir: str | Path,
    key_metrics: tuple[str, ...] | None = None,
    **sweep_arguments,
) -> list[dict]:
    """Train (or reuse) the rate-0 models on `data` with `sweep_arguments` (robustmm.experiments.sweep's), test
    them on the clean and every corrupted test split; write the outputs to `out` and return the table's rows."""
    from robustmm.experiments import run_dir_name, sweep
    from robustmm.train import evaluate_checkpoint

    out, model_dir = Path(out), Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)  # a stage output, even when there is nothing to train
    rows = []
    if corrupted:
        clean = feature_data.load(data)
        for entry in corrupted:
            check_comparable(clean, data, feature_data.load(entry.data), entry.data)
        arguments = {**sweep_arguments, "rates": [0.0], "keep_models": True, "model_dir": model_dir / "runs"}
        sweep(data, dataset, out=model_dir, **arguments)
        seeds = sorted({int(row["seed"]) for row in _read_csv(model_dir / "results.csv")})
        device = sweep_arguments.get("device", "auto")
        for entry in [CorruptedSet(CLEAN, "none", math.nan, str(data)), *corrupted]:
            runs = [
                {
                    name: value
                    for name, value in evaluate_checkpoint(
                        model_dir / "runs" / run_dir_name(0.0, seed) / "best.pt", entry.data, rate=0.0, device=device
                    ).items()
                    if name not in ("split", "rate", "missing_seeds")
                }
                for seed in seeds
            ]
            summary = metrics.aggregate(runs)
            rows.append(
                {
                    "corruption": entry.name,
                    "noise": entry.noise,
                    "level": entry.level,
                    "seeds": len(seeds),
                    **{
                        f"{name}_{statistic}": stats[statistic]
                        for name, stats in summary.items()
                        for statistic in ("mean", "std")
                    },
                }
            )
    write_outputs(rows, out, key_metrics or ())
    return rows


def _read_csv(path: Path) -> list[dict]:
    import pandas as pd

    return pd.read_csv(path).to_dict("records")


def write_outputs(rows: list[dict], out: Path, key_metrics: tuple[str, ...]) -> None:
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    columns = list(rows[0]) if rows else ["corruption", "noise", "level", "seeds"]
    pd.DataFrame(rows, columns=columns).to_csv(out / "corruptions.csv", index=False)
    flat = {
        f"{row['corruption']}/{name}": None if math.isnan(value) else value
        for row in rows
        for name, value in row.items()
        if name.endswith(("_mean", "_std"))
    }
    (out / "corruptions.json").write_text(json.dumps(flat, indent=2, sort_keys=True, allow_nan=False))
    plot(rows, key_metrics, out / "corruptions.png")


def plot(rows: list[dict], key_metrics: tuple[str, ...], path: Path) -> None:
    """One row of panels per key metric, one column per noise: the mean over seeds against the level (a band
    of one std), the clean models' value dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clean = next((row for row in rows if row["corruption"] == CLEAN), None)
    noises = sorted({row["noise"] for row in rows if row["corruption"] != CLEAN})
    if clean is None or not noises:
        figure, axis = plt.subplots(figsize=(4, 1.5))
        axis.axis("off")
        axis.text(0.5, 0.5, "no corruptions configured", ha="center", va="center")
    else:
        names = [name for name in key_metrics if f"{name}_mean" in clean] or [
            column[: -len("_mean")] for column in clean if column.endswith("_mean")
        ]
        figure, axes = plt.subplots(
            len(names), len(noises), figsize=(3.2 * len(noises), 2.4 * len(names)), squeeze=False
        )
        for column, noise in enumerate(noises):
            points = sorted((row for row in rows if row["noise"] == noise), key=lambda row: row["level"])
            levels = np.array([row["level"] for row in points])
            for line, name in enumerate(names):
                axis = axes[line][column]
                mean = np.array([row[f"{name}_mean"] for row in points])
                std = np.array([row[f"{name}_std"] for row in points])
                axis.plot(levels, mean, marker="o")
                axis.fill_between(levels, mean - std, mean + std, alpha=0.25)
                axis.axhline(clean[f"{name}_mean"], linestyle="--", color="grey", label=CLEAN)
                axis.set_title(f"{noise}: {name}", fontsize=9)
                axis.set_xlabel("level")
                axis.grid(alpha=0.3)
        axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120, metadata={"Software": None})
    plt.close(figure)
