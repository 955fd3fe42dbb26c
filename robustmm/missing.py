"""Random modality feature missing (RMFM), the protocol of TFR-Net and EMT-DLFR (SPEC section 5).

One mask per split and modality, drawn as `np.random.seed(seed); uniform(N, L) > rate` so that masks match
the published protocol bit for bit, without touching numpy's global random state. The seeds are the
protocol's missing seeds, one per modality and independent of the training seed (`mask_seeds`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

UNK_ID = 100
# Text, audio, vision: the missing seeds of the TFR-Net and EMT-DLFR configurations (MMSA: 1111 for all three).
PROTOCOL_MISSING_SEEDS = (111, 1111, 11111)
# `missing_seeds` value that draws the masks of all three modalities with the run's training seed instead.
PER_TRAINING_SEED = "per_training_seed"


def check_missing_seeds(value: object) -> tuple[int, int, int] | str:
    """`missing_seeds` as a (text, audio, vision) tuple of ints, or PER_TRAINING_SEED; ValueError otherwise."""
    if value == PER_TRAINING_SEED:
        return PER_TRAINING_SEED
    if isinstance(value, str):
        value = value.split(",")
    if isinstance(value, Sequence) and len(value) == 3:
        try:
            seeds = tuple(int(seed) for seed in value)
        except (TypeError, ValueError):
            seeds = None
        if seeds is not None and all(seed >= 0 and float(raw) == seed for seed, raw in zip(seeds, value)):
            return seeds
    raise ValueError(
        f"missing_seeds {value!r}: expected three non-negative integers (text, audio, vision), "
        f"e.g. 111,1111,11111, or {PER_TRAINING_SEED!r}"
    )


def mask_seeds(missing_seeds: tuple[int, int, int] | str, training_seed: int) -> tuple[int, int, int]:
    """The (text, audio, vision) seeds the masks are drawn with: the fixed missing seeds, or the training seed."""
    if missing_seeds == PER_TRAINING_SEED:
        return (training_seed, training_seed, training_seed)
    return tuple(missing_seeds)


def valid_mask(lengths: np.ndarray, max_len: int) -> np.ndarray:
    """(N, max_len) int64 array: 1 on the first `lengths[i]` positions of row i."""
    return (np.arange(max_len)[None, :] < np.asarray(lengths)[:, None]).astype(np.int64)


def feature_lengths(split: dict, modality: str) -> np.ndarray:
    """Valid frames per row; files without `<modality>_lengths` (aligned files) are valid everywhere."""
    key = f"{modality}_lengths"
    if key in split:
        return np.asarray(split[key], dtype=np.int64)
    features = split[modality]
    return np.full(len(features), features.shape[1], dtype=np.int64)


def text_lengths(text_bert: np.ndarray) -> np.ndarray:
    """Tokens per row, from the attention mask (upstream's argmin gives 0 for a row without padding)."""
    return np.asarray(text_bert[:, 1, :], dtype=np.int64).sum(axis=1)


def _draw_keep(shape: tuple[int, int], rate: float, seed: int, valid: np.ndarray) -> np.ndarray:
    uniform = np.random.RandomState(seed).uniform(size=shape)
    return (uniform > rate).astype(np.int64) * valid


def simulate_missing(
    split: dict,
    rates: tuple[float, float, float],
    seeds: tuple[int, int, int],
    unk_id: int = UNK_ID,
) -> dict:
    """Return a copy of `split` with corrupted `text_bert_m`, `audio_m`, `vision_m` and the keep masks.

    `rates` and `seeds` are (text, audio, vision). `*_keep` is 1 where a valid position was kept and 0 where
    it was dropped or is padding. Text keeps [CLS] and its final [SEP]; dropped ids become `unk_id` and the
    attention mask is unchanged. Dropped audio and vision frames become zero vectors.
    """
    for rate in rates:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"missing rate {rate} is outside [0, 1]")
    text_rate, audio_rate, vision_rate = rates
    text_seed, audio_seed, vision_seed = seeds
    out = dict(split)

    text_bert = np.asarray(split["text_bert"])
    ids = text_bert[:, 0, :]
    attention = text_bert[:, 1, :].astype(np.int64)
    keep = _draw_keep(attention.shape, text_rate, text_seed, attention)
    rows = np.flatnonzero(text_lengths(text_bert) > 0)
    keep[rows, 0] = 1
    keep[rows, text_lengths(text_bert)[rows] - 1] = 1
    text_bert_m = text_bert.copy()
    text_bert_m[:, 0, :] = np.where(attention - keep > 0, np.asarray(unk_id, dtype=ids.dtype), ids)
    out["text_bert_m"] = text_bert_m
    out["text_keep"] = keep

    for modality, rate, seed in (("audio", audio_rate, audio_seed), ("vision", vision_rate, vision_seed)):
        features = np.asarray(split[modality])
        valid = valid_mask(feature_lengths(split, modality), features.shape[1])
        keep = _draw_keep(valid.shape, rate, seed, valid)
        out[f"{modality}_m"] = features * keep[:, :, None].astype(features.dtype)
        out[f"{modality}_keep"] = keep
    return out
