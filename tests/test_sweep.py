"""The missing-rate sweep: outputs, resuming, the command line, the MMSA_run call shape, YAML settings."""

import json

import numpy as np
import pandas as pd
import pytest
from fast_runs import FAST, command

import robustmm
from robustmm import data as feature_data
from robustmm.cli import main
from robustmm.experiments import write_curves, write_outputs
from robustmm.presets import get_preset
from robustmm.settings import SettingsError, SweepCommandSettings, load_command_settings
from robustmm.synthetic import make_dataset
from robustmm.text_encoder import OFFLINE_ENCODER

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def feature_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("features") / "sims.pkl"
    dataset = make_dataset(
        get_preset("sims"), sizes=(32, 16, 16), seq_lens=(8, 12, 10), feature_dims=(384, 33, 709), seed=2
    )
    feature_data.write(dataset, path)
    return path


def test_sweep_writes_table_metrics_plot_data_and_figure_and_resumes(feature_file, tmp_path, capsys):
    out = tmp_path / "sweep"
    flat = robustmm.sweep(feature_file, "sims", rates=[0.0, 0.5], seeds=[111, 1111], out=out, **FAST)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("run ")]
    assert [line.split(":")[0] for line in lines] == [
        "run 1/4 rate 0 seed 111",
        "run 2/4 rate 0 seed 1111",
        "run 3/4 rate 0.5 seed 111",
        "run 4/4 rate 0.5 seed 1111",
    ]
    assert all("ETA" in line for line in lines)

    table = pd.read_csv(out / "results.csv")
    assert sorted(zip(table["rate"], table["seed"])) == [(0.0, 111), (0.0, 1111), (0.5, 111), (0.5, 1111)]
    assert {"MAE", "Corr", "Mult_acc_2", "F1_score", "epochs", "best_epoch"} <= set(table.columns)
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == pytest.approx(flat)
    curve = pd.read_csv(out / "robustness.csv")
    assert list(curve["rate"]) == [0.0, 0.5]
    mae = curve["MAE_mean"].tolist()
    assert on_disk["auilc/MAE"] == pytest.approx(0.5 * (mae[0] + mae[1]) / 2)
    assert on_disk["rate_0.5/MAE_mean"] == pytest.approx(table[table["rate"] == 0.5]["MAE"].mean())
    assert on_disk["rate_0.5/MAE_std"] == pytest.approx(table[table["rate"] == 0.5]["MAE"].std(ddof=0))
    assert (out / "robustness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # An interrupted sweep: one run lost its result; only that run trains again.
    results = {path.parent.name: path for path in (out / "runs").glob("*/result.json")}
    assert len(results) == 4
    stamps = {name: path.stat().st_mtime_ns for name, path in results.items()}
    results["rate_0.5_seed_1111"].unlink()
    again = robustmm.sweep(feature_file, "sims", rates=[0.0, 0.5], seeds=[111, 1111], out=out, **FAST)
    assert again == pytest.approx(flat)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("run ")]
    assert [("reused" in line) for line in lines] == [True, True, True, False]
    assert all((out / "runs" / name / "dvclive" / "metrics.json").exists() for name in results)
    train_loss = pd.read_csv(out / "curves" / "train_loss.tsv", sep="\t")
    assert sorted(set(train_loss["run"])) == sorted(results)  # the reused runs' curves too
    for name, path in results.items():
        assert (path.stat().st_mtime_ns == stamps[name]) == (name != "rate_0.5_seed_1111")


def test_command_line_sweep_and_evaluate(feature_file, tmp_path, capsys):
    out = tmp_path / "cli"
    params = tmp_path / "params.yaml"
    params.write_text(
        f"train:\n  sweep:\n    text_encoder: {OFFLINE_ENCODER}\n    simam: true\n"
        "    text_mode: frozen\n    epochs: 4\n"
    )
    # The section's settings apply; a flag that is set (--epochs) wins over the section.
    code = main(
        [
            "sweep",
            "--data",
            str(feature_file),
            "--dataset",
            "sims",
            "--rates",
            "0,0.3",
            "--seeds",
            "111",
            "--out",
            str(out),
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--no-progress",
            "--config",
            str(params),
            "--section",
            "train.sweep",
        ]
    )
    assert code == 0
    assert "auilc/MAE" in capsys.readouterr().out
    run_settings = json.loads((out / "runs" / "rate_0.3_seed_111" / "result.json").read_text())["config"]
    assert run_settings["simam"] and run_settings["text_mode"] == "frozen" and run_settings["max_epochs"] == 1
    assert json.loads((out / "metrics.json").read_text())["auilc/Mult_acc_2"] >= 0
    checkpoint = out / "runs" / "rate_0.3_seed_111" / "best.pt"
    assert (
        main(
            [
                "evaluate",
                str(checkpoint),
                "--data",
                str(feature_file),
                "--device",
                "cpu",
                "--output",
                str(tmp_path / "m.json"),
            ]
        )
        == 0
    )
    evaluated = json.loads((tmp_path / "m.json").read_text())
    assert evaluated["rate"] == 0.3 and evaluated["MAE"] == pytest.approx(pd.read_csv(out / "results.csv")["MAE"][1])


def test_mmsa_run_call_shape(feature_file, tmp_path):
    flat = robustmm.run(
        "TFR_Net",
        "SIMS",
        seeds=[111],
        data=feature_file,
        model_save_dir=tmp_path / "models",
        res_save_dir=tmp_path / "results",
        gpu_ids=[],
        rates=[0.2],
        **FAST,
    )
    assert "rate_0.2/MAE_mean" in flat and not any(key.startswith("auilc/") for key in flat)
    assert (tmp_path / "models" / "rate_0.2_seed_111" / "best.pt").exists()
    assert (tmp_path / "results" / "metrics.json").exists()
    with pytest.raises(ValueError, match="unknown model 'mult'"):
        robustmm.run("mult", "sims", data=feature_file)


def test_settings_from_a_config_section(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  sweep:\n    rates: [0.0, 0.5]\n    text_mode: frozen\n    epochs: 3\n")
    settings = load_command_settings(SweepCommandSettings, params, "train.sweep", {"epochs": ("--epochs", None)})
    assert (settings.rates, settings.text_mode, settings.epochs, settings.out) == (
        [0.0, 0.5],
        "frozen",
        3,
        "results/sweep",
    )
    params.write_text("train:\n  learning_rate: 0.1\n")
    with pytest.raises(SettingsError, match="train.learning_rate: unknown key"):
        load_command_settings(SweepCommandSettings, params, "train", {})
    with pytest.raises(SettingsError, match="no section 'extract'"):
        load_command_settings(SweepCommandSettings, params, "extract", {})


def test_undefined_metrics_are_written_as_null(tmp_path):
    # Constant predictions leave Corr undefined (NaN), which strict JSON parsers and DVC reject.
    rows = [
        {
            "rate": rate,
            "seed": 111,
            "epochs": 1,
            "best_epoch": 1,
            "train_seconds": 1.0,
            "MAE": 0.5 + rate,
            "Corr": float("nan"),
        }
        for rate in (0.0, 0.5)
    ]
    write_outputs(rows, tmp_path, ("MAE", "Corr"))

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    on_disk = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=refuse)
    assert on_disk["rate_0.5/Corr_mean"] is None and on_disk["auilc/Corr"] is None
    assert on_disk["rate_0.5/MAE_mean"] == pytest.approx(1.0) and on_disk["auilc/MAE"] == pytest.approx(0.375)


def test_curves_hold_one_row_per_run_and_epoch_without_undefined_values(tmp_path):
    folder = tmp_path / "curves"
    folder.mkdir()
    (folder / "learning_rate_bert.tsv").write_text("run\tepoch\tlearning_rate_bert\nold\t1\t0.1\n")
    histories = {
        "rate_0.0_seed_1": [
            {"epoch": 1, "train_loss": 2.5, "valid_loss": 1.25, "learning_rate": 0.002},
            {"epoch": 2, "train_loss": float("nan"), "valid_loss": 1.0, "learning_rate": 0.001},
        ],
        "rate_0.5_seed_1": [{"epoch": 1, "train_loss": 3.0, "valid_loss": 2.0, "learning_rate": 0.002}],
    }
    write_curves(folder, histories)
    assert sorted(path.name for path in folder.iterdir()) == ["learning_rate.tsv", "train_loss.tsv", "valid_loss.tsv"]
    assert (folder / "train_loss.tsv").read_text() == (
        "run\tepoch\ttrain_loss\nrate_0.0_seed_1\t1\t2.5\nrate_0.5_seed_1\t1\t3.0\n"
    )
    valid = pd.read_csv(folder / "valid_loss.tsv", sep="\t")
    assert valid.values.tolist() == [
        ["rate_0.0_seed_1", 1, 1.25],
        ["rate_0.0_seed_1", 2, 1.0],
        ["rate_0.5_seed_1", 1, 2.0],
    ]


def test_custom_dataset_with_its_metric_family_and_label_range(tmp_path, capsys):
    path = tmp_path / "phq.pkl"
    # AVEC-like labels on 0..24: outside the custom default range -3..3.
    dataset = make_dataset(
        get_preset("avec2019"), sizes=(24, 8, 8), seq_lens=(8, 12, 10), feature_dims=(384, 6, 7), seed=3
    )
    feature_data.write(dataset, path)
    out = tmp_path / "custom"
    flags = command("sweep", path, "custom", out, rates="0,0.5", seeds="111", epochs=1)
    assert main(flags) == 2
    error = capsys.readouterr().err
    assert str(path) in error and "outside the label range -3,3" in error and "--label-range" in error

    assert main([*flags, "--metric-family", "avec", "--label-range", "0,24"]) == 0
    assert {"auilc/CCC", "auilc/RMSE", "auilc/MAE"} <= set(json.loads((out / "metrics.json").read_text()))
    checkpoint = out / "runs" / "rate_0.5_seed_111" / "best.pt"
    assert main(["evaluate", str(checkpoint), "--data", str(path), "--device", "cpu"]) == 0
    assert '"CCC"' in capsys.readouterr().out

    flat = robustmm.sweep(
        path,
        "custom",
        rates=[0.0],
        seeds=[111],
        out=tmp_path / "python",
        metric_family="avec",
        label_range=(0, 24),
        **{**FAST, "epochs": 1},
    )
    assert "rate_0.0/CCC_mean" in flat
    with pytest.raises(ValueError, match="apply to --dataset custom only"):
        robustmm.sweep(path, "avec2019", metric_family="avec", out=tmp_path / "no", **FAST)
    with pytest.raises(ValueError, match="unknown metric family 'imdb'"):
        robustmm.sweep(path, "custom", metric_family="imdb", label_range=(0, 24), out=tmp_path / "no", **FAST)


def test_close_rates_get_their_own_runs_and_a_changed_sweep_is_refused_or_overwritten(feature_file, tmp_path, capsys):
    out = tmp_path / "close"
    flat = robustmm.sweep(
        feature_file, "sims", rates=[0.0, 0.001, 0.004], seeds=[111], out=out, **{**FAST, "epochs": 1}
    )
    assert sorted(path.name for path in (out / "runs").iterdir()) == [
        "rate_0.001_seed_111",
        "rate_0.004_seed_111",
        "rate_0.0_seed_111",
    ]
    assert {"rate_0.0/MAE_mean", "rate_0.001/MAE_mean", "rate_0.004/MAE_mean"} <= set(flat)
    assert len(pd.read_csv(out / "results.csv")) == 3

    flags = command("sweep", feature_file, "sims", out, rates="0,0.001,0.004", seeds="111", epochs=2)
    assert main(flags) == 2
    error = capsys.readouterr().err
    assert f"{out / 'runs' / 'rate_0.0_seed_111'}: holds a different run" in error
    assert "setting max_epochs: 1 recorded, 2 now" in error and "--overwrite" in error
    assert main([*flags, "--overwrite"]) == 0
    assert all(
        json.loads(path.read_text())["settings"]["max_epochs"] == 2 for path in (out / "runs").glob("*/run.json")
    )

    with pytest.raises(ValueError, match="rate 0.5 listed twice"):
        robustmm.sweep(feature_file, "sims", rates=[0.5, 0.5], seeds=[111], out=tmp_path / "twice", **FAST)


def test_train_once_protocol_one_model_per_seed_tested_at_every_rate(feature_file, tmp_path, monkeypatch):
    from robustmm import train as training
    from robustmm.missing import TrainOnce, mask_seeds

    seen = {}
    real_prepare = training.prepare_splits

    def recording_prepare(loaded, config, *args, **kwargs):
        splits = real_prepare(loaded, config, *args, **kwargs)
        seen[config.seed] = (config, {name: split["audio_keep"].numpy() for name, split in splits.items()})
        return splits

    monkeypatch.setattr(training, "prepare_splits", recording_prepare)
    out = tmp_path / "once"
    once = {"train_rates": [0.0, 0.9], "complete_share": 0.25, "valid_rate": 0.3}
    flat = robustmm.sweep(
        feature_file,
        "sims",
        rates=[0.0, 0.2, 0.4],
        seeds=[111, 1111],
        out=out,
        protocol="train_once",
        train_once=once,
        **{**FAST, "epochs": 1},
    )

    # One model per seed, its folder named for the protocol; each tested at every rate of the grid.
    assert sorted(path.name for path in (out / "runs").iterdir()) == ["train_once_seed_111", "train_once_seed_1111"]
    table = pd.read_csv(out / "results.csv")
    assert sorted(zip(table["rate"], table["seed"])) == [
        (rate, seed) for rate in (0.0, 0.2, 0.4) for seed in (111, 1111)
    ]
    result = json.loads((out / "runs" / "train_once_seed_111" / "result.json").read_text())
    assert [entry["rate"] for entry in result["test_by_rate"]] == [0.0, 0.2, 0.4]
    assert table[(table["seed"] == 111) & (table["rate"] == 0.4)]["MAE"].item() == pytest.approx(
        result["test_by_rate"][2]["metrics"]["MAE"]
    )
    # The train split had per-sample rates; the validation split that selects the model its stated rate.
    config, keeps = seen[111]
    loaded = feature_data.load(feature_file)
    rates = TrainOnce(**once).sample_rates(32, mask_seeds(config.missing_seeds, 111))
    expected_train = robustmm.missing.Iid().apply(loaded["train"], rates, mask_seeds(config.missing_seeds, 111))
    np.testing.assert_array_equal(keeps["train"], expected_train["audio_keep"])
    np.testing.assert_array_equal(
        keeps["valid"], robustmm.missing.Iid().apply(loaded["valid"], 0.3, (111, 1111, 11111))["audio_keep"]
    )
    assert config.rate == 0.3 and config.train_once == TrainOnce(**once)
    # Labelled with its protocol: metrics.json keys and run_info.json.
    assert {"train_once/auilc/MAE", "train_once/mean_0_0.9/MAE", "train_once/rate_0.2/MAE_mean"} <= set(flat)
    assert not any(key.startswith(("auilc/", "rate_")) for key in flat)
    info = json.loads((out / "run_info.json").read_text())
    assert info["protocol"]["name"] == "train_once" and info["protocol"]["train_once"]["valid_rate"] == 0.3
    assert "validation split at rate 0.3" in info["protocol"]["training"]


def test_a_pattern_sweep_keeps_its_own_runs_and_a_changed_pattern_retrains(feature_file, tmp_path, capsys):
    out = tmp_path / "block"
    block = {"min_span": 2, "max_span": 3}
    flat = robustmm.sweep(
        feature_file,
        "sims",
        rates=[0.0, 0.5],
        seeds=[111],
        out=out,
        missing="block",
        patterns={"block": block},
        **{**FAST, "epochs": 1},
    )
    assert sorted(path.name for path in (out / "runs").iterdir()) == [
        "block_rate_0.0_seed_111",
        "block_rate_0.5_seed_111",
    ]
    assert "block/auilc/MAE" in flat
    record = json.loads((out / "runs" / "block_rate_0.5_seed_111" / "run.json").read_text())["settings"]["missing"]
    assert record["pattern"] == "block" and record["min_span"] == 2
    info = json.loads((out / "run_info.json").read_text())
    assert (
        info["missing"]["pattern"] == "block"
        and info["missing"]["rate"] == "share of valid steps covered by missing blocks"
    )

    # Other span lengths are another run: refused without --overwrite, retrained with it.
    flags = [
        *command("sweep", feature_file, "sims", out, rates="0,0.5", seeds="111", epochs=1),
        "--missing",
        "block",
        "--min-span",
        "1",
        "--max-span",
        "3",
    ]
    assert main(flags) == 2
    assert "setting missing.min_span: 2 recorded, 1 now" in capsys.readouterr().err
    assert main([*flags, "--overwrite"]) == 0
    assert (
        json.loads((out / "runs" / "block_rate_0.5_seed_111" / "run.json").read_text())["settings"]["missing"][
            "min_span"
        ]
        == 1
    )
    # A bad pattern setting is an error naming its key, before any work.
    assert main([*flags[:-4], "--missing", "per_modality", "--swept", "audio,face"]) == 2
    assert "patterns.per_modality: swept ['audio', 'face']: expected distinct names" in capsys.readouterr().err


def test_train_and_evaluate_take_the_runs_pattern(feature_file, tmp_path):
    out = tmp_path / "train"
    assert (
        main(
            [
                *command("train", feature_file, "sims", out, rate=1, epochs=1),
                "--missing",
                "modality",
                "--absent-modalities",
                "audio",
            ]
        )
        == 0
    )
    config = json.loads((out / "result.json").read_text())["config"]
    assert config["missing"] == {"pattern": "modality", "modalities": ["audio"]}
    # The checkpoint keeps the pattern: evaluated again at its rate it gives its own test metrics (iid at rate 1
    # would have dropped every modality, not only the audio).
    from robustmm.train import evaluate_checkpoint

    tested = json.loads((out / "result.json").read_text())["test"]
    again = evaluate_checkpoint(out / "best.pt", feature_file, device="cpu")
    assert again["MAE"] == pytest.approx(tested["MAE"]) and again["Corr"] == pytest.approx(tested["Corr"])
