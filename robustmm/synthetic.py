"""Synthetic feature files shaped like the published ones, with a learnable sentiment signal.

Used by tests, benchmarks and users who want to try the pipeline without data: each sample has a latent
sentiment s; audio and vision frames carry s along a fixed direction plus noise, and text tokens come from
a positive or negative block of the vocabulary, so a model can learn s from any modality.
"""

from __future__ import annotations

import numpy as np

from robustmm.data import SPLITS
from robustmm.presets import Preset

VOCAB_SIZE = 30522
CLS_ID, SEP_ID = 101, 102


def make_split(
    rng: np.random.Generator,
    n: int,
    seq_lens: tuple[int, int, int],
    feature_dims: tuple[int, int, int],
    label_range: tuple[float, float],
    directions: dict[str, np.ndarray],
    token_table: np.ndarray | None,
    prefix: str,
) -> dict:
    len_t, len_a, len_v = seq_lens
    _, dim_a, dim_v = feature_dims
    low, high = label_range
    sentiment = rng.uniform(-1.0, 1.0, size=n)
    labels = (low + (sentiment + 1.0) / 2.0 * (high - low)).astype(np.float32)

    tokens = rng.integers(2, max(3, len_t - 1), size=n) if len_t > 2 else np.full(n, 2)
    ids = np.zeros((n, len_t), dtype=np.int64)
    mask = np.zeros((n, len_t), dtype=np.int64)
    for row, count in enumerate(tokens):
        block = 2000 if sentiment[row] > 0 else 3000
        words = block + rng.integers(0, 500, size=count - 2)
        ids[row, :count] = [CLS_ID, *words, SEP_ID]
        mask[row, :count] = 1
    text_bert = np.stack([ids, mask, np.zeros_like(ids)], axis=1)

    split = {
        "id": np.array([f"{prefix}{row:05d}$_$0" for row in range(n)], dtype=object),
        "raw_text": np.array([("good " if s > 0 else "bad ") * 3 for s in sentiment], dtype=object),
        "text_bert": text_bert,
        "regression_labels": labels,
        "annotations": np.array(
            ["Positive" if s > 0.1 else "Negative" if s < -0.1 else "Neutral" for s in sentiment], dtype=object
        ),
    }
    if token_table is not None:
        split["text"] = (token_table[ids % len(token_table)] * mask[:, :, None]).astype(np.float32)
    for modality, length, dim in (("audio", len_a, dim_a), ("vision", len_v, dim_v)):
        lengths = rng.integers(max(1, length // 3), length + 1, size=n)
        features = rng.standard_normal((n, length, dim), dtype=np.float32)
        features += (sentiment[:, None, None] * directions[modality][None, None, :]).astype(np.float32)
        features *= (np.arange(length)[None, :] < lengths[:, None])[:, :, None]
        split[modality] = features
        split[f"{modality}_lengths"] = lengths.astype(np.int64)
    return split


def make_dataset(
    preset: Preset,
    sizes: tuple[int, int, int] = (64, 16, 16),
    seq_lens: tuple[int, int, int] | None = None,
    feature_dims: tuple[int, int, int] | None = None,
    with_text_features: bool = True,
    seed: int = 0,
) -> dict:
    """A valid feature file with the preset's (or the given) lengths and dims."""
    rng = np.random.default_rng(seed)
    seq_lens = seq_lens or preset.seq_lens
    feature_dims = feature_dims or preset.feature_dims
    directions = {
        "audio": rng.standard_normal(feature_dims[1]).astype(np.float32),
        "vision": rng.standard_normal(feature_dims[2]).astype(np.float32),
    }
    token_table = rng.standard_normal((4096, feature_dims[0])).astype(np.float32) if with_text_features else None
    return {
        name: make_split(rng, n, seq_lens, feature_dims, preset.label_range, directions, token_table, f"{name}_")
        for name, n in zip(SPLITS, sizes)
    }


def with_upstream_quirks(data: dict) -> dict:
    """The dataset as the published files store it: float64 arrays, lists for ids, -inf in audio,
    float token ids, and no optional keys."""
    quirky = {}
    for name in SPLITS:
        split = {key: value for key, value in data[name].items() if key not in ("annotations", "text")}
        split["audio"] = split["audio"].astype(np.float64)
        split["audio"][:, 0, 0] = -np.inf
        split["vision"] = split["vision"].astype(np.float64)
        split["text_bert"] = split["text_bert"].astype(np.float64)
        split["id"] = list(split["id"])
        split["raw_text"] = list(split["raw_text"])
        split["regression_labels"] = split["regression_labels"].astype(np.float64)
        quirky[name] = split
    return quirky
