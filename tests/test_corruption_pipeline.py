"""The corrupt and evaluate_corruptions stages in the tiny DVC project of test_pipeline: a corrupted copy is
extracted and assembled as any dataset, and the clean models are tested on it."""

from __future__ import annotations

import csv
import json

import pytest
from test_pipeline import EXTRACT, project  # noqa: F401 - the fixture

from robustmm import data

pytestmark = pytest.mark.usefixtures("single_torch_thread")
NAME = "demo-white_noise-0"


def test_a_corrupted_copy_goes_through_extraction_and_is_tested_with_the_clean_models(project):  # noqa: F811
    params = project.params()
    params["corruptions"] = {NAME: {"dataset": "demo", "noise": "white_noise", "level": 0, "seed": 5}}
    params["extract"]["datasets"] = ["demo", NAME]
    params["evaluate_corruptions"]["datasets"] = ["demo"]
    project.write_params(params)
    corrupted_stages = {f"corrupt@{NAME}", f"extract@{NAME}", f"assemble@{NAME}"}
    assert project.repro() == EXTRACT | corrupted_stages | {
        "assemble@demo",
        "sweep@demo",
        "evaluate_corruptions@demo",
        "report",
    }

    clean, noisy = data.load(project.root / "data" / "demo.pkl"), data.load(project.root / "data" / f"{NAME}.pkl")
    assert list(noisy["test"]["id"]) == list(clean["test"]["id"])
    assert (noisy["test"]["text_bert"] == clean["test"]["text_bert"]).all()
    assert (noisy["test"]["vision"] == clean["test"]["vision"]).all()  # the video packets were copied
    assert not (noisy["test"]["audio"] == clean["test"]["audio"]).all()
    rows = list(csv.DictReader(open(project.root / "results" / "demo" / "corruptions.csv", encoding="utf-8")))
    assert [(row["corruption"], row["noise"]) for row in rows] == [("clean", "none"), (NAME, "white_noise")]
    sweep_metrics = json.loads((project.root / "results" / "demo" / "metrics.json").read_text())
    assert float(rows[0]["MAE_mean"]) == pytest.approx(sweep_metrics["rate_0.0/MAE_mean"])  # the sweep's rate-0 model
    assert f"{NAME}/MAE_mean" in project.dvc("metrics", "show")

    assert project.repro() == set()
    params["corruptions"][NAME]["seed"] = 6
    project.write_params(params)
    # A dry run lists the stages whose own deps changed: the copy and its evaluation, not the clean branch.
    assert project.repro("--dry") == {f"corrupt@{NAME}", "evaluate_corruptions@demo"}
