import numpy as np
import pytest

from robustmm import presets, synthetic
from robustmm.missing import (
    PROTOCOL_MISSING_SEEDS,
    check_missing_seeds,
    mask_seeds,
    simulate_missing,
    text_lengths,
    valid_mask,
)


@pytest.fixture(scope="module")
def split():
    data = synthetic.make_dataset(
        presets.get_preset("mosi"), sizes=(40, 4, 4), seq_lens=(20, 30, 25), feature_dims=(8, 5, 6)
    )
    train = data["train"]
    # One text row without padding: the upstream length bug case.
    train["text_bert"][0, 0, :] = [101] + list(range(2000, 2018)) + [102]
    train["text_bert"][0, 1, :] = 1
    return train


SEEDS = (1111, 1111, 1111)


def test_rate_zero_drops_nothing(split):
    out = simulate_missing(split, (0.0, 0.0, 0.0), SEEDS)
    np.testing.assert_array_equal(out["text_bert_m"], split["text_bert"])
    np.testing.assert_array_equal(out["audio_m"], split["audio"])
    np.testing.assert_array_equal(out["vision_m"], split["vision"])
    np.testing.assert_array_equal(out["text_keep"], split["text_bert"][:, 1])
    np.testing.assert_array_equal(out["audio_keep"], valid_mask(split["audio_lengths"], 30))


def test_rate_one_drops_everything_but_cls_and_final_sep(split):
    out = simulate_missing(split, (1.0, 1.0, 1.0), SEEDS)
    lengths = text_lengths(split["text_bert"])
    assert (out["text_keep"].sum(axis=1) == 2).all()
    rows = np.arange(len(lengths))
    assert (out["text_keep"][rows, 0] == 1).all() and (out["text_keep"][rows, lengths - 1] == 1).all()
    ids = out["text_bert_m"][:, 0]
    assert (ids[rows, 0] == 101).all() and (ids[rows, lengths - 1] == 102).all()
    inner = (np.arange(20)[None] > 0) & (np.arange(20)[None] < (lengths - 1)[:, None])
    assert (ids[inner] == 100).all()
    assert (ids[split["text_bert"][:, 1] == 0] == 0).all()  # padding stays padding
    np.testing.assert_array_equal(out["text_bert_m"][:, 1:], split["text_bert"][:, 1:])  # mask unchanged
    assert not out["audio_m"].any() and not out["vision_m"].any()
    assert not out["audio_keep"].any() and not out["vision_keep"].any()


def test_unpadded_text_keeps_its_last_sep_only(split):
    out = simulate_missing(split, (1.0, 0.0, 0.0), SEEDS)
    assert out["text_keep"][0].tolist() == [1] + [0] * 18 + [1]
    assert out["text_bert_m"][0, 0].tolist() == [101] + [100] * 18 + [102]


def test_same_seed_same_mask_different_seed_different_mask(split):
    first = simulate_missing(split, (0.5, 0.5, 0.5), SEEDS)
    again = simulate_missing(split, (0.5, 0.5, 0.5), SEEDS)
    other = simulate_missing(split, (0.5, 0.5, 0.5), (111, 111, 111))
    for key in ("text_keep", "audio_keep", "vision_keep"):
        np.testing.assert_array_equal(first[key], again[key])
        assert (first[key] != other[key]).any()


def test_matches_the_published_protocol(split):
    # np.random.seed(seed); keep = uniform(N, L) > rate, times the valid mask (SPEC section 5).
    out = simulate_missing(split, (0.3, 0.4, 0.6), (11, 22, 33))
    np.random.seed(22)
    expected = (np.random.uniform(size=(40, 30)) > 0.4) * valid_mask(split["audio_lengths"], 30)
    np.testing.assert_array_equal(out["audio_keep"], expected)
    np.testing.assert_array_equal(out["audio_m"], split["audio"] * expected[:, :, None])


def test_padding_is_never_counted_as_kept(split):
    out = simulate_missing(split, (0.2, 0.2, 0.2), SEEDS)
    assert not out["text_keep"][split["text_bert"][:, 1] == 0].any()
    for modality, length in (("audio", 30), ("vision", 25)):
        assert not out[f"{modality}_keep"][valid_mask(split[f"{modality}_lengths"], length) == 0].any()


def test_input_is_not_modified(split):
    before = {key: value.copy() for key, value in split.items()}
    simulate_missing(split, (0.7, 0.7, 0.7), SEEDS)
    for key, value in before.items():
        np.testing.assert_array_equal(split[key], value)


def test_rejects_rates_outside_unit_interval(split):
    with pytest.raises(ValueError, match="outside"):
        simulate_missing(split, (1.5, 0.0, 0.0), SEEDS)


def reference_generate_m(split, rate, seeds, unk_id=100):
    """Upstream's `generate_m` (MMSA data_loader.py), written out here: np.random.seed(seed), keep =
    uniform(N, L) > rate times the valid mask; text keeps [CLS] and its final [SEP] (length from the attention
    mask's sum, not upstream's argmin, which gives 0 for a row without padding), dropped ids -> [UNK]."""
    text_seed, audio_seed, vision_seed = seeds
    ids, attention = split["text_bert"][:, 0], split["text_bert"][:, 1]
    np.random.seed(text_seed)
    text_keep = (np.random.uniform(size=attention.shape) > rate) * attention
    for row, length in enumerate(attention.sum(axis=1)):
        text_keep[row, 0] = text_keep[row, length - 1] = 1
    masks = {"text_keep": text_keep, "text_ids": text_keep * ids + unk_id * (attention - text_keep)}
    for name, seed in (("audio", audio_seed), ("vision", vision_seed)):
        features = split[name]
        valid = np.array([[1] * n + [0] * (features.shape[1] - n) for n in split[f"{name}_lengths"]])
        np.random.seed(seed)
        keep = (np.random.uniform(size=valid.shape) > rate) * valid
        masks[f"{name}_keep"], masks[f"{name}_m"] = keep, keep[:, :, None] * features
    return masks


@pytest.mark.usefixtures("single_torch_thread")
@pytest.mark.parametrize("missing_seeds", [None, (1111, 1111, 1111), "per_training_seed"])
def test_the_sweep_trains_on_the_masks_of_the_protocol(tmp_path, monkeypatch, missing_seeds):
    from robustmm import data, experiments, train
    from robustmm.text_encoder import OFFLINE_ENCODER

    path = tmp_path / "mosi.pkl"
    data.write(
        synthetic.make_dataset(
            presets.get_preset("mosi"), sizes=(12, 6, 6), seq_lens=(10, 24, 16), feature_dims=(384, 5, 20), seed=4
        ),
        path,
    )
    seen = {}
    real_prepare = train.prepare_splits

    def recording_prepare(loaded, config, *args, **kwargs):
        splits = real_prepare(loaded, config, *args, **kwargs)
        seen[(config.rate, config.seed)] = {
            name: {key: value.numpy() for key, value in split.items()} for name, split in splits.items()
        }
        return splits

    monkeypatch.setattr(train, "prepare_splits", recording_prepare)
    settings = {} if missing_seeds is None else {"missing_seeds": missing_seeds}
    experiments.sweep(
        path,
        "mosi",
        rates=[0.3, 0.7],
        seeds=[111, 1111, 5],
        out=tmp_path / "sweep",
        text_mode="frozen",
        text_encoder=OFFLINE_ENCODER,
        device="cpu",
        epochs=1,
        progress=False,
        **settings,
    )

    loaded = data.load(path)
    assert sorted(seen) == [(rate, seed) for rate in (0.3, 0.7) for seed in (5, 111, 1111)]
    for (rate, seed), splits in seen.items():
        seeds = {None: (111, 1111, 11111), "per_training_seed": (seed, seed, seed)}.get(missing_seeds, missing_seeds)
        for name in ("train", "valid", "test"):
            expected = reference_generate_m(loaded[name], rate, seeds)
            for key in ("text_keep", "audio_keep", "vision_keep", "audio_m", "vision_m"):
                np.testing.assert_array_equal(
                    splits[name][key], expected[key], err_msg=f"{name}/{key} at {rate}, {seed}"
                )
            assert splits[name]["text_keep"].any() and not splits[name]["audio_keep"].all()
    if missing_seeds != "per_training_seed":  # fixed seeds: every training seed sees the same masks
        for rate in (0.3, 0.7):
            for key in ("text_keep", "audio_keep", "vision_keep"):
                np.testing.assert_array_equal(seen[(rate, 111)]["test"][key], seen[(rate, 5)]["test"][key])


def test_missing_seeds_setting():
    assert check_missing_seeds("1111,1111,1111") == (1111, 1111, 1111)
    assert check_missing_seeds([111, 1111, 11111]) == PROTOCOL_MISSING_SEEDS == (111, 1111, 11111)
    assert check_missing_seeds("per_training_seed") == "per_training_seed"
    assert mask_seeds(PROTOCOL_MISSING_SEEDS, 7) == (111, 1111, 11111) and mask_seeds("per_training_seed", 7) == (
        7,
        7,
        7,
    )
    for bad in ("111,1111", [1, 2, 3.5], "a,b,c", "per_seed", [-1, 2, 3]):
        with pytest.raises(ValueError, match="missing_seeds"):
            check_missing_seeds(bad)
