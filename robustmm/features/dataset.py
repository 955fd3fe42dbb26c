"""Reading a raw dataset (SPEC section 2): `label.csv` plus `Raw/<video_id>/<clip_id>.<ext>`."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

from robustmm.data import SPLITS
from robustmm.errors import UserError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".flv", ".mpg", ".mpeg", ".webm", ".m4v", ".wmv", ".3gp", ".ts")
REQUIRED_COLUMNS = ("video_id", "clip_id", "text", "label", "mode")
EXTRA_LABEL_COLUMNS = ("label_T", "label_A", "label_V")


class DatasetError(UserError):
    """A dataset folder that cannot be read; the message lists every problem with file and row."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) in the dataset:\n  " + "\n  ".join(problems))


@dataclass(frozen=True)
class Clip:
    id: str  # f"{video_id}$_${clip_id}", the pkl `id`
    video_id: str
    clip_id: str
    text: str
    label: float
    mode: str
    path: Path
    extra_labels: dict[str, float] = field(default_factory=dict)  # label_T/A/V when the csv has them
    annotation: str | None = None


def clip_key(video_id: str, clip_id: str) -> str:
    return f"{video_id}$_${clip_id}"


def _parse_float(value: str | None) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _clip_files(raw_dir: Path) -> dict[tuple[str, str], list[Path]]:
    files: dict[tuple[str, str], list[Path]] = {}
    if raw_dir.is_dir():
        for path in sorted(raw_dir.glob("*/*")):
            if path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS:
                files.setdefault((path.parent.name, path.stem), []).append(path)
    return files


def read_dataset(dataset_dir: str | Path) -> list[Clip]:
    """Every clip of `dataset_dir`, sorted by id; raise DatasetError listing all problems at once."""
    dataset_dir = Path(dataset_dir)
    label_csv = dataset_dir / "label.csv"
    raw_dir = dataset_dir / "Raw"
    if not label_csv.is_file():
        raise DatasetError([f"{label_csv}: file not found (expected label.csv and Raw/<video_id>/<clip_id>.<ext>)"])
    content = label_csv.read_bytes()
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = content[:error.start].count(b"\n") + 1
        raise DatasetError([
            f"{label_csv}:{line}: not UTF-8 text (byte 0x{content[error.start]:02x} at offset {error.start}); "
            "save label.csv as UTF-8 (e.g. `iconv -f <its encoding> -t UTF-8`)"
        ]) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = [name.strip() for name in reader.fieldnames or []]
    reader.fieldnames = columns
    rows = list(reader)
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing:
        raise DatasetError([f"{label_csv}: missing column(s) {', '.join(missing)} (has {', '.join(columns) or 'none'})"])
    if not raw_dir.is_dir():
        raise DatasetError([f"{raw_dir}: folder not found"])

    files = _clip_files(raw_dir)
    extra_columns = [name for name in EXTRA_LABEL_COLUMNS if name in columns]
    problems: list[str] = []
    clips: list[Clip] = []
    first_row: dict[str, int] = {}
    for row_number, row in enumerate(rows, start=2):  # row 1 is the header
        where = f"{label_csv}:{row_number}"
        video_id, clip_id = (row.get("video_id") or "").strip(), (row.get("clip_id") or "").strip()
        if not video_id or not clip_id:
            problems.append(f"{where}: empty video_id or clip_id")
            continue
        key = clip_key(video_id, clip_id)
        if key in first_row:
            problems.append(f"{where}: duplicate clip {key} (first listed at row {first_row[key]})")
            continue
        first_row[key] = row_number
        mode = (row.get("mode") or "").strip()
        if mode not in SPLITS:
            problems.append(f"{where}: unknown mode {mode!r} (expected one of {', '.join(SPLITS)})")
        label = _parse_float(row.get("label"))
        if label is None:
            problems.append(f"{where}: label {row.get('label')!r} is missing or not a finite number")
        extra_labels = {}
        for name in extra_columns:
            value = _parse_float(row.get(name))
            if value is None:
                problems.append(f"{where}: {name} {row.get(name)!r} is missing or not a finite number")
            extra_labels[name] = value
        candidates = files.get((video_id, clip_id), [])
        if not candidates:
            problems.append(f"{where}: clip {key} has no video file Raw/{video_id}/{clip_id}.<ext>")
        elif len(candidates) > 1:
            names = ", ".join(str(path.relative_to(dataset_dir)) for path in candidates)
            problems.append(f"{where}: clip {key} has several video files ({names})")
        if candidates:
            clips.append(Clip(
                id=key, video_id=video_id, clip_id=clip_id, text=row.get("text") or "", label=label, mode=mode,
                path=candidates[0], extra_labels=extra_labels,
                annotation=(row.get("annotation") or "").strip() if "annotation" in columns else None,
            ))
    for (video_id, clip_id), paths in files.items():
        if clip_key(video_id, clip_id) not in first_row:
            for path in paths:
                problems.append(f"{path}: video file not listed in {label_csv}")
    if problems:
        raise DatasetError(problems)
    return sorted(clips, key=lambda clip: clip.id)
