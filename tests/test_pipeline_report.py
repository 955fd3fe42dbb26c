"""The report stage's library part: per-run tables -> curves with AUILC, the summary table and the figure."""

from __future__ import annotations

import csv

import pytest

from robustmm import report


def write_runs(path, rows, columns=("rate", "seed", "MAE", "Has0_acc_2")):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)
    return path


RUNS = [
    (0.0, 1, 0.5, 0.9),
    (0.0, 2, 0.7, 0.8),
    (0.5, 1, 1.0, 0.7),
    (0.5, 2, 1.2, 0.5),
    (1.0, 1, 1.5, 0.5),
    (1.0, 2, 1.5, 0.5),
]


def test_curves_average_over_seeds_and_integrate_over_rates(tmp_path):
    runs = report.read_runs(write_runs(tmp_path / "runs.csv", RUNS))
    curves = report.curves(runs, ["MAE", "Has0_acc_2"])
    mae = curves["MAE"]
    assert mae.rates == (0.0, 0.5, 1.0)
    assert mae.mean == pytest.approx((0.6, 1.1, 1.5)) and mae.std == pytest.approx((0.1, 0.1, 0.0))
    assert mae.auilc == pytest.approx(0.5 * (0.6 + 1.1) / 2 + 0.5 * (1.1 + 1.5) / 2)
    assert curves["Has0_acc_2"].mean == pytest.approx((0.85, 0.6, 0.5))


def test_write_report_writes_table_and_figure(tmp_path):
    sims_runs = [(0.0, 1, 0.5, 0.9), (0.5, 1, 0.7, 0.8)]
    tables = {
        "demo": write_runs(tmp_path / "a.csv", RUNS),
        "other": write_runs(tmp_path / "b.csv", sims_runs, columns=("rate", "seed", "MAE", "Mult_acc_2")),
    }
    by_family = {"mosi": ["Has0_acc_2", "MAE"], "sims": ["Mult_acc_2", "MAE"]}
    report.write_report(tables, by_family, tmp_path / "out")
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| demo | MAE | 0.6000 ± 0.1000 (r=0) | 1.5000 ± 0.0000 (r=1) | 1.0750 |" in summary
    assert "| other | Mult_acc_2 | 0.9000 ± 0.0000 (r=0) | 0.8000 ± 0.0000 (r=0.5) | 0.4250 |" in summary
    assert "| other | Has0_acc_2 |" not in summary
    assert (tmp_path / "out" / "robustness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plots = sorted(path.name for path in (tmp_path / "out" / "plots").iterdir())
    assert plots == ["demo_Has0_acc_2.csv", "demo_MAE.csv", "other_MAE.csv", "other_Mult_acc_2.csv"]
    with open(tmp_path / "out" / "plots" / "demo_MAE.csv", newline="") as handle:
        rows = [[float(value) for value in row.values()] for row in csv.DictReader(handle)]
    assert rows == [pytest.approx([0.0, 0.6, 0.1]), pytest.approx([0.5, 1.1, 0.1]), pytest.approx([1.0, 1.5, 0.0])]


def test_bad_tables_are_rejected_with_the_file_named(tmp_path):
    no_rate = write_runs(tmp_path / "no_rate.csv", [(1, 0.5)], columns=("seed", "MAE"))
    with pytest.raises(ValueError, match="no_rate.csv: no column rate"):
        report.read_runs(no_rate)
    with pytest.raises(ValueError, match="empty.csv: no runs"):
        report.read_runs(write_runs(tmp_path / "empty.csv", []))
    runs = report.read_runs(write_runs(tmp_path / "runs.csv", RUNS))
    with pytest.raises(ValueError, match="runs.csv: metric 'Corr' missing"):
        report.curves(runs, ["Corr"], source=str(tmp_path / "runs.csv"))
    with pytest.raises(ValueError, match="runs.csv: its metrics .* match none of"):
        report.shown_metrics(runs[0], {"avec": ["CCC"]}, source=str(tmp_path / "runs.csv"))


def test_an_undefined_metric_is_shown_as_n_a_and_left_out_of_the_plots(tmp_path):
    import pandas as pd

    # Constant predictions leave Corr undefined; the sweep's results.csv then has empty Corr cells.
    rows = [
        {"rate": rate, "seed": seed, "MAE": 0.5 + rate, "Corr": corr}
        for rate, seed, corr in (
            (0.0, 1, 0.8),
            (0.0, 2, 0.6),
            (0.5, 1, float("nan")),
            (0.5, 2, 0.4),
            (1.0, 1, float("nan")),
        )
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)
    results = report.write_report({"demo": tmp_path / "results.csv"}, {"mosi": ["MAE", "Corr"]}, tmp_path / "out")
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| demo | Corr | 0.7000 ± 0.1000 (r=0) | n/a ± n/a (r=1) | n/a |" in summary
    assert "| demo | MAE | 0.5000 ± 0.0000 (r=0) | 1.5000 ± 0.0000 (r=1) | 1.0000 |" in summary
    assert (tmp_path / "out" / "robustness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(tmp_path / "out" / "plots" / "demo_Corr.csv", newline="") as handle:
        assert [row["rate"] for row in csv.DictReader(handle)] == ["0.0"]
    assert results["demo"]["MAE"].rates == (0.0, 0.5, 1.0)
