"""Test-only extractors: one whose worker process dies on a chosen clip, one that says which heavy modules its
worker imported, two that give each clip's size, one loaded as librosa is (the spawned workers import them by
module name; tests register them only while they run, so the registry other tests see stays the real one)."""

import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robustmm.features.base import FileExtractor


@dataclass
class CrashingConfig:
    crash_clip: str = ""  # file name (without extension) of the clip whose worker dies
    # segfault: SIGSEGV; exit: os._exit(3); hang: write the pid to marker_dir and sleep; stall: as hang on the
    # first attempt only (the test kills the process), later attempts extract
    how: str = "segfault"
    marker_dir: str = ""  # segfault/exit: die only on the first attempt (a marker file remembers it)
    after_clip: str = ""  # die only once this clip is extracted (and a second more): the other worker is idle then


class CrashingExtractor(FileExtractor):
    """One row per clip: the size of its file."""

    name = "test-crashing"
    modality = "audio"
    version = 1
    config_class = CrashingConfig

    @property
    def feature_names(self) -> list[str]:
        return ["bytes"]

    @property
    def frame_rate(self) -> None:
        return None

    def extract_file(self, path: Path) -> tuple[np.ndarray, dict]:
        markers = Path(self.config.marker_dir)
        if path.stem == self.config.crash_clip:
            marker = markers / f"{path.stem}.{os.getpid()}" if self.config.marker_dir else None
            first_attempt = marker is None or not any(markers.glob(f"{path.stem}.*"))
            if self.config.how == "hang" or self.config.how == "stall" and first_attempt:
                marker.touch()
                time.sleep(600)
            elif self.config.how != "stall" and first_attempt:
                if marker is not None:
                    marker.touch()
                if self.config.after_clip:
                    while not (markers / f"done-{self.config.after_clip}").exists():
                        time.sleep(0.05)
                    time.sleep(1.0)
                if self.config.how == "exit":
                    os._exit(3)
                os.kill(os.getpid(), signal.SIGSEGV)
        elif self.config.marker_dir:
            (markers / f"done-{path.stem}").touch()
        return np.array([[path.stat().st_size]], np.float32), {}


# What no extraction worker needs unless its extractors do: the training stack, MediaPipe's drawing helpers' and
# the text encoder's packages.
PROBED_MODULES = ("torch", "sklearn", "pandas", "transformers", "mediapipe", "matplotlib", "cv2", "librosa")


@dataclass
class ModuleProbeConfig:
    pass


class ModuleProbeExtractor(CrashingExtractor):
    """One row per clip: 1 for each of PROBED_MODULES that the extracting process has imported."""

    name = "test-module-probe"
    config_class = ModuleProbeConfig

    @property
    def feature_names(self) -> list[str]:
        return list(PROBED_MODULES)

    def extract_file(self, path: Path) -> tuple[np.ndarray, dict]:
        return np.array([[module in sys.modules for module in PROBED_MODULES]], np.float32), {}


class CompiledSizeExtractor(CrashingExtractor):
    """Audio loaded as librosa is, through the numba cache's lock (uses_jit_cache). One row per clip: its size."""

    name = "test-compiled-size"
    uses_jit_cache = True


class VisionSizeExtractor(CrashingExtractor):
    """Vision without numba kernels. One row per clip: its size."""

    name = "test-vision-size"
    modality = "vision"
