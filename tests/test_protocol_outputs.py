"""What a sweep records about how its numbers were made: run_info.json, both protocols' summaries, the
preset source and TFR-Net overrides from the command line and a params section."""

import json

import pytest
from fast_runs import command

from robustmm import data as feature_data
from robustmm import report
from robustmm.cli import main
from robustmm.experiments import write_outputs
from robustmm.presets import get_preset
from robustmm.synthetic import make_dataset

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def feature_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("features") / "mosi.pkl"
    feature_data.write(
        make_dataset(get_preset("mosi"), sizes=(24, 8, 8), seq_lens=(8, 12, 10), feature_dims=(384, 5, 20), seed=5),
        path,
    )
    return path


def test_metrics_hold_auilc_over_the_grid_and_the_mean_over_rates_up_to_0_9(tmp_path):
    rows = [
        {"rate": rate, "seed": seed, "epochs": 1, "best_epoch": 1, "train_seconds": 0.0, "MAE": rate + seed / 100}
        for rate in (0.0, 0.5, 0.9, 1.0)
        for seed in (1, 3)
    ]
    flat = write_outputs(rows, tmp_path, ("MAE",))
    assert flat["auilc/MAE"] == pytest.approx(
        0.5 * (0.02 + 0.52) / 2 + 0.4 * (0.52 + 0.92) / 2 + 0.1 * (0.92 + 1.02) / 2
    )
    assert flat["mean_0_0.9/MAE"] == pytest.approx((0.02 + 0.52 + 0.92) / 3)  # r = 1.0 left out
    assert all(isinstance(value, float) for value in flat.values())  # DVC metrics stay numeric


def test_cli_sweep_records_mode_source_overrides_and_protocol(feature_file, tmp_path, capsys):
    out = tmp_path / "sweep"
    params = tmp_path / "params.yaml"
    # YAML reads 1e-3 as text: the value is typed by its setting.
    params.write_text(
        "sweep:\n  tfr_net:\n    learning_rate_other: 1e-3\n    nlevels: 2\n  missing_seeds: [1111, 1111, 1111]\n"
    )
    code = main(
        [
            *command("sweep", feature_file, "mosi", out, rates="0,0.5", seeds="111,1111", epochs=1),
            "--preset-source",
            "mmsa",
            "--set",
            "nlevels=1",
            "--set",
            "recon_weights=1,1,1",
            "--config",
            str(params),
            "--simam",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "auilc/MAE" in printed and "mean_0_0.9/MAE" in printed
    info = json.loads((out / "run_info.json").read_text())
    assert info["mode"] == "corrected" and info["simam"] and info["preset_source"] == "mmsa"
    assert info["tfr_net_overrides"] == {"learning_rate_other": 1e-3, "nlevels": 1, "recon_weights": [1.0, 1.0, 1.0]}
    expected = {
        **{
            key: list(value) if isinstance(value, tuple) else value
            for key, value in get_preset("mosi", "mmsa").tfr_net.__dict__.items()
        },
        "learning_rate_other": 1e-3,
        "nlevels": 1,
        "recon_weights": [1.0, 1.0, 1.0],
    }
    assert info["tfr_net"] == expected
    protocol = info["protocol"]
    assert protocol["missing_seeds"] == [1111, 1111, 1111] and protocol["training_seeds"] == [111, 1111]
    assert protocol["rates"] == [0.0, 0.5] and protocol["mean_0_0.9_rates"] == [0.0, 0.5]
    run = json.loads((out / "runs" / "rate_0.5_seed_111" / "result.json").read_text())["config"]
    assert run["preset_source"] == "mmsa" and run["missing_seeds"] == [1111, 1111, 1111]

    report.write_report({"mosi": out / "results.csv"}, {"mosi": ["MAE", "Corr"]}, tmp_path / "reports")
    summary = (tmp_path / "reports" / "summary.md").read_text()
    assert "AUILC over the grid (TFR-Net protocol)" in summary and "mean over rates 0..0.9 (LNLN-style)" in summary
    assert (
        "mosi: TFR-Net corrected + SimAM, frozen text, settings from mmsa with learning_rate_other=0.001, nlevels=1, "
        "recon_weights=[1.0, 1.0, 1.0]; missing pattern iid (rate: share of tokens/frames dropped in every modality); "
        "protocol per_rate: one model trained and tested per (rate, seed), the same rate on train, valid and test; "
        "masks fixed per modality, the same for every training seed (missing seeds "
        "text/audio/vision 1111, 1111, 1111); training seeds 111, 1111"
    ) in summary
    # Beside the literature: the r=0 numbers match (a per-rate model at rate 0); the AUILC over a two-rate grid not.
    literature = summary[summary.index("## Measured beside published") :]
    measured_mae = report.curves(report.read_runs(out / "results.csv"), ["MAE"])["MAE"].mean[0]
    assert f"| MAE | r=0 | {measured_mae:.4f} | 0.754 | TFR-Net (paper) | Yuan, Li, Xu, Yu" in literature
    assert "| Has0_acc_2 | r=0 |" in literature and "| 0.850 | EMT-DLFR |" in literature
    assert "| AUILC |" not in literature
    assert "AUILC left out: this sweep's grid [0.0, 0.5] is not the published one [0.0, 0.1," in literature


def test_bad_settings_are_one_line_errors(feature_file, tmp_path, capsys):
    base = command("sweep", feature_file, "mosi", tmp_path / "x", rates="0", seeds="1")
    assert main([*base, "--set", "lr_other=1e-3"]) == 2
    assert "unknown TFR-Net setting 'lr_other' (did you mean learning_rate_other?)" in capsys.readouterr().err
    assert main([*base, "--dataset", "mosei", "--preset-source", "tfr-net"]) == 2
    assert "tfr-net has no TFR-Net configuration for mosei" in capsys.readouterr().err
    assert main([*base, "--missing-seeds", "1,2"]) == 2
    assert "expected three non-negative integers" in capsys.readouterr().err
