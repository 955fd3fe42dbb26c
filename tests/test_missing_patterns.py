"""The missing patterns of robustmm.missing: hand-checked masks, seeding, settings; the train-once rates."""

import numpy as np
import pytest

from robustmm.missing import (
    Block,
    Iid,
    PerModality,
    TrainOnce,
    WholeModality,
    as_pattern,
    missing_pattern,
    pattern_record,
    simulate_missing,
)

SEEDS = (111, 1111, 11111)


def tiny_split():
    """Two rows: text of 7 and 5 tokens in 8 ([CLS] ... [SEP], then padding), audio 8 and 6 of 8 frames,
    vision 5 and 3 of 5 frames; every feature value 1 so that a dropped frame reads as a zero row."""
    ids = np.zeros((2, 3, 8), dtype=np.int64)
    ids[0, 0, :7] = [101, 2001, 2002, 2003, 2004, 2005, 102]
    ids[1, 0, :5] = [101, 2011, 2012, 2013, 102]
    ids[0, 1, :7] = 1
    ids[1, 1, :5] = 1
    return {
        "text_bert": ids,
        "audio": np.ones((2, 8, 3), dtype=np.float32),
        "audio_lengths": np.array([8, 6]),
        "vision": np.ones((2, 5, 2), dtype=np.float32),
        "vision_lengths": np.array([5, 3]),
    }


def test_block_spans_where_the_kept_steps_leave_one_placement():
    # Spans of exactly 2 steps; audio row 0: 8 steps at 0.75 -> 6 dropped = 3 spans, 2 kept steps, one between
    # each pair of spans: only 00100100 is possible. Row 1: 6 valid steps -> round(4.5) = 5 dropped (2, 2, 1),
    # one kept step cannot separate 3 spans, so two touch; every valid step but one is dropped, padding stays 0.
    # Text row 0: 5 inner tokens at 0.6 with 1-step spans -> 3 spans, 2 kept: 1 0101 0 1 (CLS, SEP kept).
    out = Block(modalities=("audio",), min_span=2, max_span=2).apply(tiny_split(), 0.75, SEEDS)
    assert out["audio_keep"][0].tolist() == [0, 0, 1, 0, 0, 1, 0, 0]
    assert out["audio_keep"][1, :6].sum() == 1 and out["audio_keep"][1, 6:].tolist() == [0, 0]
    assert out["audio_m"][0, :, 0].tolist() == [0, 0, 1, 0, 0, 1, 0, 0]
    assert (out["text_keep"] == tiny_split()["text_bert"][:, 1]).all() and out["vision_keep"].sum() == 8
    text = Block(modalities=("text",), min_span=1, max_span=1).apply(tiny_split(), 0.6, SEEDS)
    assert text["text_keep"][0].tolist() == [1, 0, 1, 0, 1, 0, 1, 0]
    assert text["text_bert_m"][0, 0].tolist() == [101, 100, 2002, 100, 2004, 100, 102, 0]
    # Row 1: 3 inner tokens at 0.6 -> round(1.8) = 2 dropped, 1 kept.
    assert text["text_keep"][1, 1:4].sum() == 1 and text["text_keep"][1].tolist()[::4] == [1, 1]


def test_block_rate_zero_and_one():
    split = tiny_split()
    nothing = Block().apply(split, 0.0, SEEDS)
    everything = Block().apply(split, 1.0, SEEDS)
    assert nothing["audio_keep"].tolist() == [[1] * 8, [1] * 6 + [0, 0]]
    assert not everything["audio_keep"].any() and not everything["vision_m"].any()
    assert everything["text_keep"].tolist() == [[1, 0, 0, 0, 0, 0, 1, 0], [1, 0, 0, 0, 1, 0, 0, 0]]


def runs_of_zeros(row):
    runs, length = [], 0
    for value in list(row) + [1]:
        if value == 0:
            length += 1
        elif length:
            runs.append(length)
            length = 0
    return runs


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.6])
def test_block_covers_the_share_exactly_with_spans_of_the_distribution(rate):
    rows, steps = 50, 200
    split = {
        "text_bert": np.ones((rows, 3, 4), dtype=np.int64),
        "audio": np.ones((rows, steps, 1), dtype=np.float32),
        "audio_lengths": np.full(rows, steps),
        "vision": np.ones((rows, 4, 1), dtype=np.float32),
        "vision_lengths": np.full(rows, 4),
    }
    uniform = Block(modalities=("audio",), min_span=3, max_span=7).apply(split, rate, SEEDS)["audio_keep"]
    lengths = []
    for row in uniform:
        assert (row == 0).sum() == int(np.floor(rate * steps + 0.5))
        runs = runs_of_zeros(row)
        assert max(runs) <= 7 and sum(run < 3 for run in runs) <= 1  # only the last, cut span may be short
        lengths += runs
    assert set(lengths) >= {3, 4, 5, 6, 7}
    geometric = Block(modalities=("audio",), distribution="geometric", min_span=1, max_span=100, mean_span=8.0)
    spans = [run for row in geometric.apply(split, rate, SEEDS)["audio_keep"] for run in runs_of_zeros(row)]
    assert 6.0 < np.mean(spans) < 9.0  # a capped geometric of mean 8, each row's last span cut


def test_whole_modality_absent_for_the_drawn_samples():
    rows = 40
    split = {
        "text_bert": np.stack(
            [
                np.tile([101, 7, 8, 102], (rows, 1)),
                np.ones((rows, 4), dtype=np.int64),
                np.zeros((rows, 4), dtype=np.int64),
            ],
            axis=1,
        ),
        "audio": np.ones((rows, 5, 2), dtype=np.float32),
        "audio_lengths": np.full(rows, 5),
        "vision": np.ones((rows, 3, 2), dtype=np.float32),
        "vision_lengths": np.full(rows, 3),
    }
    out = WholeModality(modalities=("text", "vision")).apply(split, 0.3, SEEDS)
    # Row i lacks modality m when uniform(N)[i] < rate with m's seed: the same draw as iid's first row, per sample.
    absent_text = np.random.RandomState(111).uniform(size=rows) < 0.3
    absent_vision = np.random.RandomState(11111).uniform(size=rows) < 0.3
    assert 0 < absent_text.sum() < rows and (absent_text != absent_vision).any()
    assert (out["text_bert_m"][absent_text, 0] == [101, 100, 100, 102]).all()
    assert (out["text_bert_m"][~absent_text, 0] == [101, 7, 8, 102]).all()
    assert (out["vision_keep"].sum(axis=1) == np.where(absent_vision, 0, 3)).all()
    assert not out["vision_m"][absent_vision].any() and out["vision_m"][~absent_vision].all()
    assert out["audio_keep"].all()  # not listed: complete


def test_per_modality_sweeps_only_its_swept_modalities():
    split = tiny_split()
    pattern = PerModality(rates=(0.0, 0.0, 0.5), swept=("audio",))
    out = pattern.apply(split, 1.0, SEEDS)
    assert (out["text_keep"] == split["text_bert"][:, 1]).all()
    assert not out["audio_keep"].any()
    expected = simulate_missing(split, (0.0, 1.0, 0.5), SEEDS)
    for key in ("text_keep", "audio_keep", "vision_keep", "vision_m", "text_bert_m"):
        np.testing.assert_array_equal(out[key], expected[key])
    np.testing.assert_array_equal(
        out["vision_keep"], (np.random.RandomState(11111).uniform(size=(2, 5)) > 0.5) * [[1] * 5, [1, 1, 1, 0, 0]]
    )


def test_iid_is_the_protocol_and_rates_may_be_per_row():
    split = tiny_split()
    for key, value in Iid().apply(split, 0.4, SEEDS).items():
        np.testing.assert_array_equal(value, simulate_missing(split, (0.4, 0.4, 0.4), SEEDS)[key])
    rows = np.array([0.0, 1.0])  # row 0 complete, row 1 all dropped
    out = Iid().apply(split, rows, SEEDS)
    assert out["audio_keep"].tolist() == [[1] * 8, [0] * 8]
    assert out["text_keep"].tolist() == [[1] * 7 + [0], [1, 0, 0, 0, 1, 0, 0, 0]]
    with pytest.raises(ValueError, match="outside"):
        Iid().apply(split, np.array([0.2, 1.5]), SEEDS)


@pytest.mark.parametrize("pattern", [Block(), WholeModality(), PerModality(swept=("text", "audio", "vision"))])
def test_each_modality_is_drawn_with_its_own_seed_only(pattern):
    split = tiny_split()
    first = pattern.apply(split, 0.5, SEEDS)
    other_audio = pattern.apply(split, 0.5, (111, 5, 11111))
    np.testing.assert_array_equal(first["text_keep"], other_audio["text_keep"])
    np.testing.assert_array_equal(first["vision_keep"], other_audio["vision_keep"])
    again = pattern.apply(split, 0.5, SEEDS)
    for key in ("text_keep", "audio_keep", "vision_keep"):
        np.testing.assert_array_equal(first[key], again[key])


def test_pattern_settings_are_checked_and_round_trip():
    assert missing_pattern("block", {"min_span": 2, "max_span": 4}) == Block(min_span=2, max_span=4)
    record = pattern_record(PerModality(rates=[0, 0.2, 0], swept=["vision", "audio"]))
    assert record == {"pattern": "per_modality", "rates": (0.0, 0.2, 0.0), "swept": ("audio", "vision")}
    assert as_pattern(record) == PerModality(rates=(0.0, 0.2, 0.0), swept=("audio", "vision"))
    for name, options, message in [
        ("blok", {}, "unknown missing pattern 'blok'"),
        ("block", {"span": 3}, "has no setting 'span'"),
        ("block", {"min_span": 5, "max_span": 2}, "min_span 5 is above max_span 2"),
        ("block", {"distribution": "geometric"}, "mean_span None"),
        ("block", {"mean_span": 3.0}, "applies to distribution 'geometric' only"),
        ("per_modality", {"rates": [0, 1.5, 0]}, "three numbers in"),
        ("per_modality", {"swept": []}, "swept \\[\\]: name at least one of"),
        ("block", {"modalities": []}, "modalities \\[\\]: name at least one of"),
        ("modality", {"modalities": ["audio", "face"]}, "distinct names among text, audio, vision"),
    ]:
        with pytest.raises(ValueError, match=message):
            missing_pattern(name, options)


def test_train_once_rates_per_sample():
    once = TrainOnce(train_rates=(0.2, 0.8), complete_share=0.25)
    rates = once.sample_rates(400, SEEDS)
    np.testing.assert_array_equal(rates, once.sample_rates(400, SEEDS))
    complete = rates == 0.0
    assert 0.15 < complete.mean() < 0.35 and ((rates[~complete] >= 0.2) & (rates[~complete] < 0.8)).all()
    assert (once.sample_rates(400, (1, 2, 3)) != rates).any()
    assert not TrainOnce(complete_share=1.0).sample_rates(10, SEEDS).any()
    for options, message in [
        ({"train_rates": (0.8, 0.2)}, "train_rates"),
        ({"valid_rate": 1.2}, "valid_rate"),
        ({"complete_share": -0.1}, "complete_share"),
    ]:
        with pytest.raises(ValueError, match=message):
            TrainOnce(**options)
