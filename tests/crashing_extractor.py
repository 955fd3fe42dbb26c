"""A test-only extractor whose worker process dies on a chosen clip (the spawned workers import it by module name;
tests register it only while they run, so the registry other tests see stays the real one)."""

import os
import signal
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
