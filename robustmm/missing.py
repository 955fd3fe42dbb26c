"""Missing features: the patterns a sweep can test under, all drawn with the protocol's seeding (SPEC section 5).

`iid` is random modality feature missing (RMFM), the protocol of TFR-Net and EMT-DLFR: one mask per split and
modality, drawn as `np.random.seed(seed); uniform(N, L) > rate` so that masks match the published protocol
bit for bit, without touching numpy's global random state. The other patterns draw from the same per-modality
generators: `per_modality` (a rate per modality), `block` (contiguous spans covering a share of the steps) and
`modality` (a whole modality absent for a share of samples). The seeds are the protocol's missing seeds, one
per modality and independent of the training seed (`mask_seeds`). Every pattern is applied the same way
(`apply_keep`): dropped text ids become [UNK] with the attention mask unchanged ([CLS] and the final [SEP] are
kept), dropped audio and vision frames become zero vectors.

A pattern maps the sweep's one `rate` onto its own parameter (`RATE_MEANING`); the rate may also be one value
per row (`TrainOnce`: per-sample random rates).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

MODALITIES = ("text", "audio", "vision")
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


def _check_rate(rate) -> np.ndarray:
    """`rate` as a float array (a scalar, or one value per row); ValueError outside [0, 1]."""
    values = np.asarray(rate, dtype=np.float64)
    outside = values[~((values >= 0.0) & (values <= 1.0))]
    if outside.size:
        raise ValueError(f"missing rate {outside.ravel()[0]:g} is outside [0, 1]")
    return values


def _per_row(rate: np.ndarray) -> np.ndarray:
    """A rate ready to compare with an (N, L) array: a scalar as it is, one value per row as a column."""
    return rate[:, None] if rate.ndim == 1 else rate


def _draw_keep(shape: tuple[int, int], rate: np.ndarray, seed: int, valid: np.ndarray) -> np.ndarray:
    uniform = np.random.RandomState(seed).uniform(size=shape)
    return (uniform > _per_row(rate)).astype(np.int64) * valid


def valid_masks(split: dict) -> dict[str, np.ndarray]:
    """Per modality, (N, L) int64: 1 on the valid positions (text: the attention mask; audio, vision: the lengths)."""
    masks = {"text": np.asarray(split["text_bert"])[:, 1, :].astype(np.int64)}
    for modality in ("audio", "vision"):
        masks[modality] = valid_mask(feature_lengths(split, modality), np.asarray(split[modality]).shape[1])
    return masks


def apply_keep(split: dict, keeps: dict[str, np.ndarray], unk_id: int = UNK_ID) -> dict:
    """Return a copy of `split` with corrupted `text_bert_m`, `audio_m`, `vision_m` and the keep masks.

    `keeps` holds per modality an (N, L) mask, 1 where a valid position is kept. `*_keep` is 1 where a valid
    position was kept and 0 where it was dropped or is padding. Text keeps [CLS] and its final [SEP]; dropped
    ids become `unk_id` and the attention mask is unchanged. Dropped audio and vision frames become zero vectors.
    """
    out = dict(split)
    text_bert = np.asarray(split["text_bert"])
    ids = text_bert[:, 0, :]
    attention = text_bert[:, 1, :].astype(np.int64)
    keep = keeps["text"] * attention
    lengths = text_lengths(text_bert)
    rows = np.flatnonzero(lengths > 0)
    keep[rows, 0] = 1
    keep[rows, lengths[rows] - 1] = 1
    text_bert_m = text_bert.copy()
    text_bert_m[:, 0, :] = np.where(attention - keep > 0, np.asarray(unk_id, dtype=ids.dtype), ids)
    out["text_bert_m"] = text_bert_m
    out["text_keep"] = keep
    for modality in ("audio", "vision"):
        features = np.asarray(split[modality])
        keep = keeps[modality]
        out[f"{modality}_m"] = features * keep[:, :, None].astype(features.dtype)
        out[f"{modality}_keep"] = keep
    return out


def simulate_missing(
    split: dict,
    rates: tuple[float, float, float],
    seeds: tuple[int, int, int],
    unk_id: int = UNK_ID,
) -> dict:
    """`split` with every valid token/frame dropped independently: modality m's positions with `rates[m]`
    (a number, or one per row), drawn with `seeds[m]`; `rates` and `seeds` are (text, audio, vision).
    The corrupted arrays and keep masks are those of `apply_keep`."""
    rates = [_check_rate(rate) for rate in rates]
    valid = valid_masks(split)
    keeps = {
        modality: _draw_keep(valid[modality].shape, rate, seed, valid[modality])
        for modality, rate, seed in zip(MODALITIES, rates, seeds)
    }
    return apply_keep(split, keeps, unk_id)


# ---------------------------------------------------------------------------------------------- patterns


def _modalities(value, what: str) -> tuple[str, ...]:
    names = (value,) if isinstance(value, str) else tuple(value)
    unknown = [name for name in names if name not in MODALITIES]
    if unknown or len(set(names)) != len(names):
        raise ValueError(f"{what} {list(names)!r}: expected distinct names among {', '.join(MODALITIES)}")
    if not names:
        raise ValueError(f"{what} []: name at least one of {', '.join(MODALITIES)}")
    return tuple(name for name in MODALITIES if name in names)  # text, audio, vision order


def _drop_in(split: dict, modalities: tuple[str, ...], rate, seeds: tuple[int, int, int], unk_id: int, drop) -> dict:
    """`apply_keep` of the valid masks after `drop(modality, keep, rate, generator)` zeroed some positions of
    each listed modality's `keep` in place, drawing from a generator seeded with that modality's seed only."""
    rate = _check_rate(rate)
    keeps = valid_masks(split)
    for modality, seed in zip(MODALITIES, seeds):
        if modality in modalities:
            drop(modality, keeps[modality], rate, np.random.RandomState(seed))
    return apply_keep(split, keeps, unk_id)


@dataclass(frozen=True)
class Iid:
    """Every valid token/frame of every modality dropped independently with the sweep's rate (TFR-Net, EMT-DLFR)."""

    name: ClassVar[str] = "iid"
    rate_meaning: ClassVar[str] = "share of tokens/frames dropped in every modality"

    def apply(self, split: dict, rate, seeds: tuple[int, int, int], unk_id: int = UNK_ID) -> dict:
        return simulate_missing(split, (rate, rate, rate), seeds, unk_id)


@dataclass(frozen=True)
class PerModality:
    """i.i.d. drops with a rate per modality: the `swept` modalities take the sweep's rate, the others their
    fixed entry of `rates` (text, audio, vision), e.g. audio 0..1 with text and vision complete."""

    rates: tuple[float, float, float] = (0.0, 0.0, 0.0)
    swept: tuple[str, ...] = ("audio",)
    name: ClassVar[str] = "per_modality"
    rate_meaning: ClassVar[str] = "share of tokens/frames dropped in the swept modalities"

    def __post_init__(self):
        rates = tuple(self.rates) if isinstance(self.rates, Sequence) and not isinstance(self.rates, str) else ()
        if len(rates) != 3 or not all(
            isinstance(rate, (int, float)) and not isinstance(rate, bool) and 0 <= rate <= 1 for rate in rates
        ):
            raise ValueError(f"rates {self.rates!r}: expected three numbers in [0, 1] (text, audio, vision)")
        object.__setattr__(self, "rates", tuple(float(rate) for rate in rates))
        object.__setattr__(self, "swept", _modalities(self.swept, "swept"))

    def modality_rates(self, rate) -> tuple:
        return tuple(rate if modality in self.swept else fixed for modality, fixed in zip(MODALITIES, self.rates))

    def apply(self, split: dict, rate, seeds: tuple[int, int, int], unk_id: int = UNK_ID) -> dict:
        return simulate_missing(split, self.modality_rates(rate), seeds, unk_id)


SPAN_DISTRIBUTIONS = ("uniform", "geometric")


@dataclass(frozen=True)
class Block:
    """Contiguous spans of missing steps covering the sweep's rate of each row's valid steps, in `modalities`.

    Per row, round(rate * n) of its n valid steps (text: the tokens between [CLS] and the final [SEP]) are
    dropped, as spans whose lengths are drawn from `distribution`: `uniform` integers in [min_span, max_span],
    or `geometric` with mean `mean_span` (min_span + a geometric count, capped at max_span); the last span is
    cut to reach the share exactly. The spans are placed in random order with random gaps of at least one
    kept step between them, so they stay separate wherever the kept steps allow.
    """

    modalities: tuple[str, ...] = MODALITIES
    distribution: str = "uniform"
    min_span: int = 1
    max_span: int = 10
    mean_span: float | None = None
    name: ClassVar[str] = "block"
    rate_meaning: ClassVar[str] = "share of valid steps covered by missing blocks"

    def __post_init__(self):
        object.__setattr__(self, "modalities", _modalities(self.modalities, "modalities"))
        if self.distribution not in SPAN_DISTRIBUTIONS:
            raise ValueError(f"distribution {self.distribution!r}: choose {' or '.join(SPAN_DISTRIBUTIONS)}")
        for key in ("min_span", "max_span"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} {value!r}: expected a whole number of steps >= 1")
        if self.min_span > self.max_span:
            raise ValueError(f"min_span {self.min_span} is above max_span {self.max_span}")
        if self.distribution == "geometric":
            if self.mean_span is None or not self.min_span <= self.mean_span <= self.max_span:
                raise ValueError(
                    f"mean_span {self.mean_span!r}: the geometric distribution needs a mean span "
                    f"in [min_span, max_span] = [{self.min_span}, {self.max_span}]"
                )
        elif self.mean_span is not None:
            raise ValueError("mean_span applies to distribution 'geometric' only (uniform spans: min_span..max_span)")

    def span_length(self, generator: np.random.RandomState) -> int:
        if self.distribution == "uniform":
            return int(generator.randint(self.min_span, self.max_span + 1))
        extra = int(generator.geometric(1.0 / (self.mean_span - self.min_span + 1))) - 1
        return min(self.min_span + extra, self.max_span)

    def row_keep(self, steps: int, rate: float, generator: np.random.RandomState) -> np.ndarray:
        """(steps,) int64: 0 on the dropped spans of one row."""
        dropped = int(np.floor(rate * steps + 0.5))
        lengths = []
        while sum(lengths) < dropped:
            lengths.append(min(self.span_length(generator), dropped - sum(lengths)))
        keep = np.ones(steps, dtype=np.int64)
        if not lengths:
            return keep
        spans, kept = len(lengths), steps - dropped
        least_gap = 1 if kept >= spans - 1 else 0  # too few kept steps to separate every span: some touch
        free = kept - least_gap * (spans - 1)
        # The gaps before, between and after the spans: a uniformly random composition of the free steps.
        cuts = np.sort(generator.choice(free + spans, spans, replace=False))
        gaps = np.diff(np.concatenate(([-1], cuts, [free + spans]))) - 1
        gaps[1:-1] += least_gap
        position = 0
        for gap, length in zip(gaps, lengths):
            position += gap
            keep[position : position + length] = 0
            position += length
        return keep

    def drop_spans(self, modality: str, keep: np.ndarray, rate: np.ndarray, generator: np.random.RandomState) -> None:
        lengths = keep.sum(axis=1)
        rates = np.broadcast_to(rate, lengths.shape)
        # Text spans lie between [CLS] and the final [SEP], which are always kept.
        first = 1 if modality == "text" else 0
        for row, length in enumerate(lengths):
            inner = max(int(length) - 2 * first, 0)
            keep[row, first : first + inner] = self.row_keep(inner, float(rates[row]), generator)

    def apply(self, split: dict, rate, seeds: tuple[int, int, int], unk_id: int = UNK_ID) -> dict:
        return _drop_in(split, self.modalities, rate, seeds, unk_id, self.drop_spans)


@dataclass(frozen=True)
class WholeModality:
    """Each of `modalities` absent as a whole (every token but [CLS]/[SEP], every frame) from the sweep's rate
    of the samples: row i lacks modality m when `uniform(N)[i] < rate` with m's missing seed, independently
    per modality (so at rate 1 every listed modality is absent from every sample)."""

    modalities: tuple[str, ...] = MODALITIES
    name: ClassVar[str] = "modality"
    rate_meaning: ClassVar[str] = "share of samples without the modality"

    def __post_init__(self):
        object.__setattr__(self, "modalities", _modalities(self.modalities, "modalities"))

    @staticmethod
    def drop_samples(modality: str, keep: np.ndarray, rate: np.ndarray, generator: np.random.RandomState) -> None:
        keep[generator.uniform(size=len(keep)) < rate] = 0

    def apply(self, split: dict, rate, seeds: tuple[int, int, int], unk_id: int = UNK_ID) -> dict:
        return _drop_in(split, self.modalities, rate, seeds, unk_id, self.drop_samples)


PATTERNS = {pattern.name: pattern for pattern in (Iid, PerModality, Block, WholeModality)}
MissingPattern = Iid | PerModality | Block | WholeModality
RATE_MEANING = {name: pattern.rate_meaning for name, pattern in PATTERNS.items()}


def missing_pattern(name: str, options: Mapping | None = None) -> MissingPattern:
    """The pattern `name` with its `options` (its dataclass fields); ValueError naming the problem."""
    if name not in PATTERNS:
        raise ValueError(f"unknown missing pattern {name!r}: choose one of {', '.join(PATTERNS)}")
    pattern = PATTERNS[name]
    known = [field.name for field in dataclasses.fields(pattern)]
    unknown = sorted(set(options or {}) - set(known))
    if unknown:
        raise ValueError(
            f"missing pattern {name!r} has no setting {', '.join(map(repr, unknown))} "
            f"(its settings: {', '.join(known) or 'none'})"
        )
    return pattern(**dict(options or {}))


def pattern_record(pattern: MissingPattern) -> dict:
    """The pattern as JSON data: its name and settings (what a run's fingerprint and run_info.json hold)."""
    return {"pattern": pattern.name, **dataclasses.asdict(pattern)}


def as_pattern(value) -> MissingPattern:
    """A pattern from itself, its name, or its record (`pattern_record`, e.g. read back from a checkpoint)."""
    if isinstance(value, tuple(PATTERNS.values())):
        return value
    if isinstance(value, str):
        return missing_pattern(value)
    if isinstance(value, Mapping) and "pattern" in value:
        return missing_pattern(value["pattern"], {key: item for key, item in value.items() if key != "pattern"})
    raise ValueError(f"missing pattern {value!r}: expected one of {', '.join(PATTERNS)} or a mapping with `pattern`")


# ------------------------------------------------------------------------------ the train-once protocol

# per_rate: one model trained and tested per (rate, seed) (TFR-Net, EMT-DLFR); train_once: `TrainOnce` (LNLN).
PROTOCOLS = ("per_rate", "train_once")


@dataclass(frozen=True)
class TrainOnce:
    """The train-once protocol (LNLN): one model trained with a random rate per training sample, drawn
    uniformly from `train_rates` (low, high), with a `complete_share` of the samples complete (rate 0);
    early stopping and the best checkpoint on the validation split at `valid_rate`; then tested at every
    rate of the grid. The test split never selects anything."""

    train_rates: tuple[float, float] = (0.0, 1.0)
    complete_share: float = 0.0
    valid_rate: float = 0.5

    def __post_init__(self):
        rates = tuple(self.train_rates) if isinstance(self.train_rates, Sequence) else ()
        if (
            len(rates) != 2
            or not all(isinstance(rate, (int, float)) and not isinstance(rate, bool) for rate in rates)
            or not 0.0 <= rates[0] <= rates[1] <= 1.0
        ):
            raise ValueError(f"train_rates {self.train_rates!r}: expected [LOW, HIGH] with 0 <= LOW <= HIGH <= 1")
        for key in ("complete_share", "valid_rate"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{key} {value!r}: expected a number in [0, 1]")
        object.__setattr__(self, "train_rates", tuple(float(rate) for rate in rates))
        object.__setattr__(self, "complete_share", float(self.complete_share))
        object.__setattr__(self, "valid_rate", float(self.valid_rate))

    def sample_rates(self, rows: int, seeds: tuple[int, int, int]) -> np.ndarray:
        """(rows,) rates of the training samples, drawn from the three missing seeds together (a stream of its
        own, so the per-sample rates do not repeat the draws of any modality's mask)."""
        generator = np.random.RandomState(list(seeds))
        rates = generator.uniform(*self.train_rates, size=rows)
        complete = generator.uniform(size=rows) < self.complete_share
        return np.where(complete, 0.0, rates)
