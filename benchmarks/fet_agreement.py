"""Agreement of robustmm's audio features with MMSA-FET 0.4.1's own output, per extractor and decoding recipe.

Needs the test-only extra (`.ci/run` installs it: mmsa-fet 0.4.1 and its few imports) and Debian's `ffmpeg`,
which MMSA-FET calls. Clips: three made here (stereo AAC at 44.1 kHz, mono AAC at 22.05 kHz, stereo 16-bit PCM)
and the real clips of ../shared/media (CREMA-D .flv, GRID .mpg) when that folder exists; missing folders are
skipped. For each clip and extractor it runs MMSA-FET's FeatureExtractionTool.run_single (ffmpeg -> wav ->
librosa.load) and robustmm's extract_clip with `decode: pyav` and `decode: mmsa-fet`, and prints per group:
max |difference| (and its column), the Pearson correlation over all values, the lowest per-column correlation,
and how many clips gave the same number of rows.

    python benchmarks/fet_agreement.py [--media ../shared/media] [--limit N]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

REPO = Path(__file__).resolve().parents[1]
# ../shared/media beside the repository, or beside the folder of worktrees
MEDIA = next(
    (path for path in (REPO.parent / "shared" / "media", REPO.parent.parent / "shared" / "media") if path.is_dir()),
    REPO.parent / "shared" / "media",
)
sys.path.insert(0, str(REPO / "tests"))

from test_features_extractors import speech_like, write_audio_clip  # noqa: E402

from robustmm.features.base import create_extractor  # noqa: E402
from robustmm.features.extract import extract_clip  # noqa: E402

# name -> (robustmm extractor config, MMSA-FET audio config)
EXTRACTORS = {
    "librosa sims (33)": (
        {"recipe": "sims"},
        {
            "tool": "librosa",
            "sample_rate": 22050,
            "n_fft": 2048,
            "hop_length": 512,
            "features": {"zero_crossing_rate": {}, "mfcc": {"n_mfcc": 20, "htk": True}, "chroma_cqt": {}},
        },
    ),
    "librosa mmsa-fet-default (70)": ({"recipe": "mmsa-fet-default"}, "librosa"),
    "opensmile LLD (25)": (
        {},
        {
            "tool": "opensmile",
            "sample_rate": 16000,
            "args": {"feature_set": "eGeMAPSv02", "feature_level": "LowLevelDescriptors", "start": None, "end": None},
        },
    ),
    "opensmile functionals (88)": ({"functionals": True}, "opensmile"),
}


def made_clips(folder: Path) -> dict[str, list[Path]]:
    left, right = speech_like(3.0, 44100, 0), speech_like(3.0, 44100, 1, f0=210.0)
    stereo = np.stack([left, 0.6 * right + 0.4 * left])
    return {
        "made, 16-bit PCM": [
            write_audio_clip(folder / "stereo_pcm.mkv", stereo, 44100, codec="pcm_s16le"),
            write_audio_clip(folder / "mono_pcm.mkv", speech_like(3.0, 22050, 2)[None], 22050, codec="pcm_s16le"),
        ],
        "made, AAC": [
            write_audio_clip(folder / "stereo_aac.mp4", stereo, 44100),
            write_audio_clip(folder / "mono_aac.mp4", speech_like(3.0, 22050, 2)[None], 22050),
        ],
    }


def media_clips(media: Path, limit: int) -> list[Path]:
    found = []
    for folder, pattern in (("crema-d", "*.flv"), ("grid", "*.mpg")):
        if (media / folder).is_dir():
            found += sorted((media / folder).glob(pattern))[:limit]
        else:
            print(f"skipped {media / folder}: absent")
    return found


def agreement(ours: list[np.ndarray], theirs: list[np.ndarray], names: list[str]) -> str:
    rows_equal = sum(len(a) == len(b) for a, b in zip(ours, theirs))
    pairs = [(a[:n], b[:n]) for a, b in zip(ours, theirs) if (n := min(len(a), len(b)))]
    a = np.concatenate([p[0] for p in pairs]).astype(np.float64)
    b = np.concatenate([p[1] for p in pairs]).astype(np.float64)
    diff = np.abs(a - b).max(axis=0)
    worst = int(diff.argmax())
    scale = b.std(axis=0)
    relative = np.max(np.where(scale > 0, diff / np.where(scale > 0, scale, 1), 0))
    varied = [c for c in range(a.shape[1]) if len(a) > 2 and a[:, c].std() > 0 and b[:, c].std() > 0]
    column_corr = min((np.corrcoef(a[:, c], b[:, c])[0, 1] for c in varied), default=float("nan"))
    overall = np.corrcoef(a.reshape(-1), b.reshape(-1))[0, 1] if a.size > 1 else float("nan")
    return (
        f"max|d| {diff.max():.3g} ({names[worst]}), max|d|/column sd {relative:.3g}, corr {overall:.7f}, min column corr {column_corr:.5f}, "
        f"same rows {rows_equal}/{len(ours)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--media", type=Path, default=MEDIA)
    parser.add_argument("--limit", type=int, default=20, help="clips per media folder")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    threadpool_limits(limits=1, user_api="blas")
    from MSA_FET import FeatureExtractionTool

    logging.getLogger("FET-Single").disabled = True
    with tempfile.TemporaryDirectory() as tmp:
        groups = {**made_clips(Path(tmp)), "../shared/media": media_clips(args.media, args.limit)}
        print(
            "MMSA-FET 0.4.1 vs robustmm; clips: "
            + ", ".join(f"{group} {len(clips)}" for group, clips in groups.items())
        )
        for title, (config, upstream) in EXTRACTORS.items():
            if isinstance(upstream, str):  # the package's own example config
                tool = FeatureExtractionTool(upstream, tmp_dir=Path(tmp) / "fet", log_dir=Path(tmp) / "log", verbose=0)
            else:
                tool = FeatureExtractionTool(
                    {"audio": upstream}, tmp_dir=Path(tmp) / "fet", log_dir=Path(tmp) / "log", verbose=0
                )
            name = "librosa" if title.startswith("librosa") else "opensmile"
            for group, clips in groups.items():
                if not clips:
                    continue
                theirs = [np.asarray(tool.run_single(clip)["audio"], np.float32) for clip in clips]
                for decode in ("pyav", "mmsa-fet"):
                    extractor = create_extractor(name, {**config, "decode": decode})
                    extractor.load()
                    ours = [extract_clip(clip, {0: extractor})[0][0].arrays["features"] for clip in clips]
                    print(f"{title:30s} {group:17s} {decode:8s}: {agreement(ours, theirs, extractor.feature_names)}")


if __name__ == "__main__":
    main()
