"""The DVC pipeline (dvc.yaml + params.yaml + pipeline/) in a temporary git repository with a tiny config.

One test walks through a sequence of edits on the same repository, because each step's expectation is
about what the previous `dvc repro` left behind (that is what DVC's caching is for): a fresh repro runs
every stage, a second does nothing, a published .pkl entry needs no extraction, a changed audio
extractor extracts audio alone, a new clip costs one clip's extraction. Another kills a
`dvc repro` of the sweep midway and checks that the rerun keeps the finished runs.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from robustmm import data, synthetic
from robustmm.presets import custom_preset

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "raw" / "demo"
# One video per split, two clips each; ADDED is a clip of the training video that arrives later.
CLIPS = [("demo01", "01"), ("demo01", "02"), ("demo07", "01"), ("demo07", "02"), ("demo09", "01"), ("demo09", "02")]
ADDED = ("demo01", "03")
EXTRACT = {"extract@demo"}
# No evaluate_corruptions@demo: the tiny project, as params.yaml, has no corrupted copies.
DOWNSTREAM = {"assemble@demo", "sweep@demo", "report"}


def tiny_params() -> dict:
    """The repository's params.yaml with every cost turned down: same keys, so the test follows it."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["datasets"] = {"demo": params["datasets"]["demo"]}
    params["extract"].update(datasets=["demo"], workers=1)
    params["extract"]["text"].update(max_length=12, device="cpu")
    params["extract"]["vision"].update(fps=3)
    params["assemble"]["lengths"] = {"audio": 173, "vision": 12}
    params["sweep"].update(TINY_SWEEP)
    return params


TINY_SWEEP = {"rates": [0.0, 0.5], "seeds": [1], "epochs": 1, "device": "cpu"}


def label_rows(clips) -> list[dict]:
    with open(DEMO / "label.csv", newline="", encoding="utf-8") as handle:
        rows = {(row["video_id"], row["clip_id"]): row for row in csv.DictReader(handle)}
    return [rows[clip] for clip in clips]


def write_dataset(root: Path, clips) -> None:
    rows = label_rows(clips)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "label.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    for video_id, clip_id in clips:
        target = root / "Raw" / video_id / f"{clip_id}.mp4"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DEMO / "Raw" / video_id / f"{clip_id}.mp4", target)


class Project:
    def __init__(self, root: Path):
        self.root = root
        # Stage commands run `python`: the interpreter running the tests, importing the project's copy.
        self.env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": str(root),
        }

    def run(self, *command: str) -> str:
        result = subprocess.run(command, cwd=self.root, env=self.env, capture_output=True, text=True)
        assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        return result.stdout

    def dvc(self, *args: str) -> str:
        return self.run(sys.executable, "-m", "dvc", *args)

    def repro(self, *options: str) -> set[str]:
        """The stages that `dvc repro` ran (or, with --dry, would run)."""
        ran = set(re.findall(r"Running stage '([^']+)'", self.dvc("repro", *options)))
        self.run("git", "add", "-A")
        self.run("git", "commit", "-qm", "repro", "--allow-empty")
        return ran

    def write_params(self, params: dict) -> None:
        (self.root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    def params(self) -> dict:
        return yaml.safe_load((self.root / "params.yaml").read_text())

    def cache_entries(self) -> dict[str, dict[Path, int]]:
        """Per extractor: cache file -> modification time (ns)."""
        base = self.root / "cache" / "features"
        return {
            extractor.name: {path: path.stat().st_mtime_ns for path in extractor.rglob("*.npz")}
            for extractor in sorted(base.iterdir())
        }


@pytest.fixture
def project(tmp_path) -> Project:
    root = tmp_path / "project"
    root.mkdir()
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copyfile(REPO / name, root / name)
    for code in ("pipeline", "robustmm"):
        shutil.copytree(REPO / code, root / code, ignore=shutil.ignore_patterns("__pycache__"))
    write_dataset(root / "raw" / "demo", CLIPS)
    project = Project(root)
    project.write_params(tiny_params())
    project.run("git", "init", "-q")
    project.run("git", "config", "user.email", "test@example.com")
    project.run("git", "config", "user.name", "test")
    project.dvc("init", "-q")
    shutil.copytree(REPO / ".dvc" / "plots", root / ".dvc" / "plots")  # the plot templates dvc.yaml names
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", "tiny project")
    return project


def test_repro_reruns_exactly_what_each_change_affects(project):
    assert project.repro() == EXTRACT | DOWNSTREAM
    metrics = json.loads(project.dvc("metrics", "show", "--json"))
    assert "results/demo/metrics.json" in json.dumps(metrics) and "auilc/MAE" in json.dumps(metrics)
    project.dvc("plots", "show", "-o", "plots_html")
    assert (project.root / "plots_html" / "index.html").is_file()
    assert (project.root / "reports" / "robustness.png").stat().st_size > 0

    assert project.repro() == set()

    # A published feature file is trained on as it is: nothing to extract or assemble for it.
    params = project.params()
    preset = custom_preset("published", seq_lens=(12, 20, 10), feature_dims=(384, 5, 7))
    (project.root / "published").mkdir()
    data.write(synthetic.make_dataset(preset, sizes=(24, 8, 8), seed=3), project.root / "published" / "tiny.pkl")
    project.write_params(
        {**params, "datasets": {**params["datasets"], "tiny": {"data": "published/tiny.pkl", "preset": "custom"}}}
    )
    assert project.repro("--dry") == {"sweep@tiny", "report"}
    project.write_params(params)

    # The stages up to the feature file run for real; that the sweep follows is DVC's plan (a dry run),
    # since running it would repeat the first repro's work (the next step runs everything).
    # A changed audio extractor reruns the extract stage, yet only audio is extracted: text and vision come from
    # the per-clip cache and their files keep their bytes.
    params["extract"]["audio"] = {"extractor": "mfcc"}
    project.write_params(params)
    cached = project.cache_entries()
    features = {
        modality: (project.root / "features" / "demo" / f"{modality}.pkl").read_bytes()
        for modality in ("text", "vision")
    }
    assert project.repro("assemble@demo") == {"extract@demo", "assemble@demo"}
    now = project.cache_entries()
    assert {name: now[name] for name in ("bert", "mediapipe")} == {name: cached[name] for name in ("bert", "mediapipe")}
    assert len(now["mfcc"]) == len(CLIPS)
    assert all((project.root / "features" / "demo" / f"{m}.pkl").read_bytes() == b for m, b in features.items())
    assert project.repro("--dry") == {"sweep@demo"}

    before = project.cache_entries()
    write_dataset(project.root / "raw" / "demo", CLIPS + [ADDED])
    assert project.repro() == EXTRACT | DOWNSTREAM
    after = project.cache_entries()
    for extractor in ("bert", "mfcc", "mediapipe"):  # the extractors in use (librosa was replaced)
        entries = before[extractor]
        assert len(after[extractor]) == len(entries) + 1, f"{extractor}: only the new clip is extracted"
        assert all(after[extractor][path] == mtime for path, mtime in entries.items()), f"{extractor} rewrote a clip"


def test_avec2019_import_stage(project, tmp_path):
    from test_avec2019 import participant_files, write_folder, write_splits

    edaic = tmp_path / "edaic"
    for pid, offset in ((300, 1.0), (301, 3.0), (310, 5.0), (320, 7.0)):
        write_folder(edaic, pid, participant_files(pid, offset=offset))
    header = "Participant_ID,Gender,PHQ_Binary,PHQ_Score\n"
    write_splits(edaic, header + "300,1,0,3\n301,0,1,12\n", header + "310,1,1,18\n", header + "320,1,0,4\n")
    params = project.params()
    params["import_avec2019"].update(
        datasets={"edaic": str(edaic)}, text_length=16, audio_length=4, vision_length=4, device="cpu"
    )
    project.write_params(params)

    assert project.repro("import_avec2019@edaic") == {"import_avec2019@edaic"}
    imported = data.load(project.root / "data" / "edaic.pkl")
    assert [len(imported[split]["id"]) for split in data.SPLITS] == [2, 1, 1]
    assert imported["valid"]["regression_labels"].tolist() == [18.0]
    assert project.repro("import_avec2019@edaic") == set()


def sweep_a_published_file(project: Project, training_clips: int, **sweep) -> dict:
    """The project's only dataset made a synthetic published file `tiny` (no extraction), swept with `sweep`
    over TINY_SWEEP; committed. Returns the params written."""
    params = project.params()
    preset = custom_preset("tiny", seq_lens=(8, 12, 10), feature_dims=(384, 5, 7))
    (project.root / "published").mkdir()
    tiny = synthetic.make_dataset(preset, sizes=(training_clips, 8, 8), seed=5)
    data.write(tiny, project.root / "published" / "tiny.pkl")
    encoder = params["datasets"]["demo"]["text_encoder"]
    params["datasets"] = {"tiny": {"data": "published/tiny.pkl", "preset": "custom", "text_encoder": encoder}}
    params["sweep"].update(TINY_SWEEP, **sweep)
    project.write_params(params)
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", "a tiny published dataset")
    return params


@pytest.mark.usefixtures("single_torch_thread")
def test_dvc_plots_show_draws_every_runs_training_curves(project):
    sweep_a_published_file(project, 24, epochs=2)
    assert project.repro("sweep@tiny") == {"sweep@tiny"}
    runs = project.root / "results" / "tiny" / "runs"
    histories = {run.name: json.loads((run / "result.json").read_text())["history"] for run in runs.iterdir()}
    assert sorted(histories) == ["rate_0.0_seed_1", "rate_0.5_seed_1"]

    plots = json.loads(project.dvc("plots", "show", "--json"))["data"]
    for curve in ("train_loss", "valid_loss", "learning_rate"):
        (plot,) = plots[f"results/tiny/curves/{curve}.tsv"]
        encoding = plot["content"]["encoding"]
        assert (encoding["x"]["field"], encoding["y"]["field"], encoding["color"]["field"]) == ("epoch", curve, "run")
        drawn = {
            (point["run"], int(point["epoch"]), float(point[curve])) for point in plot["content"]["data"]["values"]
        }
        logged = {(run, entry["epoch"], entry[curve]) for run, history in histories.items() for entry in history}
        assert drawn == logged and len(drawn) == 2 * 2
    experiment = json.loads(project.dvc("exp", "show", "--json"))[0]["data"]["metrics"]
    assert "auilc/MAE" in experiment["results/tiny/metrics.json"]["data"]

    # A rerun reuses the finished runs (runs/ persists) and writes the same curves from their result.json.
    curves = {path.name: path.read_bytes() for path in (project.root / "results" / "tiny" / "curves").iterdir()}
    assert project.repro("--force", "sweep@tiny") == {"sweep@tiny"}
    assert {path.name: path.read_bytes() for path in (project.root / "results" / "tiny" / "curves").iterdir()} == curves


@pytest.mark.usefixtures("single_torch_thread")
def test_a_killed_sweep_resumes_under_dvc_with_its_finished_runs(project, tmp_path):
    import robustmm

    rates = [0.0, 0.5, 1.0]
    params = sweep_a_published_file(project, 48, rates=rates, epochs=4)
    encoder = params["datasets"]["tiny"]["text_encoder"]

    runs = project.root / "results" / "tiny" / "runs"
    # A new session, so that the kill takes DVC and the stage's python together, as a crash would.
    repro = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "sweep@tiny"],
        cwd=project.root,
        env=project.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        # Kill once a run has finished and a later one is training (its last.pt written, no result yet).
        while repro.poll() is None:
            folders = list(runs.glob("rate_*")) if runs.exists() else []
            if any((f / "result.json").exists() for f in folders) and any(
                (f / "last.pt").exists() and not (f / "result.json").exists() for f in folders
            ):
                break
            time.sleep(0.02)
    finally:
        os.killpg(repro.pid, signal.SIGKILL)
        repro.wait()
    finished = {
        path.parent.name: (path.stat().st_mtime_ns, json.loads(path.read_text())) for path in runs.glob("*/result.json")
    }
    assert 1 <= len(finished) < len(rates), f"the kill came too late: {sorted(finished)}"

    assert project.repro("sweep@tiny") == {"sweep@tiny"}
    for name, (mtime, _result) in finished.items():
        assert (runs / name / "result.json").stat().st_mtime_ns == mtime, f"{name} was trained again"
    table = {row["rate"]: row for row in csv.DictReader(open(project.root / "results" / "tiny" / "results.csv"))}
    for result in (result for _, result in finished.values()):
        assert float(table[str(result["rate"])]["train_seconds"]) == result["train_seconds"]

    # The same sweep uninterrupted, with the stage's settings (its workers and torch_threads too).
    sweep_settings = dict(params["sweep"])
    straight = robustmm.sweep(
        project.root / "published" / "tiny.pkl",
        "custom",
        text_encoder=encoder,
        out=tmp_path / "straight",
        progress=False,
        **sweep_settings,
    )
    resumed = json.loads((project.root / "results" / "tiny" / "metrics.json").read_text())
    assert resumed.keys() == straight.keys() and resumed == pytest.approx(straight, rel=1e-6)
