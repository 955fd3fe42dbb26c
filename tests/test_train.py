"""Training on synthetic feature files: learning, both text modes, resume, evaluation, bad inputs."""

import json

import numpy as np
import pytest
import torch

from robustmm import data as feature_data
from robustmm import train as training
from robustmm.cli import main
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
    settings = dict(dataset="mosi", rate=0.3, seed=111, text_mode="frozen", text_encoder=OFFLINE_ENCODER,
                    device="cpu", max_epochs=6, progress=False)
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
    before = encoder.model.embeddings.word_embeddings.weight
    after = torch.load(tmp_path / "run" / "best.pt", weights_only=False)["model"]["text_encoder.embeddings.word_embeddings.weight"]
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
    feature_data.write(make_dataset(get_preset("mosi"), sizes=(4, 4, 4), seq_lens=SEQ_LENS, feature_dims=(8, 6, 20)), path)
    with pytest.raises(feature_data.FormatError, match="audio features have 6 dims, the mosi preset expects 5") as error:
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
    assert [len(batch["labels"]) for batch in training.batches(tensors, 7, torch.device("cpu"), torch.randperm(7))] == [7]


def test_training_split_of_batch_size_plus_one(tmp_path, encoder):
    path = tmp_path / "odd.pkl"
    feature_data.write(make_dataset(get_preset("mosi"), sizes=(9, 4, 4), seq_lens=SEQ_LENS, feature_dims=(384, 5, 20)), path)
    loaded, preset = load_features(path, "mosi")
    result = train(loaded, preset, frozen_config(max_epochs=1, batch_size=4), tmp_path / "run", encoder)
    assert np.isfinite(result["test"]["MAE"])
