"""The report beside the literature (published numbers only where protocol and metric match) and the per-rate table."""

from __future__ import annotations

import csv
import json

import pytest

from robustmm import report

GRID = [round(0.1 * step, 1) for step in range(11)]


def write_sweep(folder, dataset, rates, *, protocol="per_rate", pattern="iid", seeds=(1, 2)):
    """A sweep's results.csv (MAE 0.7 + rate + seed / 100, accuracy falling with the rate) and run_info.json."""
    folder.mkdir(parents=True)
    with open(folder / "results.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ("rate", "seed", "epochs", "best_epoch", "train_seconds", "MAE", "Corr", "Has0_acc_2", "Has0_F1_score")
        )
        for rate in rates:
            for seed in seeds:
                writer.writerow(
                    (rate, seed, 3, 2, 1.5, 0.7 + rate + seed / 100, 0.6 - rate / 2, 0.8 - rate / 4, 0.8 - rate / 4)
                )
    info = {
        "dataset": dataset,
        "mode": "corrected",
        "simam": False,
        "text_mode": "frozen",
        "preset_source": "tfr-net",
        "tfr_net_overrides": {},
        "missing": {"pattern": pattern, "rate": "..."},
        "protocol": {
            "name": protocol,
            "masks": "fixed per modality",
            "missing_seeds": [111, 1111, 11111],
            "training_seeds": list(seeds),
        },
    }
    (folder / "run_info.json").write_text(json.dumps(info))
    return folder / "results.csv"


METRICS = {"mosi": ["Has0_acc_2", "MAE"]}


def test_a_full_per_rate_mosi_grid_stands_beside_the_published_numbers(tmp_path):
    table = write_sweep(tmp_path / "mosi", "mosi", GRID)
    curves = report.write_report({"mosi": table}, METRICS, tmp_path / "reports")
    summary = (tmp_path / "reports" / "summary.md").read_text()
    literature = summary[summary.index("## Measured beside published") :]
    # Corr is not a shown metric here, yet it has published numbers: the comparison covers every measured metric.
    measured_corr = report.curves(report.read_runs(table), ["Corr"])["Corr"].auilc
    assert f"| Corr | AUILC | {measured_corr:.4f} | 0.467 | TFR-Net (paper) |" in literature
    assert f"| MAE | AUILC | {curves['mosi']['MAE'].auilc:.4f} | 1.155 | TFR-Net (paper) |" in literature
    assert (
        "| MAE | AUILC |" in literature
        and "| 1.106 | EMT-DLFR |" in literature
        and "| 1.156 | TFR-Net (re-run" in literature
    )
    assert "| Has0_acc_2 | AUILC |" in literature and "| 0.690 | TFR-Net (paper) |" in literature
    assert f"| MAE | r=0 | {curves['mosi']['MAE'].mean[0]:.4f} | 0.754 | TFR-Net (paper) |" in literature
    assert "Has0_F1_score |" not in literature  # nothing published for it
    assert "Not shown" not in literature
    assert "IEEE Transactions on Affective Computing 2023" in literature and "ACM Multimedia 2021" in literature


@pytest.mark.parametrize(
    "dataset, rates, protocol, pattern, reason",
    [
        ("custom", GRID, "per_rate", "iid", "a custom dataset is none of the published ones"),
        ("mosei", GRID, "per_rate", "iid", "the mosei preset has no published numbers"),
        ("mosi", GRID, "train_once", "iid", "this sweep used the train_once protocol"),
        ("mosi", GRID, "per_rate", "block", "AUILC left out: its rates are of the block pattern"),
        (
            "mosi",
            [0.0, 0.5, 1.0],
            "per_rate",
            "iid",
            "AUILC left out: this sweep's grid [0.0, 0.5, 1.0] is not the published one",
        ),
    ],
)
def test_published_numbers_are_left_out_where_the_protocol_differs_and_the_reason_is_given(
    tmp_path, dataset, rates, protocol, pattern, reason
):
    table = write_sweep(tmp_path / "runs", dataset, rates, protocol=protocol, pattern=pattern)
    report.write_report({"demo": table}, METRICS, tmp_path / "reports")
    literature = (tmp_path / "reports" / "summary.md").read_text().split("## Measured beside published")[1]
    assert reason in literature
    assert "| AUILC |" not in literature
    # r=0 is a per-rate model trained on complete data whatever the pattern: it still matches there.
    assert ("| MAE | r=0 |" in literature) == (dataset == "mosi" and protocol == "per_rate")


def test_the_per_rate_table_has_every_metric_with_mean_and_std_over_seeds(tmp_path):
    table = write_sweep(tmp_path / "demo", "custom", [0.0, 0.5])
    report.write_report({"demo": table}, METRICS, tmp_path / "reports")
    text = (tmp_path / "reports" / "per_rate.md").read_text()
    assert "| rate | seeds | MAE | Corr | Has0_acc_2 | Has0_F1_score |" in text
    # MAE at 0.5: 1.21 and 1.22 -> mean 1.215, population std 0.005.
    assert "| 0.5 | 2 | 1.2150 ± 0.0050 | 0.3500 ± 0.0000 | 0.6750 ± 0.0000 | 0.6750 ± 0.0000 |" in text
    assert "Missing pattern iid (rate: share of tokens/frames dropped in every modality); protocol per_rate." in text
    with open(tmp_path / "reports" / "per_rate.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * 4
    mae = next(row for row in rows if row["metric"] == "MAE" and row["rate"] == "0.5")
    assert (
        float(mae["mean"]) == pytest.approx(1.215) and float(mae["std"]) == pytest.approx(0.005) and mae["seeds"] == "2"
    )


def test_the_figure_marks_published_numbers(tmp_path, monkeypatch):
    drawn = []
    import matplotlib.axes

    real_text = matplotlib.axes.Axes.text
    monkeypatch.setattr(
        matplotlib.axes.Axes,
        "text",
        lambda self, x, y, s, *a, **k: drawn.append(s) or real_text(self, x, y, s, *a, **k),
    )
    table = write_sweep(tmp_path / "mosi", "mosi", GRID)
    report.write_report({"mosi": table}, METRICS, tmp_path / "reports")
    assert any("published AUILC 1.155: TFR-Net (paper)" in text and "measured AUILC" in text for text in drawn)
    assert (tmp_path / "reports" / "robustness.png").read_bytes()[:4] == b"\x89PNG"
