"""Nothing lost, nothing silently wrong in extraction: crashed workers, the numba cache, damaged cache entries,
rotated videos, truncation, stale transcripts, bad settings."""

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import av
import crashing_extractor  # noqa: F401 - registers the test-only extractor `test-crashing`
import numpy as np
import pytest
from crashing_extractor import CrashingExtractor
from test_features_extractors import BLANK, FACE, make_clip

from robustmm import data
from robustmm.cli import main
from robustmm.data import FormatError
from robustmm.features.assemble import assemble
from robustmm.features.base import EXTRACTORS, create_extractor, register
from robustmm.features.cache import FeatureCache, file_hash, text_hash, use_private_jit_cache
from robustmm.features.dataset import read_dataset
from robustmm.features.decode import decode_clip
from robustmm.features.extract import extract, extract_clip, read_features
from robustmm.features.video import HEAD_POSE_NAMES

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("name", "config", "message"),
    [
        ("mediapipe", {"fps": -1}, "extractor 'mediapipe': config fps: -1 is not allowed \\(a number > 0\\)"),
        ("mediapipe", {"fps": 0}, "fps: 0 is not allowed \\(a number > 0\\)"),
        ("mediapipe", {"fps": "ten"}, "fps: 'ten' is not allowed \\(a number\\)"),
        (
            "mediapipe",
            {"min_detection_confidence": 1.5},
            "min_detection_confidence: 1.5 is not allowed \\(a number in \\[0, 1\\]\\)",
        ),
        ("openface", {"feature_set": "au"}, "feature_set: 'au' is not allowed \\(one of all, au_pose"),
        ("openface", {"fps": -2.0}, "fps: -2.0 is not allowed \\(a number > 0\\)"),
        ("librosa", {"sample_rate": 0}, "sample_rate: 0 is not allowed \\(a number > 0\\)"),
        ("librosa", {"hop_length": 12.5}, "hop_length: 12.5 is not allowed \\(an integer, or null\\)"),
        ("mfcc", {"delta_orders": [1, "two"]}, "delta_orders.*'two' is not allowed \\(.*an integer\\)"),
        ("mfcc", {"hop_seconds": -0.01}, "hop_seconds: -0.01 is not allowed \\(a number > 0\\)"),
        ("opensmile", {"sample_rate": -16000}, "sample_rate: -16000 is not allowed \\(a number > 0\\)"),
        ("bert", {"max_length": 0}, "max_length: 0 is not allowed \\(a number > 0\\)"),
        ("bert", {"batch_size": True}, "batch_size: true is not allowed \\(an integer\\)"),
    ],
)
def test_extractor_configs_are_checked_with_key_value_and_what_is_allowed(name, config, message):
    with pytest.raises(ValueError, match=message):
        create_extractor(name, config)


def test_the_cli_refuses_a_negative_fps_before_any_work(tmp_path, capsys):
    dataset = tmp_path / "absent"  # not even read: the settings are checked first
    assert (
        main(
            [
                "extract",
                "--dataset",
                str(dataset),
                "--vision",
                "mediapipe",
                "--fps",
                "-5",
                "--cache-dir",
                str(tmp_path / "cache"),
                "--output-dir",
                str(tmp_path / "out"),
            ]
        )
        == 2
    )
    assert "vision: fps: -5.0 is not allowed (a number > 0) (extractor 'mediapipe')" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()


@pytest.fixture
def crashing():
    """The test-only extractor `test-crashing`, registered while the test runs."""
    register(CrashingExtractor)
    yield
    del EXTRACTORS[CrashingExtractor.name]


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
    return extract(
        root,
        {"audio": ("test-crashing", config)},
        {"audio": folder / "audio.pkl"},
        folder / "cache",
        workers=workers,
        max_failure_share=1.0,
        progress=False,
    )["audio"]


def test_a_clip_whose_worker_keeps_dying_is_reported_failed_and_the_others_go_on(crashing, tmp_path, capsys):
    root = write_byte_clips(tmp_path / "d", 4)
    report = extract_bytes(root, tmp_path, {"crash_clip": "2", "how": "segfault"})
    assert [failure["id"] for failure in report["failures"]] == ["v$_$2"]
    reason = report["failures"][0]["reason"]
    assert "killed by SIGSEGV" in reason and "also when retried in a fresh worker" in reason
    assert json.loads((tmp_path / "audio.report.json").read_text())["failures"][0]["reason"] == reason
    features = read_features(tmp_path / "audio.pkl")
    assert [rows.tolist() for rows in features["features"]] == [[[1.0]], [], [[3.0]], [[4.0]]]
    err = capsys.readouterr().err
    assert (
        "Raw/v/2.mp4: the worker process extracting it died (killed by SIGSEGV); retrying it in a fresh worker" in err
    )
    assert "reported as failed (not cached, a rerun tries again)" in err


def test_a_clip_whose_worker_died_once_is_extracted_in_a_fresh_worker(crashing, tmp_path, capsys):
    root = write_byte_clips(tmp_path / "d", 3)
    markers = tmp_path / "markers"
    markers.mkdir()
    # Clip 3 dies once the other worker has nothing left to do: the retry must still reach a worker.
    config = {"crash_clip": "3", "how": "exit", "marker_dir": str(markers), "after_clip": "2"}
    report = extract_bytes(root, tmp_path, config)
    assert report["failures"] == []
    assert [rows.tolist() for rows in read_features(tmp_path / "audio.pkl")["features"]] == [[[1.0]], [[2.0]], [[3.0]]]
    assert "died (exit code 3); retrying it in a fresh worker" in capsys.readouterr().err
    assert len(list(markers.glob("3.*"))) == 1


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
def test_workers_die_with_a_killed_stage(crashing, tmp_path):
    root = write_byte_clips(tmp_path / "d", 2)
    markers = tmp_path / "markers"
    markers.mkdir()
    config = {"crash_clip": "1", "how": "hang", "marker_dir": str(markers)}
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import crashing_extractor
        from robustmm.features.base import register
        from robustmm.features.extract import extract
        register(crashing_extractor.CrashingExtractor)
        if __name__ == "__main__":
            extract({str(root)!r}, {{"audio": ("test-crashing", {config!r})}}, {{"audio": {str(tmp_path / "a.pkl")!r}}},
                    {str(tmp_path / "cache")!r}, workers=2, progress=False)
    """)
    (tmp_path / "stage.py").write_text(script)
    stage = subprocess.Popen(
        [sys.executable, str(tmp_path / "stage.py")],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    worker = None
    try:
        assert _wait_for(lambda: any(markers.glob("1.*")) or stage.poll() is not None, 120), (
            "no worker reached the clip"
        )
        assert stage.poll() is None, stage.stderr.read().decode()[-2000:]
        worker = int(next(markers.glob("1.*")).suffix[1:])
        assert _alive(worker)
        stage.kill()
        stage.wait()
        assert _wait_for(lambda: not _alive(worker), 30), f"worker {worker} outlived the killed stage"
    finally:
        stage.kill()
        if worker is not None and _alive(worker):
            os.kill(worker, signal.SIGKILL)


def test_the_robustmm_command_imports_no_command_module_until_it_parses():
    # A spawned worker imports the main script again: for `robustmm`, this module.
    probe = "import sys, robustmm.cli; print(sorted(m for m in ('torch', 'sklearn', 'pandas', 'numpy') if m in sys.modules))"
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO)
    assert run.stdout.strip() == "[]"


def test_workers_of_the_robustmm_command_import_only_what_their_extractors_need(tmp_path):
    root = write_byte_clips(tmp_path / "d", 2)
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from robustmm.cli import main  # what the `robustmm` script runs, in the stage and again in each worker
        import crashing_extractor
        from robustmm.features.base import register
        register(crashing_extractor.ModuleProbeExtractor)
        if __name__ == "__main__":
            sys.exit(main(["extract", "--dataset", {str(root)!r}, "--audio", "test-module-probe", "--workers", "2",
                           "--output-dir", {str(tmp_path / "out")!r}, "--cache-dir", {str(tmp_path / "cache")!r},
                           "--no-progress"]))
    """)
    (tmp_path / "stage.py").write_text(script)
    run = subprocess.run(
        [sys.executable, str(tmp_path / "stage.py")],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    features = read_features(tmp_path / "out" / "audio.pkl")
    imported = {
        name
        for rows in features["features"]
        for name, flag in zip(features["extractor"]["feature_names"], rows[0])
        if flag
    }
    assert len(features["features"]) == 2 and imported == set()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fcntl lock")
def test_workers_extract_the_other_modalities_while_another_process_compiles_the_numba_kernels(tmp_path, monkeypatch):
    # On a fresh machine one worker compiles librosa's kernels (25 s) holding the numba cache's lock; the others
    # waited for it with their cores idle. They now take the clips' vision meanwhile, and the audio afterwards.
    import fcntl
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba"))  # the workers inherit it
    (tmp_path / "numba").mkdir()
    for extractor in (crashing_extractor.CompiledSizeExtractor, crashing_extractor.VisionSizeExtractor):
        monkeypatch.setitem(EXTRACTORS, extractor.name, extractor)  # registered while the test runs
    root, folder = write_byte_clips(tmp_path / "d", 4), tmp_path / "out"
    settings = {"audio": ("test-compiled-size", {}), "vision": ("test-vision-size", {})}
    outputs = {modality: folder / f"{modality}.pkl" for modality in settings}
    cached = lambda name: len(list((folder / "cache" / name).rglob("*.npz")))  # noqa: E731
    thread = ThreadPoolExecutor(1)
    lock = open(tmp_path / "numba" / "robustmm.lock", "a")
    fcntl.flock(lock, fcntl.LOCK_EX)  # another process compiling the kernels
    try:
        run = thread.submit(
            extract, root, settings, outputs, folder / "cache", workers=2, max_failure_share=0.0, progress=False
        )
        deadline = time.monotonic() + 60
        while cached("test-vision-size") < 4 and not run.done() and time.monotonic() < deadline:
            time.sleep(0.1)
        done_meanwhile = (cached("test-vision-size"), cached("test-compiled-size"))
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()
    reports = run.result(timeout=120)
    thread.shutdown()
    assert done_meanwhile == (4, 0)
    assert all(report["failures"] == [] for report in reports.values())
    for output in outputs.values():
        assert [rows.tolist() for rows in read_features(output)["features"]] == [[[1.0]], [[2.0]], [[3.0]], [[4.0]]]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fcntl lock")
def test_librosa_loads_without_the_numba_cache_lock_once_it_has_loaded_into_the_cache(tmp_path):
    script = textwrap.dedent("""
        from robustmm.features.base import create_extractor
        from robustmm.features.cache import jit_cache_marker
        from robustmm.features.extract import _load_extractors

        extractors = [create_extractor("librosa")]
        _load_extractors(extractors)
        print(jit_cache_marker(extractors))
    """)
    load = [sys.executable, "-c", script]
    first = subprocess.run(load, capture_output=True, text=True, cwd=REPO, timeout=600, check=True)
    marker = Path(first.stdout.strip().splitlines()[-1])
    assert marker.is_file() and marker.parent == use_private_jit_cache()
    import fcntl

    with open(marker.parent / "robustmm.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process loading: a load that waited for the lock never ends
        try:
            second = subprocess.run(load, capture_output=True, text=True, cwd=REPO, timeout=120)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    assert second.returncode == 0 and second.stdout.strip().splitlines()[-1] == str(marker)


def test_a_process_whose_librosa_kernels_came_from_another_cache_leaves_no_marker(tmp_path):
    # A process that ran librosa's kernels before the private folder was set (a test process, say) keeps them from
    # the cache numba used then, and writes nothing into the folder: a marker from its load would tell later
    # processes that the folder holds kernels it does not (they then compiled them into it side by side, outside
    # the lock, and every load after that segfaulted).
    script = textwrap.dedent("""
        import os
        from robustmm.features.base import create_extractor
        from robustmm.features.cache import jit_cache_marker, librosa_caches_privately
        from robustmm.features.extract import _load_extractors

        create_extractor("librosa").load()
        os.environ["NUMBA_CACHE_DIR"] = os.environ.pop("PRIVATE_FOLDER")
        extractors = [create_extractor("librosa")]
        _load_extractors(extractors)
        print(librosa_caches_privately(), jit_cache_marker(extractors).is_file())
    """)
    private = tmp_path / "private"
    private.mkdir()
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba's own"), "PRIVATE_FOLDER": str(private)}
    loaded = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, env=env, timeout=600, check=True
    )
    assert loaded.stdout.strip().splitlines()[-1] == "False False"
    assert not list(private.rglob("*.nbi"))  # nothing was compiled into it


def test_two_workers_compile_librosa_into_a_fresh_numba_cache_without_crashing(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba"))  # the workers inherit it
    root = tmp_path / "d"
    lines = ["video_id,clip_id,text,label,mode"]
    for index, tone in enumerate((220.0, 330.0, 440.0), start=1):
        make_clip(root / "Raw" / "v" / f"{index}.mp4", frames=(BLANK,), fps=1, tone=tone)
        lines.append(f"v,{index},words,0.5,train")
    (root / "label.csv").write_text("\n".join(lines) + "\n")
    runs = []
    for run in ("one", "two"):
        folder = tmp_path / run
        report = extract(
            root,
            {"audio": ("librosa", {})},
            {"audio": folder / "audio.pkl"},
            folder / "cache",
            workers=2,
            progress=False,
        )["audio"]
        assert report["failures"] == []
        runs.append((folder / "audio.pkl").read_bytes())
    assert runs[0] == runs[1]
    assert list((tmp_path / "numba").rglob("*.nbi")) and (tmp_path / "numba" / "robustmm.lock").is_file()


def test_the_numba_cache_is_private_to_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = use_private_jit_cache()
    assert folder.parent == tmp_path / "robustmm" / "numba" and folder.is_dir()
    assert os.environ["NUMBA_CACHE_DIR"] == str(folder)
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    assert use_private_jit_cache() == tmp_path / "mine"  # the user's own setting wins


SETTINGS = {"text": ("bert", {"max_length": 16}), "audio": ("mfcc", {}), "vision": ("mediapipe", {"fps": 5})}


def write_face_clips(root: Path, rows) -> Path:
    lines = ["video_id,clip_id,text,label,mode"]
    for clip_id, text, tone in rows:
        if not (root / "Raw" / "v" / f"{clip_id}.mp4").exists():
            make_clip(root / "Raw" / "v" / f"{clip_id}.mp4", frames=(FACE,) * 3, tone=tone)
        lines.append(f"v,{clip_id},{text},0.5,train")
    (root / "label.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def face_dataset(tmp_path_factory):
    root = write_face_clips(tmp_path_factory.mktemp("faces"), [("1", "a fine day", 220.0), ("2", "a dull day", 330.0)])
    folder = tmp_path_factory.mktemp("first")
    extract(root, SETTINGS, {m: folder / f"{m}.pkl" for m in SETTINGS}, folder / "cache", workers=1, progress=False)
    return root, folder


def _damage(path: Path, how: str) -> None:
    content = path.read_bytes()
    if how == "truncated":
        path.write_bytes(content[: len(content) // 2])
    elif how == "garbage":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    else:  # a readable entry of the wrong shape (e.g. written by another version of an extractor)
        np.savez(
            path,
            info=np.array('{"failure": null, "quality": {}}'),
            features=np.zeros((2, 3), np.float32),
            text_bert=np.zeros((3, 4), np.int64),
            text=np.zeros((4, 5), np.float32),
        )


@pytest.mark.parametrize(
    ("modality", "how"),
    [
        ("audio", "truncated"),
        ("vision", "garbage"),
        ("text", "truncated"),
        ("text", "wrong shape"),
        ("vision", "wrong shape"),
    ],
)
def test_a_damaged_cache_entry_is_named_and_extracted_again(face_dataset, tmp_path, capsys, modality, how):
    root, first = face_dataset
    shutil.copytree(first / "cache", tmp_path / "cache")
    name, config = SETTINGS[modality]
    clip = read_dataset(root)[1]
    content = text_hash(clip.text) if modality == "text" else file_hash(clip.path)
    entry = FeatureCache(tmp_path / "cache").entry(content, create_extractor(name, config))
    assert entry.is_file()
    _damage(entry, how)
    extract(root, SETTINGS, {m: tmp_path / f"{m}.pkl" for m in SETTINGS}, tmp_path / "cache", workers=1, progress=False)
    err = capsys.readouterr().err
    assert f"warning: damaged cache entry {entry} ({modality} of clip v$_$2, {clip.path})" in err
    assert "extracting it again" in err
    for name in SETTINGS:
        assert (tmp_path / f"{name}.pkl").read_bytes() == (first / f"{name}.pkl").read_bytes()
    assert entry.read_bytes() == (first / "cache" / entry.relative_to(tmp_path / "cache")).read_bytes()


ONE = 1 << 16  # 16.16 fixed point of the mp4 matrix


def set_display_rotation(path: Path, degrees_clockwise: int) -> None:
    """Write the rotation into the mp4's track header matrix, as phones do. PyAV cannot: FFmpeg 8's mp4 muxer ignores
    the old `rotate` stream tag and PyAV has no API for stream side data, so the matrix bytes are set in place."""
    cos, sin = {90: (0, 1), 180: (-1, 0), 270: (0, -1)}[degrees_clockwise]
    content = bytearray(path.read_bytes())
    box = content.index(b"tkhd")  # the first track: the video stream in these clips
    version = content[box + 4]
    # version/flags 4, times and track id (8+8+4 or 4+4+4), reserved 4, duration (8 or 4), reserved 8, layer,
    # alternate group, volume, reserved 2 each, then the 3x3 matrix
    matrix = box + 4 + 4 + (8 + 8 + 4 if version == 1 else 4 + 4 + 4) + 4 + (8 if version == 1 else 4) + 8 + 8
    content[matrix : matrix + 36] = struct.pack(">9i", cos * ONE, sin * ONE, 0, -sin * ONE, cos * ONE, 0, 0, 0, 1 << 30)
    path.write_bytes(content)


PORTRAIT = np.ascontiguousarray(FACE[:, 16:112])  # 128 high, 96 wide: a turn shows in the shape


@pytest.fixture(scope="module")
def rotated_clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("rotated")
    upright = make_clip(root / "upright.mp4", frames=(PORTRAIT,) * 3)
    # A phone holding the camera sideways stores the picture turned a quarter counterclockwise and asks the player to
    # turn it 90 degrees clockwise.
    sideways = make_clip(root / "sideways.mp4", frames=(np.ascontiguousarray(np.rot90(PORTRAIT)),) * 3)
    set_display_rotation(sideways, 90)
    return upright, sideways


def test_decoding_turns_frames_upright_as_the_display_matrix_says(rotated_clips):
    upright, sideways = rotated_clips
    with av.open(str(sideways)) as container:
        assert next(container.decode(video=0)).rotation == -90  # FFmpeg reads the matrix: the test clip is a real one
    frames = {}
    for name, path in (("upright", upright), ("sideways", sideways)):
        decode_clip(path, video_fps=(5,), on_frame=lambda fps, t, rgb, name=name: frames.setdefault(name, rgb))
    assert frames["sideways"].shape == frames["upright"].shape == (128, 96, 3)
    difference = np.abs(frames["sideways"].astype(float) - frames["upright"].astype(float)).mean()
    assert difference < 8, difference  # the same picture up to coding noise (a wrong turn differs by about 60)


def test_a_rotated_clip_gives_the_pose_and_blendshapes_of_the_upright_one(rotated_clips):
    upright, sideways = rotated_clips
    extractor = create_extractor("mediapipe", {"fps": 5})
    extractor.load()
    try:
        features = {
            name: extract_clip(path, {0: extractor})[0][0].arrays["features"]
            for name, path in (("upright", upright), ("sideways", sideways))
        }
        unturned = extractor.frame_features(np.ascontiguousarray(np.rot90(PORTRAIT)))
    finally:
        extractor.close()
    assert features["upright"].shape == features["sideways"].shape == (3, 58)
    roll = HEAD_POSE_NAMES.index("pose_roll") + 52
    # Blendshapes follow coding noise (the decoded upright clip against its raw frames: up to 0.57, mean 0.07), so
    # their mean difference is compared: measured 0.010 turned upright, 0.071 left on its side.
    assert np.abs(features["sideways"][:, :52] - features["upright"][:, :52]).mean() < 0.03
    assert (
        np.abs(features["sideways"][:, 52:55] - features["upright"][:, 52:55]).max() < 0.05
    )  # pitch, yaw, roll (radians)
    assert abs(unturned[roll] - features["upright"][0, roll]) > 1.0  # ignoring the matrix: the face lies on its side


def test_assemble_refuses_text_features_of_an_edited_transcript(face_dataset, tmp_path):
    root, first = face_dataset
    edited = tmp_path / "d"
    shutil.copytree(root, edited)
    write_face_clips(edited, [("1", "a fine day", 220.0), ("2", "a brilliant day", 330.0)])
    media = {"audio": first / "audio.pkl", "vision": first / "vision.pkl"}
    with pytest.raises(
        FormatError,
        match=r"transcript of 1 clip\(s\) changed in .*label.csv since the text was "
        r"extracted \(v\$_\$2\): rerun extract text",
    ):
        assemble(edited, first / "text.pkl", output=tmp_path / "x.pkl", lengths=(16, 50, 3), **media)
    shutil.copytree(first / "cache", tmp_path / "cache")
    extract(edited, {"text": SETTINGS["text"]}, {"text": tmp_path / "text.pkl"}, tmp_path / "cache", progress=False)
    assembled = assemble(edited, tmp_path / "text.pkl", output=tmp_path / "x.pkl", lengths=(16, 50, 3), **media)
    assert assembled["train"]["raw_text"].tolist() == ["a fine day", "a brilliant day"]
    old = read_features(first / "text.pkl")["text_bert"]
    assert (assembled["train"]["text_bert"][0] == old[0]).all() and (assembled["train"]["text_bert"][1] != old[1]).any()


def test_truncation_is_counted_per_clip_summarised_and_printed(face_dataset, tmp_path, capsys):
    root, first = face_dataset
    long = tmp_path / "d"
    shutil.copytree(root, long)
    write_face_clips(long, [("1", "honestly " * 20 + "a fine day", 220.0), ("2", "a dull day", 330.0)])
    features = tmp_path / "features"
    shutil.copytree(first / "cache", tmp_path / "cache")
    extract(long, {"text": SETTINGS["text"]}, {"text": features / "text.pkl"}, tmp_path / "cache", progress=False)
    for modality in ("audio", "vision"):
        shutil.copy(first / f"{modality}.pkl", features / f"{modality}.pkl")
    assert (
        main(
            [
                "assemble",
                "--dataset",
                str(long),
                "--features-dir",
                str(features),
                "--lengths",
                "16",
                "50",
                "2",
                "--output",
                str(tmp_path / "x.pkl"),
            ]
        )
        == 0
    )
    truncation = data.load(tmp_path / "x.pkl")["meta"]["truncation"]
    assert truncation["text"] == {
        "unit": "tokens",
        "length": 16,
        "clips": 1,
        "lost": 9,
        "most": 9,
        "per_clip": {"v$_$1": 9},
    }
    assert truncation["vision"] == {
        "unit": "frames",
        "length": 2,
        "clips": 2,
        "lost": 2,
        "most": 1,
        "per_clip": {"v$_$1": 1, "v$_$2": 1},
    }
    audio = read_features(first / "audio.pkl")["features"]
    assert truncation["audio"]["per_clip"] == {"v$_$1": len(audio[0]) - 50, "v$_$2": len(audio[1]) - 50}
    out = capsys.readouterr().out
    assert "text: 1 clip(s) cut to 16 tokens, 9 tokens lost in all, at most 9 (v$_$1)" in out
    assert "vision: 2 clip(s) cut to 2 frames, 2 frames lost in all, at most 1 (v$_$1)" in out
