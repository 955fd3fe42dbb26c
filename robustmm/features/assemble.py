"""Assembling the per-modality features files and label.csv into the `.pkl` of SPEC section 3."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from robustmm import data
from robustmm.features.dataset import read_dataset
from robustmm.features.extract import read_features

META_FORMAT = "robustmm-extract 1"


def pad_sequence(features: np.ndarray, length: int) -> tuple[np.ndarray, int]:
    """(length, dim) float32 zero padded at the end (or truncated) and the valid length."""
    valid = min(len(features), length)
    padded = np.zeros((length, features.shape[1]), np.float32)
    padded[:valid] = features[:valid]
    return padded, valid


def _check_ids(path: str | os.PathLike, features: dict, ids: list[str]) -> dict[str, int]:
    position = {clip_id: i for i, clip_id in enumerate(features["ids"])}
    missing = [clip_id for clip_id in ids if clip_id not in position]
    extra = sorted(set(position) - set(ids))
    problems = []
    if missing:
        problems.append(f"{len(missing)} clip(s) of label.csv have no features (e.g. {', '.join(missing[:3])}): rerun extract")
    if extra:
        problems.append(f"{len(extra)} clip(s) are not in label.csv (e.g. {', '.join(extra[:3])}): rerun extract")
    if problems:
        raise data.FormatError(path, problems)
    return position


def assemble(
    dataset_dir: str | os.PathLike,
    text: str | os.PathLike,
    audio: str | os.PathLike,
    vision: str | os.PathLike,
    output: str | os.PathLike,
    lengths: Sequence[int],
) -> dict:
    """Write the feature `.pkl` to `output` and return it. `lengths` = (L_t, L_a, L_v) from params, never the data.

    Rows are sorted by id within each split; the same inputs give byte-identical files.
    """
    if len(lengths) != 3 or any(int(length) < 1 for length in lengths):
        raise ValueError(f"lengths must be three positive integers (text, audio, vision), got {list(lengths)}")
    text_length, audio_length, vision_length = (int(length) for length in lengths)
    clips = read_dataset(dataset_dir)
    ids = [clip.id for clip in clips]
    paths = {"text": text, "audio": audio, "vision": vision}
    loaded = {modality: read_features(path) for modality, path in paths.items()}
    for modality, features in loaded.items():
        if features["modality"] != modality:
            raise data.FormatError(paths[modality], [f"holds {features['modality']} features, given as {modality}"])
    positions = {modality: _check_ids(paths[modality], features, ids) for modality, features in loaded.items()}
    if loaded["text"]["text_bert"].shape[-1] != text_length:
        raise ValueError(
            f"{text}: text was tokenised to {loaded['text']['text_bert'].shape[-1]} tokens but the text length is "
            f"{text_length}: extract text with max_length {text_length}"
        )

    result: dict = {}
    sequence_lengths = {"audio": audio_length, "vision": vision_length}
    truncated = {"audio": 0, "vision": 0}
    for split in data.SPLITS:
        members = [clip for clip in clips if clip.mode == split]
        rows = {modality: [positions[modality][clip.id] for clip in members] for modality in loaded}
        columns = {
            "id": np.array([clip.id for clip in members], dtype=object),
            "raw_text": np.array([clip.text for clip in members], dtype=object),
            "text_bert": loaded["text"]["text_bert"][rows["text"]].astype(np.int64),
            "text": loaded["text"]["text"][rows["text"]].astype(np.float32),
            "regression_labels": np.array([clip.label for clip in members], dtype=np.float32),
        }
        for modality, length in sequence_lengths.items():
            dim = loaded[modality]["extractor"]["dim"]
            padded = [pad_sequence(loaded[modality]["features"][row], length) for row in rows[modality]]
            truncated[modality] += sum(len(loaded[modality]["features"][row]) > length for row in rows[modality])
            columns[modality] = np.stack([array for array, _ in padded]) if padded else np.zeros((0, length, dim), np.float32)
            columns[f"{modality}_lengths"] = np.array([valid for _, valid in padded], dtype=np.int64)
        for name in sorted({name for clip in clips for name in clip.extra_labels}):
            columns[f"regression_labels_{name[-1]}"] = np.array([clip.extra_labels[name] for clip in members], dtype=np.float32)
        if any(clip.annotation is not None for clip in clips):
            columns["annotations"] = np.array([clip.annotation or "" for clip in members], dtype=object)
        result[split] = columns

    failures = sorted((failure for features in loaded.values() for failure in features["failures"]),
                      key=lambda failure: (failure["id"], failure["modality"]))
    result[data.META_KEY] = {
        "format": META_FORMAT,
        "lengths": {"text": text_length, "audio": audio_length, "vision": vision_length},
        "extractors": {
            modality: {key: value for key, value in features["extractor"].items() if key != "feature_names"}
            for modality, features in loaded.items()
        },
        "feature_names": {modality: list(features["extractor"]["feature_names"]) for modality, features in loaded.items()},
        "failures": failures,
        "quality": {modality: features["quality"] for modality, features in loaded.items() if features["quality"]},
        "truncated_clips": truncated,
    }
    problems = data.validate(result)
    if problems:
        raise data.FormatError(output, problems)
    data.write(result, output)
    return result
