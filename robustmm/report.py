"""Robustness curves (mean and std over seeds per rate, AUILC), their figure, and the report across datasets.

Each sweep writes one row per (missing rate, seed) with the metrics of that run; the report aggregates
over seeds (mean and population std, as MMSA) and summarises each metric over the rates in two ways, both
from the same models: the AUILC over the whole grid (the TFR-Net / EMT-DLFR protocol) and the plain mean
over the rates 0..0.9 (the figure LNLN-style papers print). Beside them, for a named preset, the published
TFR-Net and EMT-DLFR numbers made the same way (robustmm.published); and a per-rate table of every metric.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robustmm import metrics as metric_functions
from robustmm import published as literature

RATE_COLUMN = "rate"
SEED_COLUMN = "seed"
# The columns of a sweep's results.csv that describe a run rather than measure it.
RUN_COLUMNS = (RATE_COLUMN, SEED_COLUMN, "epochs", "best_epoch", "train_seconds")
PER_RATE_TABLE, PER_RATE_DATA = "per_rate.md", "per_rate.csv"
RUN_INFO = "run_info.json"  # beside results.csv: mode, preset source, settings and protocol of the sweep
MEAN_KEY = "mean_0_0.9"  # metrics.json prefix of the mean over rates 0..0.9
MEAN_LAST_RATE = 0.9
AUILC_PROTOCOL = "TFR-Net/EMT-DLFR: trapezoid area of the metric over all rates swept, r = 0 included"
MEAN_PROTOCOL = "LNLN-style: plain mean of the metric over the swept rates from 0 to 0.9"


@dataclass(frozen=True)
class Curve:
    """One metric of one dataset against the missing rate."""

    rates: tuple[float, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    auilc: float


def mean_rates(rates) -> tuple[float, ...]:
    """The swept rates that the mean over 0..0.9 covers."""
    return tuple(rate for rate in rates if rate <= MEAN_LAST_RATE + 1e-9)


def mean_over_rates(curve: Curve) -> float:
    """The LNLN-style figure: the metric's mean over seeds, averaged over the rates 0..0.9 of the curve."""
    values = [mean for rate, mean in zip(curve.rates, curve.mean) if rate <= MEAN_LAST_RATE + 1e-9]
    return float(np.mean(values)) if values else float("nan")


def read_run_info(results_table: str | Path) -> dict | None:
    """The run_info.json beside a sweep's results.csv, or None when there is none (e.g. an older sweep)."""
    path = Path(results_table).parent / RUN_INFO
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None


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
        return [
            {key: float(value) if value != "" else math.nan for key, value in row.items() if value is not None}
            for row in rows
        ]
    except ValueError as error:
        raise ValueError(f"{path}: a value is not a number ({error})") from None


def curves(runs: list[dict[str, float]], names: list[str], source: str = "runs") -> dict[str, Curve]:
    """Per metric in `names`: mean and std over seeds at each rate, and the AUILC over all rates."""
    rates = sorted({run[RATE_COLUMN] for run in runs})
    result = {}
    for name in names:
        if any(name not in run for run in runs):
            raise ValueError(f"{source}: metric {name!r} missing from some runs")
        per_rate = [
            metric_functions.aggregate([{name: run[name]} for run in runs if run[RATE_COLUMN] == rate])[name]
            for rate in rates
        ]
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


def summary_table(results: dict[str, dict[str, Curve]], infos: dict[str, dict | None] | None = None) -> str:
    """Markdown: per dataset and metric, the value at the lowest and the highest rate, the AUILC (TFR-Net
    protocol) and the mean over rates 0..0.9 (LNLN-style); then, per dataset, what produced the numbers."""
    lines = [
        "| dataset | metric | at rate 0 | at the largest rate | AUILC over the grid (TFR-Net protocol) "
        "| mean over rates 0..0.9 (LNLN-style) |",
        "|---|---|---|---|---|---|",
    ]
    for dataset, by_metric in results.items():
        for name, curve in by_metric.items():
            first = f"{shown(curve.mean[0])} ± {shown(curve.std[0])} (r={curve.rates[0]:g})"
            last = f"{shown(curve.mean[-1])} ± {shown(curve.std[-1])} (r={curve.rates[-1]:g})"
            covered = mean_rates(curve.rates)
            mean = f"{shown(mean_over_rates(curve))} (r={covered[0]:g}..{covered[-1]:g})" if covered else "n/a"
            lines.append(f"| {dataset} | {name} | {first} | {last} | {shown(curve.auilc)} | {mean} |")
    lines += ["", f"AUILC: {AUILC_PROTOCOL}. Mean: {MEAN_PROTOCOL}.", ""]
    for dataset, info in (infos or {}).items():
        lines.append(f"- {dataset}: {describe_run_info(info)}")
    return "\n".join(lines) + "\n"


def beside_the_literature(all_curves: dict[str, dict[str, Curve]], infos: dict[str, dict | None]) -> str:
    """Markdown: per dataset, its measured AUILC and r=0 values next to the published ones made the same way
    (robustmm.published), or why none are shown."""
    lines = [
        "## Measured beside published",
        "",
        f"Published: the papers' numbers, shown only where this run's dataset, protocol and metric match theirs "
        f"({literature.PROTOCOL}). Measured: this run, mean over its training seeds.",
        "",
    ]
    for dataset, by_metric in all_curves.items():
        rates = next(iter(by_metric.values())).rates
        found, reason = literature.comparable(infos.get(dataset), rates)
        if not found:
            lines += [f"- {dataset}: no published numbers shown: {reason}.", ""]
            continue
        lines += [
            f"### {dataset}",
            "",
            "| metric | summary | measured (this run) | published | system | source |",
            "|---|---|---|---|---|---|",
        ]
        for summary, entries in found.items():
            for entry in entries:
                curve = by_metric.get(entry.metric)
                if curve is None:
                    continue
                measured = curve.auilc if summary == literature.AUILC else curve.mean[curve.rates.index(0.0)]
                lines.append(
                    f"| {entry.metric} | {summary} | {shown(measured)} | {entry.value:.3f} | {entry.system} "
                    f"| {literature.SYSTEMS[entry.system]} |"
                )
        lines += ["", *([f"Not shown: {reason}.", ""] if reason else [])]
    return "\n".join(lines) + "\n"


def published_marks(all_curves: dict[str, dict[str, Curve]], infos: dict[str, dict | None]) -> dict:
    """{dataset: {metric: [Published, ...]}}: the published numbers the figure marks beside each panel."""
    marks = {}
    for dataset, by_metric in all_curves.items():
        found, _ = literature.comparable(infos.get(dataset), next(iter(by_metric.values())).rates)
        for entries in found.values():
            for entry in entries:
                marks.setdefault(dataset, {}).setdefault(entry.metric, []).append(entry)
    return marks


def per_rate_table(
    all_curves: dict[str, dict[str, Curve]], seeds: dict[str, dict[float, int]], infos: dict[str, dict | None]
) -> str:
    """Markdown: per dataset, every metric's mean ± std over seeds at each rate."""
    lines = [
        "# Every metric at every rate",
        "",
        "Mean ± standard deviation (population, as MMSA) over the training seeds of each rate.",
        "",
    ]
    for dataset, by_metric in all_curves.items():
        info = infos.get(dataset)
        lines += [
            f"## {dataset}",
            "",
            f"Missing pattern {rate_meaning(info)}; protocol {protocol_name(info)}.",
            "",
            "| rate | seeds | " + " | ".join(by_metric) + " |",
            "|---" * (len(by_metric) + 2) + "|",
        ]
        rates = next(iter(by_metric.values())).rates
        for index, rate in enumerate(rates):
            cells = [f"{shown(curve.mean[index])} ± {shown(curve.std[index])}" for curve in by_metric.values()]
            lines.append(f"| {rate:g} | {seeds[dataset][rate]} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def write_per_rate_data(
    all_curves: dict[str, dict[str, Curve]], seeds: dict[str, dict[float, int]], path: Path
) -> None:
    """The per-rate table as long-form CSV: dataset, rate, metric, mean, std, seeds (empty: undefined)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("dataset", RATE_COLUMN, "metric", "mean", "std", "seeds"))
        for dataset, by_metric in all_curves.items():
            for name, curve in by_metric.items():
                for rate, mean, std in zip(curve.rates, curve.mean, curve.std):
                    writer.writerow(
                        (
                            dataset,
                            rate,
                            name,
                            "" if math.isnan(mean) else mean,
                            "" if math.isnan(std) else std,
                            seeds[dataset][rate],
                        )
                    )


def rate_meaning(info: dict | None) -> str:
    from robustmm.missing import RATE_MEANING

    pattern = (info or {}).get("missing", {"pattern": "iid"})
    return f"{pattern['pattern']} (rate: {RATE_MEANING[pattern['pattern']]})"


def protocol_name(info: dict | None) -> str:
    return "unknown" if info is None else info["protocol"].get("name", "per_rate")


def describe_run_info(info: dict | None) -> str:
    """One line: model mode, preset source and overrides, the missing seeds and training seeds."""
    if info is None:
        return f"no {RUN_INFO} beside its results.csv: mode, preset source and protocol unknown"
    protocol = info["protocol"]
    seeds = protocol["missing_seeds"]
    seeds = ", ".join(map(str, seeds)) if isinstance(seeds, list) else seeds
    overrides = ", ".join(f"{key}={value}" for key, value in sorted(info["tfr_net_overrides"].items()))
    pattern = info.get("missing", {"pattern": "iid"})
    options = ", ".join(
        f"{key} {value}" for key, value in pattern.items() if key not in ("pattern", "rate") and value is not None
    )
    training = protocol.get("training", "one model trained and tested per (rate, seed)")
    return (
        f"TFR-Net {info['mode']}{' + SimAM' if info['simam'] else ''}, {info['text_mode']} text, settings from "
        f"{info['preset_source']}{f' with {overrides}' if overrides else ''}; missing pattern {rate_meaning(info)}"
        f"{f' ({options})' if options else ''}; protocol {protocol_name(info)}: {training}; masks {protocol['masks']} "
        f"(missing seeds text/audio/vision {seeds}); training seeds {', '.join(map(str, protocol['training_seeds']))}"
    )


def plot(results: dict[str, dict[str, Curve]], path: str | Path, published: dict | None = None) -> None:
    """One row of panels per dataset, one panel per metric: mean over seeds with a band of one std. `published`
    ({dataset: {metric: [robustmm.published.Published]}}) adds the published numbers: r=0 values as hollow
    markers at rate 0, AUILCs in a box beside the measured one, each marked published."""
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
            entries = (published or {}).get(dataset, {}).get(name, [])
            for marker, entry in zip("sD^", [entry for entry in entries if entry.summary == literature.COMPLETE]):
                axis.plot(
                    [0.0],
                    [entry.value],
                    marker=marker,
                    fillstyle="none",
                    linestyle="none",
                    color="black",
                    label=f"published r=0: {entry.system}",
                )
            if any(entry.summary == literature.COMPLETE for entry in entries):
                axis.legend(fontsize=6, loc="best")
            box = [f"measured AUILC {auilc}"] + [
                f"published AUILC {entry.value:.3f}: {entry.system}"
                for entry in entries
                if entry.summary == literature.AUILC
            ]
            if len(box) > 1:
                axis.text(
                    0.02,
                    0.02,
                    "\n".join(box),
                    transform=axis.transAxes,
                    fontsize=5.5,
                    va="bottom",
                    bbox={"facecolor": "white", "alpha": 0.8, "linewidth": 0.5},
                )
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
    """Read each dataset's per-run table; write `summary.md` (with the published numbers beside the measured),
    `per_rate.md` and `per_rate.csv` (every metric at every rate), `robustness.png` and `plots/` under `out_dir`.

    `by_family` lists the metrics to show per metric family (mosi, sims, avec); each table shows those of
    the family its columns belong to.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results, all_curves, seeds, infos = {}, {}, {}, {}
    for dataset, table in runs_tables.items():
        runs = read_runs(table)
        all_curves[dataset] = curves(runs, [name for name in runs[0] if name not in RUN_COLUMNS], source=str(table))
        results[dataset] = {name: all_curves[dataset][name] for name in shown_metrics(runs[0], by_family, str(table))}
        seeds[dataset] = {
            rate: sum(run[RATE_COLUMN] == rate for run in runs)
            for rate in all_curves[dataset][next(iter(results[dataset]))].rates
        }
        infos[dataset] = read_run_info(table)
    summary = summary_table(results, infos) + "\n" + beside_the_literature(all_curves, infos)
    (out_dir / "summary.md").write_text(summary, encoding="utf-8")
    (out_dir / PER_RATE_TABLE).write_text(per_rate_table(all_curves, seeds, infos), encoding="utf-8")
    write_per_rate_data(all_curves, seeds, out_dir / PER_RATE_DATA)
    plot(results, out_dir / "robustness.png", published_marks(all_curves, infos))
    write_plot_data(results, out_dir / "plots")
    return results
