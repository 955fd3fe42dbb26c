import numpy as np
import pytest

from robustmm import presets, synthetic
from robustmm.missing import simulate_missing, text_lengths, valid_mask


@pytest.fixture(scope="module")
def split():
    data = synthetic.make_dataset(presets.get_preset("mosi"), sizes=(40, 4, 4), seq_lens=(20, 30, 25), feature_dims=(8, 5, 6))
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
