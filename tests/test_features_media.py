"""Optional: real talking-face clips of ../shared/media (skipped when the folder is absent)."""

from pathlib import Path

import pytest

from robustmm.features.extract import extract, read_features

REPO = Path(__file__).resolve().parents[1]
# ../shared/media beside the repository (or beside the folder of worktrees)
MEDIA = next(
    (path for path in (REPO.parent / "shared" / "media", REPO.parent.parent / "shared" / "media") if path.is_dir()),
    None,
)
pytestmark = pytest.mark.skipif(MEDIA is None, reason="../shared/media absent")


def test_real_flv_and_mpg_clips_give_faces_and_audio(tmp_path):
    clips = [MEDIA / "crema-d" / "1001_DFA_HAP_XX.flv", MEDIA / "grid" / "bbaf2n.mpg"]
    rows = ["video_id,clip_id,text,label,mode"]
    for clip in clips:
        link = tmp_path / "data" / "Raw" / clip.parent.name / clip.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(clip)
        rows.append(f"{clip.parent.name},{clip.stem},some words,0.5,train")
    (tmp_path / "data" / "label.csv").write_text("\n".join(rows) + "\n")
    settings = {"audio": ("opensmile", {}), "vision": ("mediapipe", {"fps": 5})}
    reports = extract(
        tmp_path / "data",
        settings,
        {m: tmp_path / f"{m}.pkl" for m in settings},
        tmp_path / "cache",
        workers=1,
        progress=False,
    )
    assert reports["audio"]["failed"] == reports["vision"]["failed"] == 0
    assert reports["vision"]["face_detected_share"] >= 0.95
    audio = read_features(tmp_path / "audio.pkl")
    seconds = [quality["seconds"] for quality in reports["audio"]["quality"].values()]
    for features, duration in zip(audio["features"], seconds):
        assert features.shape[1] == 25 and abs(len(features) - 100 * duration) <= 5  # 100 Hz low-level descriptors
    vision = read_features(tmp_path / "vision.pkl")
    assert [len(features) for features in vision["features"]] == [
        q["detected"] for q in reports["vision"]["quality"].values()
    ]
