"""The extractor interface and registry (the lhotse pattern: one small class per extractor with a dataclass config).

Adding an extractor: a dataclass config, a class with `name`, `modality`, `version`, `config_class` deriving
from AudioExtractor, FrameExtractor or FileExtractor, decorated with `@register`, and a test.
Raise ClipError for problems of the clip (they are reported per clip); any other exception stops the stage.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import ClassVar

import numpy as np

MEDIA_MODALITIES = ("audio", "vision")


class Extractor:
    name: ClassVar[str]
    modality: ClassVar[str]  # "text", "audio" or "vision"
    version: ClassVar[int]  # bump when the output for the same input and config changes
    config_class: ClassVar[type]
    # True when load() runs numba kernels cached on disk: it then loads holding the cache's lock (extract.py), the
    # others load beside it, so the workers of a pool start side by side.
    uses_jit_cache: ClassVar[bool] = False

    def __init__(self, config=None):
        self.config = config if config is not None else self.config_class()

    @property
    def feature_names(self) -> list[str]:
        raise NotImplementedError

    @property
    def dim(self) -> int:
        return len(self.feature_names)

    @property
    def frame_rate(self) -> float | None:
        """Feature rows per second of media; None when not fixed (one row per clip, or the video's own frame rate)."""
        raise NotImplementedError

    def check(self) -> None:
        """Fail fast, before any worker starts, when something the extractor needs is absent (model file, binary)."""

    def load(self) -> None:
        """Load models and warm up; called once per worker before the first clip."""

    def close(self) -> None:
        """Release what load() acquired."""

    def describe(self) -> dict:
        return {
            "name": self.name, "modality": self.modality, "version": self.version,
            "config": dataclasses.asdict(self.config), "feature_names": self.feature_names, "dim": self.dim,
            "frame_rate": self.frame_rate,
        }


class AudioExtractor(Extractor):
    """Features of the mono audio track at `config.sample_rate`, decoded by the recipe `config.decode`."""

    modality = "audio"

    @property
    def sample_rate(self) -> int:
        return int(self.config.sample_rate)

    @property
    def audio_format(self):
        from robustmm.features.decode import AudioFormat

        return AudioFormat(self.sample_rate, self.config.decode, self.config.resampler)

    def extract(self, samples: np.ndarray) -> np.ndarray:
        """(T, dim) float32 from mono float32 samples."""
        raise NotImplementedError


class FrameExtractor(Extractor):
    """Per-frame features of video frames sampled at `config.fps`; frames without a face give None."""

    modality = "vision"

    @property
    def frame_rate(self) -> float:
        return float(self.config.fps)

    def frame_features(self, rgb: np.ndarray) -> np.ndarray | None:
        raise NotImplementedError


class FileExtractor(Extractor):
    """Extractors that read the clip file with their own tool (e.g. OpenFace)."""

    def extract_file(self, path: Path) -> tuple[np.ndarray, dict]:
        """(T, dim) float32 features of the usable frames and a quality dict (e.g. frames, detected)."""
        raise NotImplementedError


def check_config(config, positive: Iterable[str] = (), probabilities: Iterable[str] = (),
                 choices: Mapping[str, Iterable] | None = None) -> None:
    """Refuse an extractor config whose values have the wrong type or range, naming the key, the value and what is
    allowed; called by every config's __post_init__, so each way of building one is checked before any work
    (a negative fps looped forever, fps 0 failed on the first clip). Types follow the settings schema's rules for
    the field's annotation; `positive` fields must be > 0 (each entry of a list), `probabilities` within [0, 1],
    `choices` one of the values given."""
    # Imported here: the settings schema imports this module for the extractor registry.
    from robustmm.settings import Problems, kind_of_annotation

    hints = typing.get_type_hints(type(config))
    problems = Problems()
    for field in dataclasses.fields(config):
        value, found = getattr(config, field.name), len(problems.found)
        kind_of_annotation(hints[field.name]).parse(value, field.name, problems)
        if len(problems.found) != found or value is None:
            continue
        if field.name in positive and any(entry <= 0 for entry in (value if isinstance(value, (list, tuple)) else [value])):
            problems.reject(field.name, value, "a number > 0")
        elif field.name in probabilities and not 0.0 <= value <= 1.0:
            problems.reject(field.name, value, "a number in [0, 1]")
        elif field.name in (choices or {}) and value not in choices[field.name]:
            problems.reject(field.name, value, f"one of {', '.join(map(str, choices[field.name]))}")
    if problems.found:
        raise ValueError("; ".join(f"{path}: {message}" for path, message in problems.found))


EXTRACTORS: dict[str, type[Extractor]] = {}


def register(cls: type[Extractor]) -> type[Extractor]:
    if cls.name in EXTRACTORS:
        raise ValueError(f"extractor name {cls.name!r} registered twice")
    EXTRACTORS[cls.name] = cls
    return cls


def create_extractor(name: str, config: dict | None = None, modality: str | None = None) -> Extractor:
    """An extractor by registered name with its config built from a plain dict (unknown keys are an error)."""
    # Importing the modules registers their extractors.
    from robustmm.features import audio, text, video  # noqa: F401

    if name not in EXTRACTORS:
        raise ValueError(f"unknown extractor {name!r}; registered: {', '.join(sorted(EXTRACTORS))}")
    cls = EXTRACTORS[name]
    if modality is not None and cls.modality != modality:
        raise ValueError(f"extractor {name!r} extracts {cls.modality}, not {modality}")
    fields = {field.name for field in dataclasses.fields(cls.config_class)}
    unknown = sorted(set(config or {}) - fields)
    if unknown:
        raise ValueError(f"extractor {name!r}: unknown config key(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
    try:
        return cls(cls.config_class(**(config or {})))
    except ValueError as error:
        raise ValueError(f"extractor {name!r}: config {error}") from None
