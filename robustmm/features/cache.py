"""Per-clip cache of extractor outputs, keyed by (clip content hash, extractor name, config, version)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robustmm.data import atomic_write
from robustmm.features.base import Extractor


@dataclass
class ClipResult:
    arrays: dict[str, np.ndarray]  # "features" (T, dim) for audio/vision; "text_bert" and "text" for text
    failure: str | None = None  # why this modality of the clip is empty
    quality: dict = field(default_factory=dict)  # e.g. {"frames": sampled, "detected": with a face}


def file_hash(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class FeatureCache:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def entry(self, content_hash: str, extractor: Extractor) -> Path:
        identity = json.dumps(
            {"content": content_hash, "extractor": extractor.name, "config": dataclasses.asdict(extractor.config),
             "version": extractor.version},
            sort_keys=True,
        )
        key = hashlib.sha256(identity.encode("utf-8")).hexdigest()
        return self.root / extractor.name / key[:2] / f"{key}.npz"

    @staticmethod
    def load(path: Path) -> ClipResult | None:
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as stored:
                info = json.loads(str(stored["info"]))
                arrays = {name: stored[name] for name in stored.files if name != "info"}
        except (OSError, ValueError, KeyError) as error:
            raise RuntimeError(f"unreadable cache entry {path} ({error}); delete it to re-extract that clip") from None
        return ClipResult(arrays=arrays, failure=info["failure"], quality=info["quality"])

    @staticmethod
    def store(path: Path, result: ClipResult) -> None:
        """Write atomically: a crash leaves either the whole entry or none."""
        with atomic_write(path) as file:
            info = json.dumps({"failure": result.failure, "quality": result.quality}, sort_keys=True)
            np.savez(file, info=np.array(info), **result.arrays)
