"""A test-only extractor whose one row per clip says which heavy modules the process extracting it has imported
(the spawned workers import it by module name; tests register it only while they run)."""

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robustmm.features.base import FileExtractor

# What no extraction worker needs unless its extractors do: the training stack, MediaPipe's drawing helpers' and
# the text encoder's packages.
PROBED_MODULES = ("torch", "sklearn", "pandas", "transformers", "mediapipe", "matplotlib", "cv2", "librosa")


@dataclass
class ModuleProbeConfig:
    pass


class ModuleProbeExtractor(FileExtractor):
    name = "test-module-probe"
    modality = "audio"
    version = 1
    config_class = ModuleProbeConfig

    @property
    def feature_names(self) -> list[str]:
        return list(PROBED_MODULES)

    @property
    def frame_rate(self) -> None:
        return None

    def extract_file(self, path: Path) -> tuple[np.ndarray, dict]:
        return np.array([[module in sys.modules for module in PROBED_MODULES]], np.float32), {}
