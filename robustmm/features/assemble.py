"""Assembling the per-modality features files and label.csv into the `.pkl` of SPEC section 3."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from robustmm import data
from robustmm.features.cache import text_hash
from robustmm.features.dataset import Clip, read_dataset
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


def _check_transcripts(path: str | os.PathLike, features: dict, clips: list[Clip], label_csv: Path) -> None:
    """Refuse text features of transcripts that label.csv no longer holds: the new text would get the old ids."""
    if "transcript_hashes" not in features:
        raise data.FormatError(path, ["records no transcripts to check against label.csv (made by an older robustmm): rerun extract text"])
    recorded = dict(zip(features["ids"], features["transcript_hashes"]))
    changed = [clip.id for clip in clips if recorded[clip.id] != text_hash(clip.text)]
    if changed:
        raise data.FormatError(path, [
            f"the transcript of {len(changed)} clip(s) changed in {label_csv} since the text was extracted "
            f"({', '.join(changed[:5])}{', ...' if len(changed) > 5 else ''}): rerun extract text (`dvc repro` does)"
        ])


def _truncation(clips: list[Clip], loaded: dict, positions: dict, lengths: dict[str, int]) -> dict:
    """Per modality: the clips longer than the padded length and how much each lost (text: transcript tokens)."""
    summary = {}
    for modality, length in lengths.items():
        if modality == "text":
            sizes = {clip.id: loaded["text"]["quality"].get(clip.id, {}).get("tokens") for clip in clips}
        else:
            sizes = {clip.id: len(loaded[modality]["features"][positions[modality][clip.id]]) for clip in clips}
        lost = {clip_id: size - length for clip_id, size in sizes.items() if size is not None and size > length}
        summary[modality] = {"unit": "tokens" if modality == "text" else "frames", "length": length, "clips": len(lost),
                             "lost": sum(lost.values()), "most": max(lost.values(), default=0), "per_clip": lost}
    return summary


def describe_truncation(meta: dict) -> list[str]:
    """One line per modality: how many clips the padded length cut and how much they lost."""
    lines = []
    for modality, cut in meta["truncation"].items():
        if not cut["clips"]:
            lines.append(f"{modality}: no clip longer than {cut['length']} {cut['unit']}")
            continue
        longest = max(cut["per_clip"], key=cut["per_clip"].get)
        lines.append(f"{modality}: {cut['clips']} clip(s) cut to {cut['length']} {cut['unit']}, {cut['lost']} {cut['unit']} "
                     f"lost in all, at most {cut['most']} ({longest}); meta.truncation.{modality}.per_clip lists them")
    return lines


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
    _check_transcripts(text, loaded["text"], clips, Path(dataset_dir) / "label.csv")
    if loaded["text"]["text_bert"].shape[-1] != text_length:
        raise ValueError(
            f"{text}: text was tokenised to {loaded['text']['text_bert'].shape[-1]} tokens but the text length is "
            f"{text_length}: extract text with max_length {text_length}"
        )

    result: dict = {}
    sequence_lengths = {"audio": audio_length, "vision": vision_length}
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
        "truncation": _truncation(clips, loaded, positions, {"text": text_length, **sequence_lengths}),
    }
    problems = data.validate(result)
    if problems:
        raise data.FormatError(output, problems)
    data.write(result, output)
    return result
