"""Robustness curves (mean and std over seeds per rate, AUILC), their figure, and the report across datasets.

Each sweep writes one row per (missing rate, seed) with the metrics of that run; the report aggregates
over seeds (mean and population std, as MMSA) and integrates each metric over the rates (AUILC).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robustmm import metrics as metric_functions

RATE_COLUMN = "rate"
SEED_COLUMN = "seed"


@dataclass(frozen=True)
class Curve:
    """One metric of one dataset against the missing rate."""

    rates: tuple[float, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    auilc: float


def read_runs(path: str | Path) -> list[dict[str, float]]:
    """The per-run table: one row per (rate, seed), numeric columns."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{path}: no runs")
    missing = {RATE_COLUMN, SEED_COLUMN} - set(rows[0])
    if missing:
        raise ValueError(f"{path}: no column {', '.join(sorted(missing))} (columns: {', '.join(rows[0])})")
    try:
        # An empty cell is an undefined metric (pandas writes NaN so, e.g. Corr of constant predictions).
        return [{key: float(value) if value != "" else math.nan for key, value in row.items() if value is not None}
                for row in rows]
    except ValueError as error:
        raise ValueError(f"{path}: a value is not a number ({error})") from None


def curves(runs: list[dict[str, float]], names: list[str], source: str = "runs") -> dict[str, Curve]:
    """Per metric in `names`: mean and std over seeds at each rate, and the AUILC over all rates."""
    rates = sorted({run[RATE_COLUMN] for run in runs})
    result = {}
    for name in names:
        if any(name not in run for run in runs):
            raise ValueError(f"{source}: metric {name!r} missing from some runs")
        per_rate = [metric_functions.aggregate([{name: run[name]} for run in runs if run[RATE_COLUMN] == rate])[name] for rate in rates]
        mean = tuple(float(stats["mean"]) for stats in per_rate)
        result[name] = Curve(
            rates=tuple(rates),
            mean=mean,
            std=tuple(float(stats["std"]) for stats in per_rate),
            auilc=float(metric_functions.auilc(rates, mean)) if len(rates) > 1 else float("nan"),
        )
    return result


def shown_metrics(columns, by_family: dict[str, list[str]], source: str = "runs") -> list[str]:
    """The metrics to show for a table with these columns: those of the first family all of whose are there."""
    for names in by_family.values():
        if set(names) <= set(columns):
            return list(names)
    raise ValueError(f"{source}: its metrics ({', '.join(columns)}) match none of {by_family}")


def shown(value: float) -> str:
    """Four decimals, or n/a for an undefined value (NaN: e.g. Corr of constant predictions)."""
    return "n/a" if math.isnan(value) else f"{value:.4f}"


def summary_table(results: dict[str, dict[str, Curve]]) -> str:
    """Markdown: per dataset and metric, the value at the lowest and the highest rate and the AUILC."""
    lines = ["| dataset | metric | at rate 0 | at the largest rate | AUILC |", "|---|---|---|---|---|"]
    for dataset, by_metric in results.items():
        for name, curve in by_metric.items():
            first = f"{shown(curve.mean[0])} ± {shown(curve.std[0])} (r={curve.rates[0]:g})"
            last = f"{shown(curve.mean[-1])} ± {shown(curve.std[-1])} (r={curve.rates[-1]:g})"
            lines.append(f"| {dataset} | {name} | {first} | {last} | {shown(curve.auilc)} |")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, dict[str, Curve]], path: str | Path) -> None:
    """One row of panels per dataset, one panel per metric: mean over seeds with a band of one std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = max(len(by_metric) for by_metric in results.values())
    figure, axes = plt.subplots(len(results), columns, figsize=(3.2 * columns, 2.6 * len(results)), squeeze=False)
    for row, (dataset, by_metric) in enumerate(results.items()):
        for column in range(columns):
            axis = axes[row][column]
            if column >= len(by_metric):
                axis.axis("off")
                continue
            name, curve = list(by_metric.items())[column]
            rates, mean, std = (np.asarray(values) for values in (curve.rates, curve.mean, curve.std))
            defined = np.isfinite(mean)  # undefined points are left out, not drawn as zero
            axis.plot(rates[defined], mean[defined], marker="o")
            axis.fill_between(rates[defined], (mean - std)[defined], (mean + std)[defined], alpha=0.25)
            auilc = "n/a" if math.isnan(curve.auilc) else f"{curve.auilc:.3f}"
            axis.set_title(f"{dataset}: {name} (AUILC {auilc})", fontsize=9)
            axis.set_xlabel("missing rate")
            axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120, metadata={"Software": None})
    plt.close(figure)


def write_plot_data(results: dict[str, dict[str, Curve]], folder: Path) -> None:
    """One small table per dataset and metric (`rate, mean, std`), the form `dvc plots show` draws."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.csv"):
        stale.unlink()
    for dataset, by_metric in results.items():
        for name, curve in by_metric.items():
            with open(folder / f"{dataset}_{name}.csv", "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle, lineterminator="\n")
                writer.writerow((RATE_COLUMN, "mean", "std"))
                writer.writerows(row for row in zip(curve.rates, curve.mean, curve.std) if not math.isnan(row[1]))


def write_report(runs_tables: dict[str, str | Path], by_family: dict[str, list[str]], out_dir: str | Path) -> dict:
    """Read each dataset's per-run table; write `summary.md`, `robustness.png` and `plots/` under `out_dir`.

    `by_family` lists the metrics to show per metric family (mosi, sims, avec); each table shows those of
    the family its columns belong to.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for dataset, table in runs_tables.items():
        runs = read_runs(table)
        results[dataset] = curves(runs, shown_metrics(runs[0], by_family, str(table)), source=str(table))
    (out_dir / "summary.md").write_text(summary_table(results), encoding="utf-8")
    plot(results, out_dir / "robustness.png")
    write_plot_data(results, out_dir / "plots")
    return results
