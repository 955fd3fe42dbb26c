"""AVEC2019 DDS (E-DAIC) importer: distributed per-participant feature files -> the `.pkl` format (SPEC section 9).

The challenge ships features, not video. Per participant (`<PID>_P/` folder or `<PID>_P.tar.gz` archive) this
reads the openSMILE MFCC file (39 features, 100 frames/s), the OpenFace pose + gaze + AU file (49 features,
30 frames/s) and the transcript, and labels (PHQ-8) from the split CSVs.

Both frame streams are pooled onto one clock of fixed windows `[k w, (k+1) w)` taken from their time columns
(statistics per window, e.g. mean and std), after dropping face frames that OpenFace marks failed or
low-confidence. A window without a valid frame is missing. The model only knows valid prefixes
(`<modality>_lengths`), so missing windows are dropped from the sequence rather than zero-filled: a zero window
inside the prefix would be taken as data, and the reconstruction loss would teach the model to rebuild zeros.
TFR-Net treats the modalities as unaligned sequences, so dropping costs no alignment the model relies on.
Each modality is cropped on the clock (its first `length` windows) and zero padded at the end.

Files are streamed in chunks (and archive members read straight from the compressed stream), so memory holds
one participant's chunk of raw frames plus the pooled windows of everyone, never all raw frames.
"""

from __future__ import annotations

import argparse
import io
import itertools
import re
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from robustmm import data
from robustmm.features.video import OPENFACE_SETS
from robustmm.presets import get_preset

if TYPE_CHECKING:
    from robustmm.text_encoder import TextEncoder

# pandas and the text encoder (PyTorch) are imported where a file is read or encoded: the settings schema imports
# this module for ImportSettings, and every stage would pay their 4 s of imports.

STATISTICS = ("mean", "std")

MFCC_COLUMNS = tuple(f"pcm_fftMag_mfcc{order}[{index}]" for order in ("", "_de", "_de_de") for index in range(13))
FACE_COLUMNS = OPENFACE_SETS["au_pose"]  # pose 6, gaze 8, AU intensities 17, AU presences 18
TRANSCRIPT_COLUMNS = ("Start_Time", "Text")
LABEL_COLUMNS = ("PHQ_Score", "PHQ8_Score")  # E-DAIC, then the older DAIC-WOZ spelling
PHQ8_RANGE = (0.0, 24.0)

# Split files of E-DAIC, then of the older DAIC-WOZ release, looked up case-insensitively in DIR and DIR/labels.
SPLIT_FILES = {
    "train": ("train_split.csv", "train_split_depression_avec2017.csv"),
    "valid": ("dev_split.csv", "dev_split_depression_avec2017.csv"),
    "test": ("test_split.csv", "full_test_split.csv"),
}
_PARTICIPANT = re.compile(r"(\d+)_p(\.tar\.gz|\.tgz)?", re.IGNORECASE)


@dataclass(frozen=True)
class Stream:
    """One frame-level feature file: how to find it, parse it, and which frames count as valid."""

    modality: str
    description: str
    file_pattern: re.Pattern
    separator: str
    time_column: str
    feature_columns: tuple[str, ...]
    quality_columns: tuple[str, ...] = ()


MFCC = Stream(
    modality="audio",
    description="openSMILE MFCC file <PID>_OpenSMILE2.3.0_mfcc.csv",
    file_pattern=re.compile(r"(\d+_)?opensmile[\d.]*_mfcc\.csv", re.IGNORECASE),
    separator=";",
    time_column="frameTime",
    feature_columns=MFCC_COLUMNS,
)
FACE = Stream(
    modality="vision",
    description="OpenFace file <PID>_OpenFace2.1.0_Pose_gaze_AUs.csv",
    file_pattern=re.compile(r"(\d+_)?openface[\d.]*_pose_gaze_aus\.csv", re.IGNORECASE),
    separator=",",
    time_column="timestamp",
    feature_columns=FACE_COLUMNS,
    quality_columns=("confidence", "success"),
)
TRANSCRIPT_PATTERN = re.compile(r"(\d+_)?transcript\.csv", re.IGNORECASE)
STREAMS = (MFCC, FACE)


# Default lengths and encoder are the preset's, so a default import is what `--dataset avec2019` trains on.
_PRESET = get_preset("avec2019")


@dataclass(frozen=True)
class ImportSettings:
    window_seconds: float = 1.0
    statistics: tuple[str, ...] = STATISTICS
    text_length: int = _PRESET.seq_lens[0]
    audio_length: int = _PRESET.seq_lens[1]
    vision_length: int = _PRESET.seq_lens[2]
    min_face_confidence: float = 0.8
    text_encoder: str = _PRESET.text_encoder
    device: str = "auto"
    batch_size: int = 16
    chunk_rows: int = 20000

    def __post_init__(self):
        if not self.window_seconds > 0:
            raise ValueError(f"window length must be positive, got {self.window_seconds}")
        unknown = [name for name in self.statistics if name not in STATISTICS]
        if not self.statistics or unknown or len(set(self.statistics)) != len(self.statistics):
            raise ValueError(
                f"statistics must be distinct names from {', '.join(STATISTICS)}, got {list(self.statistics)}"
            )
        if self.text_length < 2 or self.audio_length < 1 or self.vision_length < 1:
            raise ValueError(
                f"lengths must be positive (text at least 2 for [CLS] and [SEP]): text {self.text_length}, "
                f"audio {self.audio_length}, vision {self.vision_length}"
            )
        if not 0.0 <= self.min_face_confidence <= 1.0:
            raise ValueError(f"face confidence threshold must lie in [0, 1], got {self.min_face_confidence}")

    def length(self, modality: str) -> int:
        return {"audio": self.audio_length, "vision": self.vision_length}[modality]


class InputProblem(Exception):
    """One participant file that cannot be used; the message is the reason shown in the report."""


class TruncatedArchive(Exception):
    """A participant archive that ends early or is corrupt: nothing after this point can be read."""


# ---------------------------------------------------------------------------------------------- pooling


class WindowPool:
    """Running count, sum and sum of squares of frame features per window `[k w, (k+1) w)`, k < max_windows."""

    def __init__(self, window_seconds: float, max_windows: int, dim: int):
        self.window_seconds = window_seconds
        self.count = np.zeros(max_windows, dtype=np.int64)
        self.total = np.zeros((max_windows, dim), dtype=np.float64)
        self.total_squares = np.zeros((max_windows, dim), dtype=np.float64)

    def add(self, times: np.ndarray, features: np.ndarray) -> None:
        # The epsilon puts a frame stamped exactly on a boundary (0.3 s / 0.1 s = 2.9999...) in the later window.
        windows = np.floor(times / self.window_seconds + 1e-9)
        keep = np.isfinite(windows) & (windows >= 0) & (windows < len(self.count)) & np.isfinite(features).all(axis=1)
        windows, features = windows[keep].astype(np.int64), features[keep]
        if len(windows) == 0:
            return
        order = np.argsort(windows, kind="stable")
        windows, features = windows[order], features[order]
        starts = np.flatnonzero(np.r_[True, windows[1:] != windows[:-1]])
        present = windows[starts]
        self.count[present] += np.diff(np.r_[starts, len(windows)])
        self.total[present] += np.add.reduceat(features, starts, axis=0)
        self.total_squares[present] += np.add.reduceat(features * features, starts, axis=0)

    def pooled(self, statistics: tuple[str, ...]) -> tuple[np.ndarray, int]:
        """(windows with a frame, len(statistics) * dim) float32 in clock order, and the number of missing
        windows before the last filled one (the gaps that were dropped)."""
        filled = self.count > 0
        if not filled.any():
            return np.zeros((0, len(statistics) * self.total.shape[1]), dtype=np.float32), 0
        gaps = int((~filled[: np.flatnonzero(filled)[-1] + 1]).sum())
        count = self.count[filled, None]
        mean = self.total[filled] / count
        variance = np.maximum(self.total_squares[filled] / count - mean * mean, 0.0)
        columns = {"mean": mean, "std": np.sqrt(variance)}
        return np.concatenate([columns[name] for name in statistics], axis=1).astype(np.float32), gaps


def _read_header(text: io.TextIOBase, stream: Stream) -> list[str]:
    line = text.readline()
    if not line.strip():
        raise InputProblem("empty file (no header line)")
    names = [name.strip() for name in line.rstrip("\r\n").split(stream.separator)]
    if len(names) == 1:
        other = next((sep for sep in ";,\t" if sep in line and sep != stream.separator), None)
        found = f"found {other!r}" if other else "found none"
        raise InputProblem(f"wrong separator: expected {stream.separator!r} between header columns, {found}")
    missing = [
        name for name in (stream.time_column, *stream.quality_columns, *stream.feature_columns) if name not in names
    ]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise InputProblem(f"missing columns {shown}")
    return names


def pool_stream(binary: BinaryIO, stream: Stream, settings: ImportSettings) -> tuple[np.ndarray, int]:
    """Pool one feature file (read in chunks) into windows; see `WindowPool.pooled` for the result."""
    import pandas as pd

    text = io.TextIOWrapper(binary, encoding="utf-8", errors="replace", newline="")
    try:
        names = _read_header(text, stream)
        pool = WindowPool(settings.window_seconds, settings.length(stream.modality), len(stream.feature_columns))
        used = [stream.time_column, *stream.quality_columns, *stream.feature_columns]
        chunks = pd.read_csv(
            text,
            sep=stream.separator,
            header=None,
            names=names,
            usecols=used,
            dtype=dict.fromkeys(used, np.float64),
            chunksize=settings.chunk_rows,
            skipinitialspace=True,
        )
        for chunk in chunks:
            times = chunk[stream.time_column].to_numpy()
            if stream.quality_columns:
                valid = (chunk["success"].to_numpy() == 1) & (
                    chunk["confidence"].to_numpy() >= settings.min_face_confidence
                )
                times = np.where(valid, times, np.nan)
            pool.add(times, chunk[list(stream.feature_columns)].to_numpy())
    except (tarfile.TarError, EOFError, zlib.error) as error:
        raise TruncatedArchive(f"archive ended while reading this file ({error})") from None
    except (ValueError, pd.errors.ParserError) as error:
        raise InputProblem(f"unreadable rows ({str(error).splitlines()[0]})") from None
    finally:
        text.detach()  # the caller owns the binary stream (an archive member must stay open for the next one)
    return pool.pooled(settings.statistics)


def read_transcript(binary: BinaryIO) -> str:
    """The participant's utterances (`Text` ordered by `Start_Time`) joined with spaces."""
    import pandas as pd

    try:
        table = pd.read_csv(binary, dtype=str, keep_default_na=False)
    except (tarfile.TarError, EOFError, zlib.error) as error:
        raise TruncatedArchive(f"archive ended while reading this file ({error})") from None
    except (ValueError, pd.errors.ParserError) as error:
        raise InputProblem(f"unreadable transcript ({str(error).splitlines()[0]})") from None
    table.columns = [str(name).strip() for name in table.columns]
    missing = [name for name in TRANSCRIPT_COLUMNS if name not in table.columns]
    if missing:
        raise InputProblem(f"transcript lacks columns {', '.join(missing)} (separator must be ',')")
    start = pd.to_numeric(table["Start_Time"], errors="coerce")
    utterances = table.assign(Start_Time=start).sort_values("Start_Time", kind="stable")["Text"]
    return " ".join(text.strip() for text in utterances if text.strip())


# ---------------------------------------------------------------------------------------------- participants


@dataclass
class Participant:
    pid: str
    source: str
    audio: np.ndarray | None = None
    vision: np.ndarray | None = None
    transcript: str | None = None
    gaps: dict[str, int] = field(default_factory=dict)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (part, reason)

    def feature(self, modality: str) -> np.ndarray | None:
        return {"audio": self.audio, "vision": self.vision}[modality]

    @property
    def has_data(self) -> bool:
        return self.audio is not None or self.vision is not None or self.transcript is not None


def _file_kind(name: str) -> Stream | str | None:
    base = name.rsplit("/", 1)[-1]
    for stream in STREAMS:
        if stream.file_pattern.fullmatch(base):
            return stream
    return "text" if TRANSCRIPT_PATTERN.fullmatch(base) else None


def _folder_members(folder: Path) -> Iterator[tuple[str, BinaryIO]]:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and _file_kind(path.name) is not None:
            with open(path, "rb") as binary:
                yield str(path.relative_to(folder)), binary


class _ForwardOnly(io.RawIOBase):
    """An archive member read front to back (tarfile's stream-mode members fail io's `seekable()` check)."""

    def __init__(self, member: BinaryIO):
        self._member = member

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        chunk = self._member.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def _archive_members(archive: Path) -> Iterator[tuple[str, BinaryIO]]:
    # Stream mode reads the compressed archive once, front to back, and never extracts to disk.
    try:
        with tarfile.open(archive, mode="r|*") as tar:
            for member in tar:
                if member.isfile() and _file_kind(member.name) is not None:
                    yield member.name, io.BufferedReader(_ForwardOnly(tar.extractfile(member)), buffer_size=1 << 20)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise TruncatedArchive(f"archive truncated or corrupt ({type(error).__name__}: {error})") from None


def read_participant(pid: str, source: Path, settings: ImportSettings) -> Participant:
    """Pool every modality of one participant; each problem is recorded and leaves that modality missing."""
    participant = Participant(pid=pid, source=source.name)
    members = _folder_members(source) if source.is_dir() else _archive_members(source)
    seen: dict[str, str] = {}
    truncation = None
    try:
        for name, binary in members:
            kind = _file_kind(name)
            part = kind if isinstance(kind, str) else kind.modality
            if part in seen:
                participant.problems.append((part, f"two candidate files {seen[part]} and {name}: using the first"))
                continue
            seen[part] = name
            try:
                if part == "text":
                    participant.transcript = read_transcript(binary)
                else:
                    pooled, gaps = pool_stream(binary, kind, settings)
                    if len(pooled) == 0:
                        raise InputProblem(f"no valid frame in the first {settings.length(part)} windows")
                    setattr(participant, part, pooled)
                    participant.gaps[part] = gaps
            except InputProblem as problem:
                participant.problems.append((part, f"{name}: {problem}"))
            except TruncatedArchive as error:
                participant.problems.append((part, f"{name}: {error}"))
                truncation = str(error)
                break
    except TruncatedArchive as error:
        truncation = str(error)
    finally:
        members.close()
    described = {stream.modality: stream.description for stream in STREAMS} | {
        "text": "transcript <PID>_Transcript.csv"
    }
    for part, description in described.items():
        if part not in seen:
            where = f"before {source.name} ended ({truncation})" if truncation else f"in {source.name}"
            participant.problems.append((part, f"no {description} {where}"))
    return participant


def find_participants(data_dir: Path) -> dict[str, Path]:
    """`<PID>_P/` folders and `<PID>_P.tar.gz` archives in DIR or one folder below; a folder wins over its archive."""
    found: dict[str, Path] = {}
    folders = [data_dir, *(sub for sub in data_dir.iterdir() if sub.is_dir() and not _PARTICIPANT.fullmatch(sub.name))]
    candidates = [path for folder in folders for path in folder.iterdir()]
    for path in sorted(candidates, key=lambda path: (path.is_file(), str(path))):
        match = _PARTICIPANT.fullmatch(path.name)
        if match and (path.is_dir() == (match.group(2) is None)):
            found.setdefault(str(int(match.group(1))), path)
    return found


def _find_file(data_dir: Path, names: tuple[str, ...]) -> Path | None:
    folders = [data_dir, *(sub for sub in data_dir.iterdir() if sub.is_dir() and sub.name.lower() == "labels")]
    for name in names:
        for folder in folders:
            for path in sorted(folder.iterdir()):
                if path.is_file() and path.name.lower() == name:
                    return path
    return None


def read_split(path: Path) -> tuple[dict[str, float], list[tuple[str, str]]]:
    """{participant id: PHQ-8} of one split file and the rows that could not be used (id, reason)."""
    import pandas as pd

    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as error:
        raise ValueError(f"{path}: not a readable CSV ({error})") from None
    table.columns = [str(name).strip() for name in table.columns]
    label_column = next((name for name in LABEL_COLUMNS if name in table.columns), None)
    if "Participant_ID" not in table.columns or label_column is None:
        raise ValueError(
            f"{path}: needs columns Participant_ID and one of {', '.join(LABEL_COLUMNS)} (comma separated); "
            f"found {', '.join(table.columns)}"
        )
    labels, problems = {}, []
    for raw_id, raw_label in zip(table["Participant_ID"], table[label_column]):
        try:
            pid = str(int(float(raw_id)))
        except ValueError:
            problems.append((raw_id.strip() or "?", f"{path.name}: participant id {raw_id!r} is not a number"))
            continue
        try:
            label = float(raw_label)
        except ValueError:
            label = float("nan")
        if not PHQ8_RANGE[0] <= label <= PHQ8_RANGE[1]:
            problems.append((pid, f"{path.name}: {label_column} {raw_label!r} is not a PHQ-8 score in 0..24"))
        elif pid in labels:
            problems.append((pid, f"{path.name}: listed twice, using the first row"))
        else:
            labels[pid] = label
    return labels, problems


def read_labels(data_dir: Path) -> tuple[dict[str, dict[str, float]], list[tuple[str, str]], dict[str, str]]:
    labels, problems, files = {}, [], {}
    for split, names in SPLIT_FILES.items():
        path = _find_file(data_dir, names)
        if path is None:
            raise FileNotFoundError(
                f"{data_dir}: no {split} split file (looked for {' or '.join(names)} in it and in labels/)"
            )
        labels[split], split_problems = read_split(path)
        problems += split_problems
        files[split] = str(path.relative_to(data_dir))
    for earlier, later in itertools.combinations(data.SPLITS, 2):
        shared = sorted(set(labels[earlier]) & set(labels[later]), key=int)
        if shared:
            raise ValueError(
                f"{data_dir}: participants {', '.join(shared)} are in both the {earlier} and {later} split files"
            )
    return labels, problems, files


# ---------------------------------------------------------------------------------------------- assembling


def feature_names(stream: Stream, statistics: tuple[str, ...]) -> list[str]:
    return [f"{statistic}({column})" for statistic in statistics for column in stream.feature_columns]


def fit_normalisation(rows: list[np.ndarray | None], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std per feature over every valid window of the given (training) rows; std 0 becomes 1."""
    count, total, total_squares = 0, np.zeros(dim), np.zeros(dim)
    for row in rows:
        if row is not None:
            count += len(row)
            total += row.sum(axis=0, dtype=np.float64)
            total_squares += np.square(row, dtype=np.float64).sum(axis=0)
    if count == 0:
        return np.zeros(dim), np.ones(dim)
    mean = total / count
    std = np.sqrt(np.maximum(total_squares / count - mean * mean, 0.0))
    return mean, np.where(std > 1e-8, std, 1.0)


def assemble_split(
    participants: list[Participant],
    labels: dict[str, float],
    settings: ImportSettings,
    normalisation: dict[str, tuple[np.ndarray, np.ndarray]],
    encoder: TextEncoder,
) -> dict:
    split = {
        "id": np.array([f"{p.pid}$_$interview" for p in participants], dtype=object),
        "raw_text": np.array([p.transcript or "" for p in participants], dtype=object),
        "regression_labels": np.array([labels[p.pid] for p in participants], dtype=np.float32),
    }
    for modality, (mean, std) in normalisation.items():
        features = np.zeros((len(participants), settings.length(modality), len(mean)), dtype=np.float32)
        lengths = np.zeros(len(participants), dtype=np.int64)
        for row, participant in enumerate(participants):
            pooled = participant.feature(modality)
            if pooled is not None:
                features[row, : len(pooled)] = (pooled - mean) / std
                lengths[row] = len(pooled)
        split[modality], split[f"{modality}_lengths"] = features, lengths

    # A missing transcript stays all zeros (length 0), not an empty [CLS] [SEP] utterance.
    has_text = np.array([p.transcript is not None for p in participants], dtype=bool)
    text_bert = np.zeros((len(participants), 3, settings.text_length), dtype=np.int64)
    text = np.zeros((len(participants), settings.text_length, encoder.hidden_size), dtype=np.float32)
    if has_text.any():
        transcripts = [p.transcript for p in participants if p.transcript is not None]
        text_bert[has_text] = encoder.tokenize(transcripts, settings.text_length)
        text[has_text] = encoder.encode(text_bert[has_text], batch_size=settings.batch_size)
    split["text_bert"], split["text"] = text_bert, text
    return split


@dataclass
class ImportReport:
    participants: dict[str, int]
    problems: list[dict[str, str]]
    dropped: list[dict[str, str]]
    gaps: dict[str, dict[str, int]]

    def summary(self) -> str:
        counts = ", ".join(f"{split} {count}" for split, count in self.participants.items())
        lines = [f"imported {sum(self.participants.values())} participants ({counts})"]
        for modality, gaps in self.gaps.items():
            lines.append(
                f"{modality}: {gaps['windows']} missing windows dropped inside {gaps['participants']} interviews"
            )
        if self.problems:
            lines.append(f"{len(self.problems)} problem(s) (rows are kept; a modality whose file failed has length 0):")
            lines += [f"  participant {p['participant']} {p['part']}: {p['reason']}" for p in self.problems]
        if self.dropped:
            lines.append(f"{len(self.dropped)} participant(s) without a row:")
            lines += [f"  participant {d['participant']}: {d['reason']}" for d in self.dropped]
        return "\n".join(lines)


def import_avec2019(
    data_dir: str | Path,
    out: str | Path,
    *,
    window_seconds: float = ImportSettings.window_seconds,
    statistics: tuple[str, ...] = ImportSettings.statistics,
    text_length: int = ImportSettings.text_length,
    audio_length: int = ImportSettings.audio_length,
    vision_length: int = ImportSettings.vision_length,
    min_face_confidence: float = ImportSettings.min_face_confidence,
    text_encoder: str = ImportSettings.text_encoder,
    device: str = ImportSettings.device,
    batch_size: int = ImportSettings.batch_size,
) -> ImportReport:
    """Import an AVEC2019 DDS folder into the `.pkl` at `out`; problems are in the report, not exceptions.

    Raises only when nothing sensible can be written: no such folder, a missing or unreadable split file,
    a participant in two splits, or no participant with data.
    """
    settings = ImportSettings(
        window_seconds=float(window_seconds),
        statistics=tuple(statistics),
        text_length=int(text_length),
        audio_length=int(audio_length),
        vision_length=int(vision_length),
        min_face_confidence=float(min_face_confidence),
        text_encoder=text_encoder,
        device=device,
        batch_size=int(batch_size),
    )
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(
            f"{data_dir}: not a folder (expected the AVEC2019 download with <PID>_P folders or archives)"
        )
    labels, label_problems, split_files = read_labels(data_dir)
    sources = find_participants(data_dir)
    dropped = [{"participant": pid, "reason": reason} for pid, reason in label_problems]
    problems, rows = [], {}
    for split in data.SPLITS:
        rows[split] = []
        for pid in sorted(labels[split], key=int):
            if pid not in sources:
                dropped.append(
                    {"participant": pid, "reason": f"in {split_files[split]} but no {pid}_P folder or {pid}_P.tar.gz"}
                )
                continue
            participant = read_participant(pid, sources[pid], settings)
            if participant.has_data:
                rows[split].append(participant)
                problems += [
                    {"participant": pid, "part": part, "reason": reason} for part, reason in participant.problems
                ]
            else:
                reasons = "; ".join(f"{part}: {reason}" for part, reason in participant.problems)
                dropped.append({"participant": pid, "reason": f"nothing usable ({reasons})"})
    labelled = set().union(*(labels[split] for split in data.SPLITS))
    for pid in sorted(set(sources) - labelled, key=int):
        dropped.append({"participant": pid, "reason": f"{sources[pid].name} is in no split file"})
    if not any(rows.values()):
        listing = "\n".join(f"  {d['participant']}: {d['reason']}" for d in dropped)
        raise RuntimeError(f"{data_dir}: no participant could be imported\n{listing}")

    normalisation = {}
    for stream in STREAMS:
        dim = len(settings.statistics) * len(stream.feature_columns)
        normalisation[stream.modality] = fit_normalisation([p.feature(stream.modality) for p in rows["train"]], dim)
    from robustmm.text_encoder import TextEncoder

    encoder = TextEncoder(settings.text_encoder, device=settings.device)
    output = {
        split: assemble_split(rows[split], labels[split], settings, normalisation, encoder) for split in data.SPLITS
    }

    gaps = {
        stream.modality: {
            "windows": sum(p.gaps.get(stream.modality, 0) for split in data.SPLITS for p in rows[split]),
            "participants": sum(p.gaps.get(stream.modality, 0) > 0 for split in data.SPLITS for p in rows[split]),
        }
        for stream in STREAMS
    }
    report = ImportReport(
        participants={split: len(rows[split]) for split in data.SPLITS},
        problems=problems,
        dropped=dropped,
        gaps=gaps,
    )
    output[data.META_KEY] = {
        "dataset": "avec2019",
        "importer": {**asdict(settings), "statistics": list(settings.statistics), "split_files": split_files},
        "text_encoder": {"name": settings.text_encoder, "hidden_size": encoder.hidden_size},
        "feature_names": {stream.modality: feature_names(stream, settings.statistics) for stream in STREAMS},
        "normalisation": {
            modality: {"mean": mean.tolist(), "std": std.tolist(), "fitted_on": "train"}
            for modality, (mean, std) in normalisation.items()
        },
        "missing_windows": "dropped: a window without a valid frame is left out, so lengths count filled windows",
        "import_report": asdict(report),
    }
    data.normalise(output)
    problems_found = data.validate(output)
    if problems_found:
        raise RuntimeError("the importer built an invalid file (a bug): " + "; ".join(problems_found))
    data.write(output, out)
    return report


# ---------------------------------------------------------------------------------------------- command line


def _cmd_import(args: argparse.Namespace) -> int:
    report = import_avec2019(
        args.data_dir,
        args.out,
        window_seconds=args.window_seconds,
        statistics=tuple(args.statistics),
        text_length=args.text_length,
        audio_length=args.audio_length,
        vision_length=args.vision_length,
        min_face_confidence=args.min_face_confidence,
        text_encoder=args.text_encoder,
        device=args.device,
        batch_size=args.batch_size,
    )
    print(report.summary())
    print(f"wrote {args.out}")
    return 0


def register(commands) -> None:
    defaults = ImportSettings()
    parser = commands.add_parser(
        "import-avec2019",
        help="import the AVEC2019 DDS (E-DAIC) feature files into a .pkl",
        description="Pool MFCC and OpenFace features onto a common clock, encode transcripts, label with PHQ-8.",
    )
    parser.add_argument(
        "data_dir", metavar="DIR", help="folder with <PID>_P/ folders or <PID>_P.tar.gz archives and the split CSVs"
    )
    parser.add_argument("--out", required=True, metavar="FILE.pkl", help="output feature file")
    parser.add_argument(
        "--window-seconds",
        type=float,
        default=defaults.window_seconds,
        help="pooling window length (default %(default)s)",
    )
    parser.add_argument(
        "--statistics",
        nargs="+",
        choices=STATISTICS,
        default=list(defaults.statistics),
        help="statistics per window, in this order (default: %(default)s)",
    )
    parser.add_argument(
        "--text-length",
        type=int,
        default=defaults.text_length,
        help="tokens per transcript, with [CLS] and [SEP] (default %(default)s)",
    )
    parser.add_argument(
        "--audio-length", type=int, default=defaults.audio_length, help="audio windows kept (default %(default)s)"
    )
    parser.add_argument(
        "--vision-length", type=int, default=defaults.vision_length, help="vision windows kept (default %(default)s)"
    )
    parser.add_argument(
        "--min-face-confidence",
        type=float,
        default=defaults.min_face_confidence,
        help="OpenFace frames below this confidence are left out of the pool (default %(default)s)",
    )
    parser.add_argument(
        "--text-encoder",
        default=defaults.text_encoder,
        help="model name or folder (default %(default)s, offline MiniLM)",
    )
    parser.add_argument(
        "--device", default=defaults.device, help="auto, cpu or cuda, for the text encoder (default %(default)s)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=defaults.batch_size,
        help="transcripts per encoder batch (default %(default)s)",
    )
    parser.set_defaults(handler=_cmd_import)
