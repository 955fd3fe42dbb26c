"""Extraction of a dataset end to end: failure report, cache (rerun, resume after kill -9, new clip, changed
config), parallel equals serial, assemble (lengths from params, byte-identical), the CLI."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from test_features_extractors import BLANK, FACE, make_clip

from robustmm import data
from robustmm.cli import main
from robustmm.features import extract as extract_module
from robustmm.features.assemble import assemble
from robustmm.features.extract import extract, read_features

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {"text": ("bert", {"max_length": 16}), "audio": ("mfcc", {}), "vision": ("mediapipe", {"fps": 5})}
MEDIA = {modality: SETTINGS[modality] for modality in ("audio", "vision")}
CLIPS = [  # video_id, clip_id, mode, label, how the clip is made
    ("a", "1", "train", 1.5, dict(tone=220.0)),
    ("a", "2", "train", -0.5, dict(tone=330.0, frames=(FACE,) * 4)),
    ("b", "1", "valid", 0.0, dict(audio_seconds=None)),
    ("b", "2", "test", 2.0, dict(frames=(BLANK,) * 5)),
    ("c", "1", "test", -2.0, "corrupt"),
    ("c", "2", "train", 0.5, "empty"),
    ("d", "1", "valid", 1.0, dict(frames=(FACE, BLANK, FACE, BLANK, FACE), tone=440.0)),
]


def add_clip(root: Path, video_id: str, clip_id: str, how) -> None:
    path = root / "Raw" / video_id / f"{clip_id}.mp4"
    path.parent.mkdir(parents=True, exist_ok=True)
    if how == "corrupt":
        path.write_bytes(np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    elif how == "empty":
        path.touch()
    else:
        make_clip(path, **how)


def write_labels(root: Path, rows) -> None:
    lines = ["video_id,clip_id,text,label,mode"]
    lines += [f"{v},{c},clip {v} {c} says something,{label},{mode}" for v, c, mode, label, _ in rows]
    (root / "label.csv").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dataset")
    for video_id, clip_id, _, _, how in CLIPS:
        add_clip(root, video_id, clip_id, how)
    write_labels(root, CLIPS)
    return root


def outputs_in(folder: Path, modalities) -> dict[str, Path]:
    return {modality: folder / f"{modality}.pkl" for modality in modalities}


@pytest.fixture(scope="module")
def extracted(dataset, tmp_path_factory):
    folder = tmp_path_factory.mktemp("extracted")
    reports = extract(
        dataset,
        SETTINGS,
        outputs_in(folder / "out", SETTINGS),
        folder / "cache",
        workers=1,
        max_failure_share=1.0,
        progress=False,
    )
    return folder / "out", folder / "cache", reports


@pytest.fixture
def extracted_clips(monkeypatch):
    """Records (clip file, extractor names) of every clip actually extracted in this process."""
    calls = []
    real = extract_module.extract_clip

    def spy(path, extractors):
        calls.append((f"{path.parent.name}/{path.name}", sorted(e.name for e in extractors.values())))
        return real(path, extractors)

    monkeypatch.setattr(extract_module, "extract_clip", spy)
    return calls


def test_failures_keep_their_rows_and_are_reported(extracted):
    out, _, reports = extracted
    audio_failures = {f["id"]: f["reason"] for f in reports["audio"]["failures"]}
    assert audio_failures["b$_$1"] == "no audio stream"
    assert audio_failures["c$_$1"].startswith("cannot open") and audio_failures["c$_$2"].startswith("cannot open")
    assert len(audio_failures) == 3
    vision_failures = {f["id"]: f["reason"] for f in reports["vision"]["failures"]}
    assert vision_failures == {
        "b$_$2": "no face in any of 5 sampled frames",
        "c$_$1": audio_failures["c$_$1"],
        "c$_$2": audio_failures["c$_$2"],
    }
    assert reports["text"]["failures"] == []
    assert reports["vision"]["face_detected_share_per_clip"]["d$_$1"] == 0.6
    assert json.loads((out / "vision.report.json").read_text()) == reports["vision"]
    audio = read_features(out / "audio.pkl")
    assert audio["ids"] == sorted(clip_id for clip_id in audio["ids"]) and len(audio["ids"]) == 7
    assert audio["features"][audio["ids"].index("b$_$1")].shape == (0, 39)
    assert audio["extractor"]["name"] == "mfcc" and audio["extractor"]["version"] == 3


def test_assemble_takes_lengths_from_params_and_is_byte_identical(dataset, extracted, tmp_path):
    out, _, _ = extracted
    first = assemble(
        dataset, out / "text.pkl", out / "audio.pkl", out / "vision.pkl", tmp_path / "one.pkl", (16, 120, 4)
    )
    assemble(dataset, out / "text.pkl", out / "audio.pkl", out / "vision.pkl", tmp_path / "two.pkl", (16, 120, 4))
    assert (tmp_path / "one.pkl").read_bytes() == (tmp_path / "two.pkl").read_bytes()
    loaded = data.load(tmp_path / "one.pkl")
    assert data.validate(loaded) == []
    train, valid, test = (loaded[split] for split in data.SPLITS)
    assert train["id"].tolist() == ["a$_$1", "a$_$2", "c$_$2"] and test["id"].tolist() == ["b$_$2", "c$_$1"]
    assert (
        train["audio"].shape == (3, 120, 39)
        and train["vision"].shape == (3, 4, 58)
        and train["text"].shape == (3, 16, 384)
    )
    assert train["regression_labels"].tolist() == [1.5, -0.5, 0.5]
    assert (
        all(100 <= length <= 106 for length in train["audio_lengths"][:2]) and train["audio_lengths"][2] == 0
    )  # 1 s at 100 Hz
    assert train["vision_lengths"].tolist() == [4, 4, 0]  # 5 faces truncated to 4; 4 faces; empty file
    assert (
        valid["id"].tolist() == ["b$_$1", "d$_$1"]
        and valid["audio_lengths"][0] == 0
        and valid["vision_lengths"][1] == 3
    )
    assert not train["audio"][2].any() and not train["vision"][0, 4:].any()
    meta = loaded["meta"]
    assert meta["lengths"] == {"text": 16, "audio": 120, "vision": 4}
    assert meta["extractors"]["vision"]["config"]["fps"] == 5 and meta["extractors"]["audio"]["version"] == 3
    assert (
        meta["feature_names"]["vision"][:2] == ["_neutral", "browDownLeft"]
        and len(meta["feature_names"]["audio"]) == 39
    )
    assert {(f["id"], f["modality"]) for f in meta["failures"]} >= {("b$_$1", "audio"), ("b$_$2", "vision")}
    assert meta["truncation"]["vision"] == {
        "unit": "frames",
        "length": 4,
        "clips": 2,
        "lost": 2,
        "most": 1,
        "per_clip": {"a$_$1": 1, "b$_$1": 1},
    }
    assert meta["truncation"]["audio"]["clips"] == 0 and meta["truncation"]["text"]["clips"] == 0
    assert first["train"]["id"].tolist() == train["id"].tolist()


def test_assemble_refuses_a_text_length_that_was_not_extracted(dataset, extracted, tmp_path):
    out, _, _ = extracted
    with pytest.raises(ValueError, match="extract text with max_length 20"):
        assemble(dataset, out / "text.pkl", out / "audio.pkl", out / "vision.pkl", tmp_path / "x.pkl", (20, 120, 4))


def test_rerun_reads_only_the_cache(dataset, extracted, extracted_clips, tmp_path):
    out, cache, _ = extracted
    extract(dataset, SETTINGS, outputs_in(tmp_path, SETTINGS), cache, workers=1, max_failure_share=1.0, progress=False)
    assert extracted_clips == []
    for modality in SETTINGS:
        assert (tmp_path / f"{modality}.pkl").read_bytes() == (out / f"{modality}.pkl").read_bytes()


def test_a_new_clip_costs_only_itself_and_a_changed_config_only_its_extractor(
    dataset, extracted, extracted_clips, tmp_path
):
    _, cache, _ = extracted
    grown = tmp_path / "grown"
    shutil.copytree(dataset, grown)
    add_clip(grown, "e", "1", dict(tone=500.0))
    write_labels(grown, CLIPS + [("e", "1", "test", 0.0, None)])
    copied_cache = tmp_path / "cache"
    shutil.copytree(cache, copied_cache)
    extract(
        grown,
        MEDIA,
        outputs_in(tmp_path / "out", MEDIA),
        copied_cache,
        workers=1,
        max_failure_share=1.0,
        progress=False,
    )
    assert extracted_clips == [("e/1.mp4", ["mediapipe", "mfcc"])]

    extracted_clips.clear()
    changed = {"audio": MEDIA["audio"], "vision": ("mediapipe", {"fps": 2})}
    extract(
        grown,
        changed,
        outputs_in(tmp_path / "out2", MEDIA),
        copied_cache,
        workers=1,
        max_failure_share=1.0,
        progress=False,
    )
    assert len(extracted_clips) == 8 and {
        names for _, names in map(lambda call: (call[0], tuple(call[1])), extracted_clips)
    } == {("mediapipe",)}
    assert (tmp_path / "out2" / "audio.pkl").read_bytes() == (tmp_path / "out" / "audio.pkl").read_bytes()


def test_the_stage_fails_past_the_allowed_failure_share(dataset, extracted, tmp_path):
    _, cache, _ = extracted
    with pytest.raises(RuntimeError) as caught:
        extract(dataset, MEDIA, outputs_in(tmp_path, MEDIA), cache, workers=1, max_failure_share=0.4, progress=False)
    message = str(caught.value)
    assert "audio (mfcc): 3 of 7 clips failed (42.9%, more than max_failure_share 40.0%)" in message
    assert "2 x cannot open as a video file: Invalid data found when processing input; 1 x no audio stream" in message
    assert "vision (mediapipe): 3 of 7 clips failed" in message and "1 x no face in any of 5 sampled frames" in message
    assert "e.g. b$_$1, c$_$1, c$_$2" in message and str(tmp_path / "audio.report.json") in message
    assert not (tmp_path / "vision.pkl").exists() and not (tmp_path / "audio.pkl").exists()
    assert (tmp_path / "audio.report.json").is_file() and (tmp_path / "vision.report.json").is_file()


def test_parallel_equals_serial(dataset, extracted, tmp_path):
    out, _, _ = extracted
    extract(
        dataset,
        MEDIA,
        outputs_in(tmp_path, MEDIA),
        tmp_path / "cache",
        workers=2,
        max_failure_share=1.0,
        progress=False,
    )
    for modality in MEDIA:
        assert (tmp_path / f"{modality}.pkl").read_bytes() == (out / f"{modality}.pkl").read_bytes()


def test_resume_after_kill_gives_identical_bytes(dataset, extracted, extracted_clips, tmp_path):
    out, _, _ = extracted
    cache = tmp_path / "cache"
    # The child is killed with SIGKILL while writing its third cache entry (clip 2), between temp file and rename.
    script = textwrap.dedent(f"""
        import os, signal
        from robustmm.features.extract import extract
        replace, calls = os.replace, []
        def dying_replace(source, target):
            if str(target).endswith(".npz"):  # only cache entries (numba, for one, renames its own cache files)
                calls.append(target)
            if len(calls) == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            replace(source, target)
        os.replace = dying_replace
        extract({str(dataset)!r}, {MEDIA!r}, {{m: {str(tmp_path)!r} + f"/{{m}}.pkl" for m in {list(MEDIA)!r}}},
                {str(cache)!r}, workers=1, max_failure_share=1.0, progress=False)
    """)
    child = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -9, child.stderr[-2000:]
    assert len(list(cache.rglob("*.npz"))) == 2 and len(list(cache.rglob("*.tmp"))) == 1
    assert not (tmp_path / "audio.pkl").exists()
    extract(dataset, MEDIA, outputs_in(tmp_path, MEDIA), cache, workers=1, max_failure_share=1.0, progress=False)
    assert [clip for clip, _ in extracted_clips] == ["a/2.mp4", "b/1.mp4", "b/2.mp4", "c/1.mp4", "c/2.mp4", "d/1.mp4"]
    for modality in MEDIA:
        assert (tmp_path / f"{modality}.pkl").read_bytes() == (out / f"{modality}.pkl").read_bytes()


def test_cli_extract_and_assemble_from_a_config_section(dataset, extracted, tmp_path, capsys):
    _, cache, _ = extracted
    config = tmp_path / "params.yaml"
    config.write_text(
        textwrap.dedent(f"""
        demo:
          extract:
            dataset: {dataset}
            cache_dir: {cache}
            max_failure_share: 1.0
            text: {{extractor: bert, max_length: 16}}
            audio: mfcc
          assemble:
            dataset: {dataset}
            lengths: {{text: 16, audio: 120, vision: 4}}
    """)
    )
    features = tmp_path / "features"
    assert (
        main(
            [
                "extract",
                "--config",
                str(config),
                "--section",
                "demo.extract",
                "--vision",
                "mediapipe",
                "--fps",
                "5",
                "--output-dir",
                str(features),
                "--workers",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    assert "vision (mediapipe): 7 clips, 3 failed, faces found in 70.8% of sampled frames" in capsys.readouterr().out
    assert (
        main(
            [
                "assemble",
                "--config",
                str(config),
                "--section",
                "demo.assemble",
                "--features-dir",
                str(features),
                "--output",
                str(tmp_path / "demo.pkl"),
            ]
        )
        == 0
    )
    assert data.validate(data.load(tmp_path / "demo.pkl")) == []
    assert main(["inspect", str(tmp_path / "demo.pkl")]) == 0
    assert main(["extract", "--dataset", str(tmp_path / "absent"), "--audio", "mfcc"]) == 2
    assert "label.csv: file not found" in capsys.readouterr().err
    assert main(["extract", "--dataset", str(dataset), "--audio", "mfcc", "--option", "audio.n_mels=3"]) == 2
    assert "--option audio.n_mels=3: unknown key for extractor 'mfcc'" in capsys.readouterr().err


def test_a_problem_that_is_not_the_clips_stops_the_run_naming_the_clip(dataset, tmp_path, monkeypatch):
    from robustmm.features.audio import MfccExtractor

    def broken(self, samples):
        raise TypeError("bug in an extractor")

    monkeypatch.setattr(MfccExtractor, "extract", broken)
    monkeypatch.setattr(MfccExtractor, "load", lambda self: None)  # its warm-up would call extract
    with pytest.raises(RuntimeError, match=r"Raw/a/1.mp4: TypeError: bug in an extractor"):
        extract(
            dataset,
            {"audio": ("mfcc", {})},
            {"audio": tmp_path / "audio.pkl"},
            tmp_path / "cache",
            workers=1,
            progress=False,
        )
    assert not (tmp_path / "audio.pkl").exists() and not list((tmp_path / "cache").rglob("*.npz"))
