"""Nothing lost, nothing silently wrong in extraction: crashed workers, the numba cache, damaged cache entries,
rotated videos, truncation, stale transcripts, bad settings."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import crashing_extractor  # noqa: F401 - registers the test-only extractor `test-crashing`
import pytest

from robustmm.cli import main
from robustmm.features.base import create_extractor
from robustmm.features.extract import extract, read_features

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("name", "config", "message"), [
    ("mediapipe", {"fps": -1}, "extractor 'mediapipe': config fps = -1 must be greater than 0"),
    ("mediapipe", {"fps": 0}, "fps = 0 must be greater than 0"),
    ("mediapipe", {"fps": "ten"}, "fps = 'ten' must be a finite number"),
    ("mediapipe", {"min_detection_confidence": 1.5}, "min_detection_confidence = 1.5 must be within \\[0, 1\\]"),
    ("openface", {"feature_set": "au"}, "feature_set = 'au' must be one of all, au_pose"),
    ("openface", {"fps": -2.0}, "fps = -2.0 must be greater than 0"),
    ("librosa", {"sample_rate": 0}, "sample_rate = 0 must be greater than 0"),
    ("librosa", {"hop_length": 12.5}, "hop_length = 12.5 must be an integer"),
    ("mfcc", {"delta_orders": [1, "two"]}, "delta_orders = \\[1, 'two'\\] must be a list of int values"),
    ("mfcc", {"hop_seconds": -0.01}, "hop_seconds = -0.01 must be greater than 0"),
    ("opensmile", {"sample_rate": -16000}, "sample_rate = -16000 must be greater than 0"),
    ("bert", {"max_length": 0}, "max_length = 0 must be greater than 0"),
    ("bert", {"batch_size": True}, "batch_size = True must be an integer"),
])
def test_extractor_configs_are_checked_with_key_value_and_what_is_allowed(name, config, message):
    with pytest.raises(ValueError, match=message):
        create_extractor(name, config)


def test_the_cli_refuses_a_negative_fps_before_any_work(tmp_path, capsys):
    dataset = tmp_path / "absent"  # not even read: the settings are checked first
    assert main(["extract", "--dataset", str(dataset), "--vision", "mediapipe", "--fps", "-5",
                 "--cache-dir", str(tmp_path / "cache"), "--output-dir", str(tmp_path / "out")]) == 2
    assert "extractor 'mediapipe': config fps = -5.0 must be greater than 0" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()


def write_byte_clips(root: Path, count: int) -> Path:
    """A dataset of `count` clips whose files are plain bytes (the test extractor reads only their size)."""
    lines = ["video_id,clip_id,text,label,mode"]
    for index in range(1, count + 1):
        path = root / "Raw" / "v" / f"{index}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * index)
        lines.append(f"v,{index},words,0.5,train")
    (root / "label.csv").write_text("\n".join(lines) + "\n")
    return root


def extract_bytes(root: Path, folder: Path, config: dict, workers: int = 2) -> dict:
    return extract(root, {"audio": ("test-crashing", config)}, {"audio": folder / "audio.pkl"}, folder / "cache",
                   workers=workers, max_failure_share=1.0, progress=False)["audio"]


def test_a_clip_whose_worker_keeps_dying_is_reported_failed_and_the_others_go_on(tmp_path, capsys):
    root = write_byte_clips(tmp_path / "d", 4)
    report = extract_bytes(root, tmp_path, {"crash_clip": "2", "how": "segfault"})
    assert [failure["id"] for failure in report["failures"]] == ["v$_$2"]
    reason = report["failures"][0]["reason"]
    assert "killed by SIGSEGV" in reason and "also when retried in a fresh worker" in reason
    assert json.loads((tmp_path / "audio.report.json").read_text())["failures"][0]["reason"] == reason
    features = read_features(tmp_path / "audio.pkl")
    assert [rows.tolist() for rows in features["features"]] == [[[1.0]], [], [[3.0]], [[4.0]]]
    err = capsys.readouterr().err
    assert "Raw/v/2.mp4: the worker process extracting it died (killed by SIGSEGV); retrying it in a fresh worker" in err
    assert "reported as failed (not cached, a rerun tries again)" in err


def test_a_clip_whose_worker_died_once_is_extracted_in_a_fresh_worker(tmp_path, capsys):
    root = write_byte_clips(tmp_path / "d", 3)
    (tmp_path / "markers").mkdir()
    report = extract_bytes(root, tmp_path, {"crash_clip": "3", "how": "exit", "marker_dir": str(tmp_path / "markers")})
    assert report["failures"] == []
    assert [rows.tolist() for rows in read_features(tmp_path / "audio.pkl")["features"]] == [[[1.0]], [[2.0]], [[3.0]]]
    assert "died (exit code 3); retrying it in a fresh worker" in capsys.readouterr().err
    assert len(list((tmp_path / "markers").iterdir())) == 1


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status  # a zombie has exited, whoever reaps it


def _wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_die_with_a_killed_stage(tmp_path):
    root = write_byte_clips(tmp_path / "d", 2)
    markers = tmp_path / "markers"
    markers.mkdir()
    config = {"crash_clip": "1", "how": "hang", "marker_dir": str(markers)}
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import crashing_extractor
        from robustmm.features.extract import extract
        if __name__ == "__main__":
            extract({str(root)!r}, {{"audio": ("test-crashing", {config!r})}}, {{"audio": {str(tmp_path / "a.pkl")!r}}},
                    {str(tmp_path / "cache")!r}, workers=2, progress=False)
    """)
    (tmp_path / "stage.py").write_text(script)
    stage = subprocess.Popen([sys.executable, str(tmp_path / "stage.py")], env={**os.environ, "PYTHONPATH": str(REPO)},
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    worker = None
    try:
        assert _wait_for(lambda: any(markers.iterdir()) or stage.poll() is not None, 120), "no worker reached the clip"
        assert stage.poll() is None, stage.stderr.read().decode()[-2000:]
        worker = int(next(markers.iterdir()).suffix[1:])
        assert _alive(worker)
        stage.kill()
        stage.wait()
        assert _wait_for(lambda: not _alive(worker), 30), f"worker {worker} outlived the killed stage"
    finally:
        stage.kill()
        if worker is not None and _alive(worker):
            os.kill(worker, signal.SIGKILL)
