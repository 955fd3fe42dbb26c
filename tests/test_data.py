import os
import pickle

import numpy as np
import pytest

from robustmm import cli, data, presets, synthetic


def small(name="mosi", sizes=(6, 3, 3)):
    return synthetic.make_dataset(presets.get_preset(name), sizes=sizes, seq_lens=(12, 20, 15), feature_dims=(8, 5, 7))


def test_round_trip_and_byte_identical_writes(tmp_path):
    dataset = small()
    dataset[data.META_KEY] = {
        "extractors": {"audio": {"name": "librosa", "version": 1}},
        "feature_names": {"audio": ["a"] * 5},
    }
    data.write(dataset, tmp_path / "a.pkl")
    loaded = data.load(tmp_path / "a.pkl")
    for split in data.SPLITS:
        assert set(loaded[split]) == set(dataset[split])
        for key, value in dataset[split].items():
            np.testing.assert_array_equal(loaded[split][key], value)
    assert loaded[data.META_KEY] == dataset[data.META_KEY]
    # Same content built separately (new objects, other key order) gives the same bytes.
    rebuilt = {split: dict(reversed(list(small()[split].items()))) for split in reversed(data.SPLITS)}
    rebuilt[data.META_KEY] = {
        "feature_names": {"audio": ["a"] * 5},
        "extractors": {"audio": {"version": 1, "name": "librosa"}},
    }
    data.write(rebuilt, tmp_path / "b.pkl")
    data.write(loaded, tmp_path / "c.pkl")
    assert (tmp_path / "a.pkl").read_bytes() == (tmp_path / "b.pkl").read_bytes() == (tmp_path / "c.pkl").read_bytes()


def test_write_is_atomic_and_leaves_no_temporary_on_failure(tmp_path):
    target = tmp_path / "out.pkl"
    data.write(small(), target)
    before = target.read_bytes()
    with pytest.raises((pickle.PicklingError, AttributeError)):  # a local lambda cannot be pickled
        data.write({"train": {"bad": lambda: None}}, target)
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["out.pkl"]


def test_loads_published_quirks_unchanged(tmp_path):
    path = tmp_path / "published.pkl"
    with open(path, "wb") as file:  # as the upstream tools write it, with the standard pickler
        pickle.dump(synthetic.with_upstream_quirks(small()), file, protocol=2)
    raw = data.read_pkl(path)
    assert isinstance(raw["train"]["id"], list) and raw["train"]["audio"].dtype == np.float64
    replaced = data.normalise(raw)
    assert replaced == {"train/audio": 6, "valid/audio": 3, "test/audio": 3}
    train = raw["train"]
    assert train["audio"].dtype == np.float32 and np.isfinite(train["audio"]).all()
    assert train["text_bert"].dtype == np.int64 and train["regression_labels"].dtype == np.float32
    assert train["id"].dtype == object and "text" not in train and "annotations" not in train
    assert data.validate(raw) == []


def test_restricted_unpickler_refuses_code_and_creates_nothing(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"train": {"id": Exploit()}}))
    with pytest.raises(data.FormatError) as error:
        data.load(path)
    message = str(error.value)
    assert str(path) in message and "system" in message and "refused" in message
    assert not marker.exists()
    pickle.loads(path.read_bytes())  # the same file does run code under pickle.load
    assert marker.exists()


def test_unreadable_files_name_the_file(tmp_path):
    truncated = tmp_path / "truncated.pkl"
    data.write(small(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:500])
    with pytest.raises(data.FormatError, match="truncated.pkl.*not a readable pickle"):
        data.load(truncated)
    with pytest.raises(data.FormatError, match="file not found"):
        data.load(tmp_path / "absent.pkl")
    not_dict = tmp_path / "list.pkl"
    not_dict.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(data.FormatError, match="expected a dict of splits"):
        data.load(not_dict)


def test_validation_reports_every_problem_at_once():
    dataset = small()
    train, valid, test = dataset["train"], dataset["valid"], dataset["test"]
    train["regression_labels"] = train["regression_labels"][:-1]  # inconsistent N
    train["audio_lengths"][0] = 99  # longer than the padded length
    train["vision_lengths"][1] = -1  # negative
    valid["regression_labels"][0] = np.nan  # non-finite label
    valid["text_bert"][0, 1, 0] = 2  # mask not 0/1
    valid["text_bert"][1, 0, 0] = -5  # negative id
    valid["text_bert"][0, 2, 0] = 7  # segment id
    test["vision"] = test["vision"][:, :, :6]  # dims differ between splits
    test["audio"] = test["audio"][:, :, 0]  # wrong rank
    del test["raw_text"]
    dataset["extra"] = {}
    problems = data.validate(dataset)
    expected = [
        "train: keys disagree on the number of rows N",
        "train/audio_lengths: 1 lengths exceed the padded length 20",
        "train/vision_lengths: 1 negative lengths",
        "valid/regression_labels: 1 non-finite labels",
        "valid/text_bert: row 1 (attention mask)",
        "valid/text_bert: row 0 (token ids) has negative values",
        "valid/text_bert: row 2 (segment ids)",
        "vision: feature dims differ between splits (train=7, valid=7, test=6)",
        "test/audio: rank 2",
        "test: missing keys raw_text",
        "unexpected top-level key 'extra'",
    ]
    for fragment in expected:
        assert any(fragment in problem for problem in problems), (fragment, problems)
    assert len(problems) == len(expected)


def test_missing_split_and_non_integer_ids():
    dataset = small()
    del dataset["test"]
    dataset["valid"]["text_bert"] = dataset["valid"]["text_bert"] + 0.5
    problems = data.validate(dataset)
    assert "missing split 'test'" in problems
    assert any("valid/text_bert: values are not integers" in problem for problem in problems)


@pytest.mark.parametrize("name", ["mosi", "mosei", "sims", "simsv2"])
def test_inspect_on_each_published_shape(tmp_path, capsys, name):
    preset = presets.get_preset(name)
    path = tmp_path / f"{name}.pkl"
    dataset = synthetic.make_dataset(preset, sizes=(4, 2, 2), feature_dims=(8, *preset.feature_dims[1:]))
    data.write(synthetic.with_upstream_quirks(dataset), path)
    assert cli.main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    length_t, length_a, length_v = preset.seq_lens
    assert f"(4, {length_a}, {preset.feature_dims[1]})" in out and f"(4, 3, {length_t})" in out
    assert f"feature dims: audio {preset.feature_dims[1]}, vision {preset.feature_dims[2]}" in out
    assert "labels: mean" in out and "audio frames: mean" in out
    assert "non-finite values set to 0" in out and out.rstrip().endswith("valid")


def test_inspect_exits_non_zero_on_invalid_file(tmp_path, capsys):
    dataset = small()
    dataset["train"]["audio_lengths"][:] = 1000
    data.write(dataset, tmp_path / "bad.pkl")
    assert cli.main(["inspect", str(tmp_path / "bad.pkl")]) == 1
    assert "INVALID: 1 problem(s)" in capsys.readouterr().out
    assert cli.main(["inspect", str(tmp_path / "absent.pkl")]) == 2
    assert "absent.pkl: file not found" in capsys.readouterr().err
