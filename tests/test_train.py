"""Training on synthetic feature files: learning, both text modes, resume, run identity, safe checkpoints,
evaluation, bad inputs."""

import dataclasses
import json
import types

import numpy as np
import pytest
import torch
from fast_runs import command

import robustmm
from robustmm import data as feature_data
from robustmm import run_options
from robustmm import train as training
from robustmm.cli import main
from robustmm.missing import TrainOnce
from robustmm.presets import get_preset
from robustmm.synthetic import make_dataset
from robustmm.text_encoder import OFFLINE_ENCODER, TextEncoder
from robustmm.train import RunConfig, evaluate_checkpoint, load_features, train

SEQ_LENS = (10, 24, 16)


pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder(OFFLINE_ENCODER)


@pytest.fixture(scope="module")
def feature_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("features") / "mosi.pkl"
    dataset = make_dataset(get_preset("mosi"), sizes=(96, 32, 32), seq_lens=SEQ_LENS, feature_dims=(384, 5, 20), seed=0)
    feature_data.write(dataset, path)
    return path


def frozen_config(**changes):
    settings = dict(
        dataset="mosi",
        rate=0.3,
        seed=111,
        text_mode="frozen",
        text_encoder=OFFLINE_ENCODER,
        device="cpu",
        max_epochs=6,
        progress=False,
    )
    return RunConfig(**{**settings, **changes})


def test_training_learns_the_synthetic_signal(feature_file, encoder, tmp_path):
    loaded, preset = load_features(feature_file, "mosi")
    result = train(loaded, preset, frozen_config(), tmp_path / "run", encoder)
    # Chance is 0.5 for the sign and 0 for the correlation.
    assert result["test"]["Has0_acc_2"] >= 0.8
    assert result["test"]["Corr"] >= 0.6
    assert (tmp_path / "run" / "best.pt").exists() and not (tmp_path / "run" / "last.pt").exists()
    assert json.loads((tmp_path / "run" / "result.json").read_text())["test"] == result["test"]

    evaluated = evaluate_checkpoint(tmp_path / "run" / "best.pt", feature_file, device="cpu", encoder=encoder)
    assert evaluated["MAE"] == pytest.approx(result["test"]["MAE"], abs=1e-6)


def test_interrupted_run_resumes_to_the_same_result(feature_file, encoder, tmp_path, monkeypatch):
    loaded, preset = load_features(feature_file, "mosi")
    config = frozen_config(max_epochs=3, simam=True)
    straight = train(loaded, preset, config, tmp_path / "straight", encoder)

    real_epoch = training.train_epoch

    def crash_in_epoch_3(*args):
        if args[6] == 3:
            raise KeyboardInterrupt
        return real_epoch(*args)

    monkeypatch.setattr(training, "train_epoch", crash_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train(loaded, preset, config, tmp_path / "resumed", encoder)
    assert (tmp_path / "resumed" / "last.pt").exists() and not (tmp_path / "resumed" / "result.json").exists()
    assert (tmp_path / "resumed" / "text_features.npz").exists()
    monkeypatch.setattr(training, "train_epoch", real_epoch)

    def no_encoding(*args, **kwargs):
        raise AssertionError("a resumed run encodes the text again")

    monkeypatch.setattr(encoder, "encode", no_encoding)
    resumed = train(loaded, preset, config, tmp_path / "resumed", encoder)
    assert resumed["history"] == straight["history"]
    assert resumed["test"] == straight["test"]
    assert not (tmp_path / "resumed" / "text_features.npz").exists()
    # The DVCLive curves of the resumed run hold every epoch once, as the straight run's.
    for curve in ("train/loss.tsv", "valid/loss.tsv", "learning_rate.tsv"):
        resumed_curve = tmp_path / "resumed" / "dvclive" / "plots" / "metrics" / curve
        assert (
            resumed_curve.read_text() == (tmp_path / "straight" / "dvclive" / "plots" / "metrics" / curve).read_text()
        )


def test_dvclive_logs_each_epochs_losses_and_learning_rate_and_the_final_metrics(feature_file, encoder, tmp_path):
    loaded, preset = load_features(feature_file, "mosi")
    result = train(loaded, preset, frozen_config(max_epochs=3), tmp_path / "run", encoder)
    log = tmp_path / "run" / "dvclive"
    curves = {
        name: (log / "plots" / "metrics" / f"{name}.tsv").read_text().splitlines()
        for name in ("train/loss", "valid/loss", "learning_rate")
    }
    assert curves["train/loss"][0] == "step\tloss" and curves["learning_rate"][0] == "step\tlearning_rate"
    for name, key in (("train/loss", "train_loss"), ("valid/loss", "valid_loss"), ("learning_rate", "learning_rate")):
        rows = [line.split("\t") for line in curves[name][1:]]
        assert [int(step) for step, _ in rows] == [entry["epoch"] for entry in result["history"]] == [1, 2, 3]
        assert [float(value) for _, value in rows] == pytest.approx([entry[key] for entry in result["history"]])
    assert not (log / "plots" / "metrics" / "learning_rate_bert.tsv").exists()  # frozen: no BERT is trained
    final = json.loads((log / "metrics.json").read_text())
    assert final["step"] == 3 and final["best_epoch"] == result["best_epoch"]
    assert final["test"]["MAE"] == pytest.approx(result["test"]["MAE"])
    assert final["best_valid_loss"] == pytest.approx(result["best_valid_loss"])
    assert not (log / "dvc.yaml").exists() and not (log / "report.html").exists()


def test_finetune_mode_trains_the_encoder_with_its_own_learning_rate(feature_file, encoder, tmp_path):
    # Faithful mode needs reconstruction heads that divide the lengths; upstream's 25 divides none of SEQ_LENS.
    loaded, preset = load_features(feature_file, "mosi", tfr_net={"num_temporal_head": 1})
    small = {name: {key: value[:12] for key, value in loaded[name].items()} for name in feature_data.SPLITS}
    config = frozen_config(text_mode="finetune", max_epochs=1, faithful=True, tfr_net={"num_temporal_head": 1})
    model = training.build_model(preset, config, SEQ_LENS, (384, 5, 20), encoder)
    groups = training.build_optimizer(model, preset).param_groups
    assert [group["lr"] for group in groups] == [1e-5, 1e-5, 2e-3]
    assert [group["weight_decay"] for group in groups] == [1e-4, 0.0, 1e-3]
    result = train(small, preset, config, tmp_path / "run", encoder)
    assert np.isfinite(result["test"]["MAE"])
    assert result["history"][0]["learning_rate_bert"] == 1e-5 and result["history"][0]["learning_rate"] == 2e-3
    before = encoder.model.embeddings.word_embeddings.weight
    after = torch.load(tmp_path / "run" / "best.pt", weights_only=True)["model"][
        "text_encoder.embeddings.word_embeddings.weight"
    ]
    assert not torch.equal(before, after)


def test_frozen_text_target_from_the_file(feature_file, encoder):
    loaded, _ = load_features(feature_file, "mosi")
    split = training.corrupt(loaded["valid"], 0.5, (111, 1111, 11111), encoder.unk_id)
    training.attach_text_features(split, encoder, "file", {}, "valid")
    assert split["text"] is loaded["valid"]["text"]
    assert split["text_m"].shape == (32, SEQ_LENS[0], 384)
    assert not np.allclose(split["text_m"], split["text"])


def test_file_text_with_other_dims_is_refused(tmp_path, encoder):
    path = tmp_path / "bert768.pkl"
    feature_data.write(make_dataset(get_preset("mosi"), sizes=(4, 4, 4), seq_lens=SEQ_LENS, seed=1), path)
    loaded, _ = load_features(path, "mosi")
    split = training.corrupt(loaded["train"], 0.5, (111, 1111, 11111), encoder.unk_id)
    with pytest.raises(ValueError, match=r"train/text has shape \(N, 10, 768\) but the encoder"):
        training.attach_text_features(split, encoder, "file", {}, "train")


def test_dims_that_do_not_match_the_preset_are_refused(tmp_path):
    path = tmp_path / "wrong.pkl"
    feature_data.write(
        make_dataset(get_preset("mosi"), sizes=(4, 4, 4), seq_lens=SEQ_LENS, feature_dims=(8, 6, 20)), path
    )
    with pytest.raises(
        feature_data.FormatError, match="audio features have 6 dims, the mosi preset expects 5"
    ) as error:
        load_features(path, "mosi")
    assert str(path) in str(error.value)
    _, preset = load_features(path, "custom")
    assert preset.feature_dims == (8, 6, 20) and preset.seq_lens == SEQ_LENS


def test_bad_inputs_give_a_clear_command_line_error(tmp_path, feature_file, capsys):
    assert main(["train", "--data", str(feature_file), "--dataset", "imdb", "--out", str(tmp_path)]) == 2
    assert "unknown dataset 'imdb'" in capsys.readouterr().err
    assert main(["sweep", "--data", str(tmp_path / "none.pkl"), "--dataset", "mosi"]) == 2
    assert "file not found" in capsys.readouterr().err
    with pytest.raises(ValueError, match="text_target 'file' needs text_mode 'frozen'"):
        RunConfig(dataset="mosi", text_target="file")
    with pytest.raises(ValueError, match="missing rate 1.5"):
        RunConfig(dataset="mosi", rate=1.5)


def test_encoder_without_weights_for_finetuning(encoder):
    light = TextEncoder(OFFLINE_ENCODER, load_weights=False)
    assert light.model is None and light.hidden_size == encoder.hidden_size and light.unk_id == encoder.unk_id
    with pytest.raises(RuntimeError, match="loaded without weights"):
        light.encode(np.zeros((1, 3, 4), dtype=np.int64))
    fresh, loaded = light.new_model().state_dict(), encoder.model.state_dict()
    assert fresh.keys() == loaded.keys() and all(torch.equal(fresh[key], loaded[key]) for key in loaded)


def test_a_lone_last_training_sample_joins_the_batch_before():
    tensors = {"labels": torch.arange(7.0)}
    shuffled = [len(batch["labels"]) for batch in training.batches(tensors, 3, torch.device("cpu"), torch.randperm(7))]
    assert shuffled == [3, 4]  # BatchNorm in training cannot take a batch of one
    assert [len(batch["labels"]) for batch in training.batches(tensors, 3, torch.device("cpu"))] == [3, 3, 1]
    assert [len(batch["labels"]) for batch in training.batches(tensors, 7, torch.device("cpu"), torch.randperm(7))] == [
        7
    ]


def test_training_split_of_batch_size_plus_one(tmp_path, encoder):
    path = tmp_path / "odd.pkl"
    feature_data.write(
        make_dataset(get_preset("mosi"), sizes=(9, 4, 4), seq_lens=SEQ_LENS, feature_dims=(384, 5, 20)), path
    )
    loaded, preset = load_features(path, "mosi")
    result = train(loaded, preset, frozen_config(max_epochs=1, batch_size=4), tmp_path / "run", encoder)
    assert np.isfinite(result["test"]["MAE"])


def test_a_run_folder_is_reused_only_by_the_run_that_made_it(feature_file, encoder, tmp_path, monkeypatch):
    loaded, preset = load_features(feature_file, "mosi")
    run_dir = tmp_path / "run"
    config = frozen_config(max_epochs=1)
    first = train(loaded, preset, config, run_dir, encoder)
    stamp = (run_dir / "result.json").stat().st_mtime_ns
    # Display settings are not part of the run: the finished result is returned as it is.
    assert train(loaded, preset, dataclasses.replace(config, progress=True, device="auto"), run_dir, encoder) == first
    assert (run_dir / "result.json").stat().st_mtime_ns == stamp

    changed_labels = {name: dict(split) for name, split in loaded.items()}
    changed_labels["test"]["regression_labels"] = loaded["test"]["regression_labels"] * 0.5
    attempts = {
        "setting max_epochs: 1 recorded, 2 now": (loaded, preset, dataclasses.replace(config, max_epochs=2)),
        "preset tfr_net.learning_rate_other: 0.002 recorded, 0.001 now": (
            loaded,
            preset.with_tfr_net(learning_rate_other=1e-3),
            config,
        ),
        "the data changed": (changed_labels, preset, config),
    }
    for difference, (data, run_preset, run_config) in attempts.items():
        with pytest.raises(training.RunMismatchError, match="holds a different run") as error:
            train(data, run_preset, run_config, run_dir, encoder)
        assert str(run_dir) in str(error.value) and difference in str(error.value) and "--overwrite" in str(error.value)
    monkeypatch.setattr(training, "__version__", "9.9.9")
    with pytest.raises(training.RunMismatchError, match="made by robustmm 0.1.0, this is robustmm 9.9.9"):
        train(loaded, preset, config, run_dir, encoder)
    monkeypatch.undo()
    assert (run_dir / "result.json").stat().st_mtime_ns == stamp  # refusals leave the folder as it was

    again = train(loaded, preset, dataclasses.replace(config, max_epochs=2), run_dir, encoder, overwrite=True)
    assert again["epochs"] == 2 and json.loads((run_dir / "run.json").read_text())["settings"]["max_epochs"] == 2

    (run_dir / "run.json").unlink()  # a folder from before fingerprints
    with pytest.raises(training.RunMismatchError, match="no run.json"):
        train(loaded, preset, config, run_dir, encoder)


def test_the_fingerprint_covers_every_setting_and_the_preset():
    preset = get_preset("mosi")
    fingerprint = training.run_fingerprint(preset, frozen_config(), "0" * 64)
    run_fields = {field.name for field in dataclasses.fields(RunConfig)}
    # Settings added later are left out at the value earlier runs were made with, so those runs stay valid...
    assert set(fingerprint["settings"]) == run_fields - set(training.DISPLAY_ONLY) - set(training.ADDED_LATER)
    # ... and recorded at any other value, so that a changed pattern or protocol retrains.
    changed = dataclasses.replace(
        frozen_config(),
        missing={"pattern": "block", "min_span": 2},
        test_rates=(0.0, 0.5),
        train_once=TrainOnce(complete_share=0.2),
    )
    recorded = training.run_fingerprint(preset, changed, "0" * 64)["settings"]
    assert set(recorded) == run_fields - set(training.DISPLAY_ONLY)
    assert recorded["missing"] == {
        "pattern": "block",
        "modalities": ["text", "audio", "vision"],
        "distribution": "uniform",
        "min_span": 2,
        "max_span": 10,
        "mean_span": None,
    }
    assert recorded["train_once"] == {"train_rates": [0.0, 1.0], "complete_share": 0.2, "valid_rate": 0.5}
    assert set(fingerprint["preset"]["tfr_net"]) == {field.name for field in dataclasses.fields(preset.tfr_net)}
    assert fingerprint["robustmm"] == training.__version__ and fingerprint["data_sha256"] == "0" * 64


class CreatesAFile:
    """Unpickling this runs code: it creates the file `path`."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_crafted_checkpoints_are_refused_and_run_nothing(feature_file, encoder, tmp_path, capsys):
    witness = tmp_path / "pwned"
    crafted = tmp_path / "best.pt"
    torch.save({"model": CreatesAFile(witness), "config": {}}, crafted)
    with pytest.raises(training.CheckpointError, match="refused to load") as error:
        evaluate_checkpoint(crafted, feature_file, device="cpu", encoder=encoder)
    assert str(crafted) in str(error.value) and "open" in str(error.value)
    assert main(["evaluate", str(crafted), "--data", str(feature_file), "--device", "cpu"]) == 2
    assert f"{crafted}: refused to load" in capsys.readouterr().err
    assert not witness.exists()

    # A crafted last.pt in the folder of the very run being resumed.
    loaded, preset = load_features(feature_file, "mosi")
    config = frozen_config(max_epochs=1)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    training.claim_run_dir(run_dir, training.run_fingerprint(preset, config, training.data_sha256(loaded)), False)
    torch.save({"model": CreatesAFile(witness)}, run_dir / "last.pt")
    with pytest.raises(training.CheckpointError, match=f"{run_dir / 'last.pt'}: refused to load"):
        train(loaded, preset, config, run_dir, encoder)
    assert not witness.exists()

    (run_dir / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(training.CheckpointError, match="last.pt: refused to load"):
        train(loaded, preset, config, run_dir, encoder)


def test_labels_outside_a_named_presets_range_are_refused(tmp_path):
    path = tmp_path / "phq_as_mosi.pkl"
    # PHQ-like labels on 0..24 with MOSI's dims: trained as mosi, Acc-2 would read every label as positive.
    dataset = make_dataset(
        get_preset("avec2019"), sizes=(8, 4, 4), seq_lens=SEQ_LENS, feature_dims=(384, 5, 20), seed=4
    )
    feature_data.write(dataset, path)
    with pytest.raises(feature_data.FormatError) as error:
        load_features(path, "mosi")
    low, high = dataset["train"]["regression_labels"].min(), dataset["train"]["regression_labels"].max()
    message = str(error.value)
    assert str(path) in message and f"train/regression_labels span {low:g}..{high:g}" in message
    assert "outside the mosi preset's label range -3,3" in message and "--dataset custom" in message


@pytest.mark.parametrize(
    "sizes, problem",
    [
        ((8, 0, 4), "the valid split has 0 rows; early stopping needs at least 1"),
        ((1, 4, 4), "the train split has 1 rows; training needs at least 2"),
        ((8, 4, 0), "the test split has 0 rows; testing needs at least 1"),
    ],
)
def test_splits_too_small_to_train_on_are_refused_before_training(tmp_path, sizes, problem):
    path = tmp_path / "small.pkl"
    feature_data.write(
        make_dataset(get_preset("mosi"), sizes=sizes, seq_lens=SEQ_LENS, feature_dims=(384, 5, 20)), path
    )
    with pytest.raises(feature_data.FormatError, match=problem) as error:
        load_features(path, "mosi")
    assert str(path) in str(error.value)


def test_zero_epochs_or_batch_size_are_refused(feature_file, tmp_path, capsys):
    # Once `epochs or the preset's` trained the preset's 40 epochs for 0: the Python API and the command refuse it.
    for name in ("max_epochs", "batch_size"):
        with pytest.raises(ValueError, match=f"{name} 0: expected a whole number of at least 1"):
            RunConfig(dataset="mosi", **{name: 0})
    with pytest.raises(ValueError, match="max_epochs 0"):
        robustmm.sweep(
            feature_file,
            "mosi",
            rates=[0.0],
            seeds=[1],
            epochs=0,
            out=tmp_path / "run",
            text_mode="frozen",
            text_encoder=OFFLINE_ENCODER,
            device="cpu",
            progress=False,
        )
    for flag in ("--epochs", "--batch-size"):
        code = main([*command("train", feature_file, "mosi", tmp_path / "run"), flag, "0"])
        assert code == 2 and f"{flag}: 0 is not allowed" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_checkpointing_auto_follows_the_available_memory(monkeypatch, tmp_path):
    from transformers import BertConfig

    preset = get_preset("mosi")
    bert = types.SimpleNamespace(config=BertConfig())  # bert-base's sizes; the estimate reads only the config
    text_encoder, transformers = training.activation_bytes(preset.tfr_net, 24, (50, 375, 500), bert, faithful=False)
    assert 0.5e9 < transformers < 2e9  # at MOSI shapes: the transformers' and reconstruction's 1.2 GB
    assert 0.8e9 < text_encoder < 2e9  # bert-base's 1.25 GB
    assert training.activation_bytes(preset.tfr_net, 24, (50, 375, 500), None, faithful=False)[0] == 0
    needed, cpu = (text_encoder, transformers), torch.device("cpu")
    for available, chosen in (
        (2 * (text_encoder + transformers), False),  # all of it fits in half
        (2 * transformers, "text-encoder"),  # the transformers' fit once BERT recomputes
        (transformers, True),
    ):
        monkeypatch.setattr(training, "available_bytes", lambda device, available=available: available)
        assert training.resolve_checkpointing("auto", needed, cpu) == chosen
    monkeypatch.setattr(training, "available_bytes", lambda device: transformers)
    assert training.resolve_checkpointing("auto", (0, transformers), cpu) is True  # frozen: no text encoder to pick
    assert training.resolve_checkpointing(False, needed, cpu) is False
    assert training.resolve_checkpointing("text-encoder", needed, cpu) == "text-encoder"


def test_checkpointing_setting_is_checked_and_leaves_the_fingerprint_alone():
    with pytest.raises(ValueError, match="checkpointing 'sometimes': expected auto, true, false or text-encoder"):
        RunConfig(dataset="mosi", checkpointing="sometimes")
    preset = get_preset("mosi")
    fingerprints = [
        training.run_fingerprint(preset, RunConfig(dataset="mosi", checkpointing=value), "0")
        for value in run_options.CHECKPOINTING
    ]
    assert all(fingerprint == fingerprints[0] for fingerprint in fingerprints)


def test_kernels_setting_is_checked_and_leaves_the_fingerprint_alone():
    with pytest.raises(ValueError, match="kernels 'fast': expected auto or pytorch"):
        RunConfig(dataset="mosi", kernels="fast")
    preset = get_preset("mosi")
    auto, pytorch = (
        training.run_fingerprint(preset, RunConfig(dataset="mosi", kernels=value), "0") for value in ("auto", "pytorch")
    )
    assert auto == pytorch


def test_runs_training_at_once_in_one_repository_leave_dvclives_vscode_signal_alone(tmp_path, monkeypatch):
    # DVCLive's signal file is one per repository, removed by a check-then-remove that parallel runs raced on.
    (tmp_path / ".dvc").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    signal = tmp_path / ".dvc" / "tmp" / "exps" / "run" / "DVCLIVE_STEP_COMPLETED"
    live = training.open_training_log(tmp_path / "run", [])
    training.log_epoch(live, {"epoch": 0, "train_loss": 1.0, "valid_loss": 1.0, "learning_rate": 1e-3})
    assert not signal.exists()
    signal.parent.mkdir(parents=True)
    signal.write_text("another run's")
    training.close_training_log(live, {"epochs": 1, "best_epoch": 0, "best_valid_loss": 1.0, "test": {"MAE": 0.5}})
    assert signal.read_text() == "another run's"
    assert (tmp_path / "run" / "dvclive" / "metrics.json").is_file()
