"""Executors and shards: extraction and the sweep give the same bytes locally, on Ray (a local cluster the tests
start: 2 CPUs, a declared GPU for the text actor, no network), with local parallel runs and split into shards;
a Ray worker killed mid-clip costs a retry, not the stage."""

import os
import signal
import sys
import threading
import time
from pathlib import Path

import crashing_extractor
import fast_runs
import pandas as pd
import pytest
from crashing_extractor import CrashingExtractor
from test_features_pipeline import (
    CLIPS,
    SETTINGS,
    dataset,  # noqa: F401 - the fixture: a clip folder with faces, blanks, broken files
)
from test_sweep import feature_file  # noqa: F401 - a small SIMS-shaped feature file

import robustmm
from robustmm import data as feature_data
from robustmm import experiments
from robustmm.cli import main
from robustmm.executors import Shard
from robustmm.features.base import EXTRACTORS, register
from robustmm.features.extract import extract

pytestmark = pytest.mark.usefixtures("single_torch_thread")
FAST = {**fast_runs.FAST, "torch_threads": 1}
RATES, SEEDS = [0.0, 0.5], [111, 1111]


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    # The actors import the test-only extractor by module name; the workers inherit the environment of the
    # cluster that this process starts.
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(crashing_extractor.__file__).parent), before]))
    ray.init(num_cpus=2, num_gpus=1, object_store_memory=200 * 2**20, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
    if before is None:
        del os.environ["PYTHONPATH"]
    else:
        os.environ["PYTHONPATH"] = before


@pytest.fixture
def crashing():
    register(CrashingExtractor)
    yield
    del EXTRACTORS[CrashingExtractor.name]


def extract_into(dataset: Path, folder: Path, cache: Path | None = None, **options) -> dict[str, bytes]:
    outputs = {modality: folder / f"{modality}.pkl" for modality in SETTINGS}
    extract(dataset, SETTINGS, outputs, cache or folder / "cache", max_failure_share=1.0, progress=False, **options)
    written = {path.name: path.read_bytes() for path in outputs.values()}
    written.update({path.name: path.read_bytes() for path in folder.glob("*.report.json")})
    return written


@pytest.fixture(scope="module")
def local_features(dataset, tmp_path_factory) -> dict[str, bytes]:
    return extract_into(dataset, tmp_path_factory.mktemp("local"), workers=1)


def test_ray_extraction_is_byte_identical_to_a_local_run(ray_cluster, dataset, local_features, tmp_path, monkeypatch):
    from robustmm.executors import ray_extract

    encoded_remotely = []
    real = ray_extract.RemoteTextExtractor.extract_batch
    monkeypatch.setattr(
        ray_extract.RemoteTextExtractor,
        "extract_batch",
        lambda self, texts: encoded_remotely.append(len(texts)) or real(self, texts),
    )
    on_ray = extract_into(dataset, tmp_path, executor="ray", workers=2)
    assert sorted(on_ray) == sorted(local_features) and len(on_ray) == 6
    for name, content in local_features.items():
        assert on_ray[name] == content, name
    assert encoded_remotely == [len(CLIPS)]  # the text went to the (declared) GPU actor


def test_shards_together_equal_one_unsharded_run(dataset, local_features, tmp_path, monkeypatch):
    cache = tmp_path / "shared-cache"
    entries = []
    for index in (0, 1):
        summary = extract(
            dataset,
            SETTINGS,
            {m: tmp_path / "unused" / f"{m}.pkl" for m in SETTINGS},
            cache,
            workers=1,
            progress=False,
            shard=Shard(index, 2),
        )
        assert summary["audio"] == {"clips": len(CLIPS[index::2])}
        assert not (tmp_path / "unused").exists()  # a shard writes nothing but cache entries
        entries.append(len(list(cache.rglob("*.npz"))))
    assert 0 < entries[0] < entries[1]

    from robustmm.features import extract as extract_module

    def no_extraction(path, extractors):
        raise AssertionError(f"{path} extracted again: the shards should have cached it")

    monkeypatch.setattr(extract_module, "extract_clip", no_extraction)
    assert extract_into(dataset, tmp_path / "assembled", cache=cache, workers=1) == local_features


def test_a_ray_worker_killed_mid_clip_gets_the_clip_retried(ray_cluster, crashing, tmp_path, capsys):
    root = tmp_path / "d"
    lines = ["video_id,clip_id,text,label,mode"]
    for index in range(1, 5):
        (root / "Raw" / "v").mkdir(parents=True, exist_ok=True)
        (root / "Raw" / "v" / f"{index}.mp4").write_bytes(b"x" * index)
        lines.append(f"v,{index},words,0.5,train")
    (root / "label.csv").write_text("\n".join(lines) + "\n")
    markers = tmp_path / "markers"
    markers.mkdir()
    killed = []

    def kill_the_stalled_actor():
        deadline = time.monotonic() + 120
        while not (found := list(markers.glob("2.*"))) and time.monotonic() < deadline:
            time.sleep(0.05)
        if found:
            pid = int(found[0].suffix[1:])
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    killer = threading.Thread(target=kill_the_stalled_actor)
    killer.start()
    config = {"crash_clip": "2", "how": "stall", "marker_dir": str(markers)}
    report = extract(
        root,
        {"audio": ("test-crashing", config)},
        {"audio": tmp_path / "audio.pkl"},
        tmp_path / "cache",
        workers=2,
        progress=False,
        executor="ray",
    )["audio"]
    killer.join()
    assert killed and killed[0] != os.getpid()
    assert report["failures"] == []
    features = feature_data.read_pkl(tmp_path / "audio.pkl")["features"]
    assert [row.tolist() for row in features] == [[[float(index)]] for index in range(1, 5)]
    assert "v/2.mp4: the worker process extracting it died (Ray actor: " in capsys.readouterr().err

    # A clip whose actor dies on every attempt is reported failed with the cause; the other clips go on.
    config = {"crash_clip": "3", "how": "exit"}
    report = extract(
        root,
        {"audio": ("test-crashing", config)},
        {"audio": tmp_path / "again.pkl"},
        tmp_path / "cache2",
        workers=2,
        progress=False,
        executor="ray",
        max_failure_share=0.5,
    )["audio"]
    assert [failure["id"] for failure in report["failures"]] == ["v$_$3"]
    assert "the worker process died extracting this clip" in report["failures"][0]["reason"]
    assert "also when retried in a fresh worker" in report["failures"][0]["reason"]


# ------------------------------------------------------------------------------------------------ the sweep


def sweep_outputs(out: Path) -> tuple[pd.DataFrame, bytes]:
    """results.csv without the wall-clock column, and metrics.json's bytes."""
    return pd.read_csv(out / "results.csv").drop(columns="train_seconds"), (out / "metrics.json").read_bytes()


@pytest.fixture(scope="module")
def serial_sweep(feature_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial")
    robustmm.sweep(feature_file, "sims", rates=RATES, seeds=SEEDS, out=out, **FAST)
    return sweep_outputs(out)


def assert_same_sweep(out: Path, reference) -> None:
    table, metrics = sweep_outputs(out)
    pd.testing.assert_frame_equal(table, reference[0], check_exact=True)
    assert metrics == reference[1]


def test_parallel_local_runs_give_the_serial_results(feature_file, serial_sweep, tmp_path, monkeypatch):
    robustmm.sweep(feature_file, "sims", rates=RATES, seeds=SEEDS, out=tmp_path, workers=2, **FAST)
    assert_same_sweep(tmp_path, serial_sweep)
    # Finished runs are read in the sweep's own process: no worker starts (each took seconds to start).
    stamps = {path: path.stat().st_mtime_ns for path in tmp_path.glob("runs/*/result.json")}
    monkeypatch.setattr(experiments, "ProcessPoolExecutor", None)
    robustmm.sweep(feature_file, "sims", rates=RATES, seeds=SEEDS, out=tmp_path, workers=2, **FAST)
    assert_same_sweep(tmp_path, serial_sweep)
    assert {path: path.stat().st_mtime_ns for path in tmp_path.glob("runs/*/result.json")} == stamps


def test_a_ray_sweep_gives_the_local_results_and_reuses_finished_runs(
    ray_cluster, feature_file, serial_sweep, tmp_path
):
    robustmm.sweep(
        feature_file,
        "sims",
        rates=RATES,
        seeds=SEEDS,
        out=tmp_path,
        executor="ray",
        resources={"cpus": 1, "gpus": 0},
        **FAST,
    )
    assert_same_sweep(tmp_path, serial_sweep)
    stamps = {path: path.stat().st_mtime_ns for path in tmp_path.glob("runs/*/result.json")}
    assert len(stamps) == 4
    robustmm.sweep(feature_file, "sims", rates=RATES, seeds=SEEDS, out=tmp_path, executor="ray", **FAST)
    assert {path: path.stat().st_mtime_ns for path in tmp_path.glob("runs/*/result.json")} == stamps


def test_sweep_shards_train_their_runs_and_the_full_sweep_writes_the_results(
    feature_file, serial_sweep, tmp_path, capsys
):
    args = fast_runs.command(
        "sweep", feature_file, "sims", tmp_path, rates="0,0.5", seeds="111,1111", epochs=2, torch_threads=1
    )
    assert main([*args, "--shard", "1/2"]) == 0
    assert "shard 1/2: its runs are in" in capsys.readouterr().out
    assert sorted(path.parent.name for path in tmp_path.glob("runs/*/result.json")) == [
        "rate_0.0_seed_1111",
        "rate_0.5_seed_1111",
    ]  # every 2nd run of the rate-major list, from the 2nd
    assert not (tmp_path / "results.csv").exists()
    assert main([*args, "--shard", "0/2"]) == 0
    stamps = {path: path.stat().st_mtime_ns for path in tmp_path.glob("runs/*/result.json")}
    assert len(stamps) == 4
    assert main(args) == 0
    assert {path: path.stat().st_mtime_ns for path in tmp_path.glob("runs/*/result.json")} == stamps
    assert_same_sweep(tmp_path, serial_sweep)


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("2/2", "--shard: '2/2' is not I/N with 0 <= I < N"),
        ("one", "--shard: 'one' is not I/N"),
    ],
)
def test_a_bad_shard_is_refused_before_any_work(tmp_path, capsys, flag, message):
    assert main(["extract", "--dataset", str(tmp_path / "absent"), "--audio", "mfcc", "--shard", flag]) == 2
    assert message in capsys.readouterr().err


def test_executor_names_are_checked(tmp_path, capsys):
    data = ["--data", str(tmp_path / "absent.pkl"), "--dataset", "mosi"]
    assert main(["sweep", *data, "--executor", "slurm"]) == 2
    assert "--executor: 'slurm' is not allowed (one of local, ray)" in capsys.readouterr().err
    assert main(["sweep", *data, "--run-gpus", "-0.5"]) == 2
    assert "--run-gpus: -0.5 is not allowed (a number >= 0)" in capsys.readouterr().err


def test_the_base_install_does_not_import_ray(tmp_path):
    import subprocess

    code = "import robustmm.cli, robustmm.experiments, robustmm.features.extract, sys; print('ray' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )
