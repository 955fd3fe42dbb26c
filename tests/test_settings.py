"""The settings schema: params.yaml, `--config` sections and flags checked alike before any work, every
problem at once with the key, the value and what is allowed; user errors without a traceback."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from robustmm import experiments
from robustmm.avec2019 import import_avec2019
from robustmm.cli import main
from robustmm.errors import report_errors
from robustmm.features.base import EXTRACTORS, Extractor
from robustmm.settings import (
    Choice,
    FieldsOf,
    ImportAvec2019Settings,
    MappingOf,
    Optional,
    Params,
    Section,
    SettingsError,
    SweepCommandSettings,
    _registered,
    load_params,
)

REPO = Path(__file__).resolve().parents[1]
REPO_PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


def write_params(tmp_path: Path, edit) -> Path:
    params = copy.deepcopy(REPO_PARAMS)
    edit(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def problems_of(path: Path) -> list[str]:
    """The problems of a params file, named relative to its folder (as a stage, run there, names them)."""
    with pytest.raises(SettingsError) as raised:
        load_params(path)
    return [problem.replace(f"{path.parent}{os.sep}", "") for problem in raised.value.problems]


def test_the_repository_params_are_valid():
    params = load_params(REPO / "params.yaml")
    assert params.datasets["demo"].preset == "custom" and params.sweep.epochs == 10
    assert params.extract.audio.extractor == "librosa" and params.extract.text.config.max_length == 16
    assert params.assemble.lengths.audio == 175 and params.report.metrics["avec"] == ["CCC", "RMSE", "MAE"]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        # unknown keys, with the closest known one
        (lambda p: p["sweep"].update(epoch=3), "params.yaml: sweep.epoch: unknown key (did you mean 'epochs'?)"),
        (
            lambda p: p["extract"]["vision"].update(fsp=3),
            "params.yaml: extract.vision.fsp: unknown key for extractor 'mediapipe' (did you mean 'fps'?)",
        ),
        # a typo in a datasets entry was ignored and fell back to the preset's encoder
        (
            lambda p: p["datasets"]["demo"].update(text_encodr="x"),
            "params.yaml: datasets.demo.text_encodr: unknown key (did you mean 'text_encoder'?)",
        ),
        # out of range
        (
            lambda p: p["sweep"].update(epochs=-1),
            "params.yaml: sweep.epochs: -1 is not allowed (an integer >= 1, or null)",
        ),
        (
            lambda p: p["sweep"].update(rates=[0.0, 1.5]),
            "params.yaml: sweep.rates: 1.5 is not allowed (a non-empty list of distinct values, each a number in [0, 1])",
        ),
        (lambda p: p["sweep"].update(seeds=[-1]), "params.yaml: sweep.seeds: -1 is not allowed"),
        (lambda p: p["sweep"].update(rates=[0.5, 0.5]), "params.yaml: sweep.rates: 0.5 given more than once"),
        (
            lambda p: p["extract"].update(max_failure_share=1.5),
            "params.yaml: extract.max_failure_share: 1.5 is not allowed (a number in [0, 1])",
        ),
        (
            lambda p: p["extract"].update(workers=0),
            "params.yaml: extract.workers: 0 is not allowed (an integer >= 1, or null)",
        ),
        (
            lambda p: p["assemble"]["lengths"].update(vision=0),
            "params.yaml: assemble.lengths.vision: 0 is not allowed (an integer >= 1)",
        ),
        (
            lambda p: p["import_avec2019"].update(window_seconds=0),
            "params.yaml: import_avec2019.window_seconds: 0 is not allowed (a number > 0)",
        ),
        (
            lambda p: p["sweep"].update(label_range=[3, -3]),
            "params.yaml: sweep.label_range: [3, -3] is not allowed (two numbers [LOW, HIGH] with LOW < HIGH, or null)",
        ),
        # wrong types
        (
            lambda p: p["sweep"].update(epochs="ten"),
            "params.yaml: sweep.epochs: 'ten' is not allowed (an integer >= 1, or null)",
        ),
        (
            lambda p: p["sweep"].update(simam="yes please"),
            "params.yaml: sweep.simam: 'yes please' is not allowed (true or false)",
        ),
        (
            lambda p: p["sweep"].update(checkpointing="sometimes"),
            "params.yaml: sweep.checkpointing: checkpointing 'sometimes': expected auto, true, false or text-encoder",
        ),
        (
            lambda p: p["sweep"].update(kernels="fast"),
            "params.yaml: sweep.kernels: 'fast' is not allowed",
        ),
        (
            lambda p: p["extract"]["text"].update(max_length="16"),
            "params.yaml: extract.text.max_length: '16' is not allowed (an integer)",
        ),
        (lambda p: p["sweep"].update(rates=0.5), "params.yaml: sweep.rates: 0.5 is not allowed (a non-empty list"),
        (lambda p: p.update(sweep=[1]), "params.yaml: sweep: [1] is not allowed (a mapping with keys"),
        # unknown names, with the closest known one
        (
            lambda p: p["datasets"]["demo"].update(preset="mossi"),
            "params.yaml: datasets.demo.preset: 'mossi' is not allowed (one of avec2019, custom, mosei, mosi, sims, simsv2; did you mean 'mosi'?)",
        ),
        (
            lambda p: p["extract"]["audio"].update(extractor="librossa"),
            "params.yaml: extract.audio.extractor: 'librossa' is not allowed (a registered audio extractor: librosa, mfcc, opensmile; did you mean 'librosa'?)",
        ),
        (
            lambda p: p["extract"]["audio"].update(extractor="mediapipe"),
            "params.yaml: extract.audio.extractor: 'mediapipe' is not allowed",
        ),
        (
            lambda p: p["sweep"].update(text_mode="froze"),
            "params.yaml: sweep.text_mode: 'froze' is not allowed (one of finetune, frozen; did you mean 'frozen'?)",
        ),
        (
            lambda p: p["sweep"].update(device="gpu"),
            "params.yaml: sweep.device: 'gpu' is not allowed (auto, cpu, cuda or cuda:N)",
        ),
        (
            lambda p: p["report"]["metrics"].update(mosi=["MAE", "Cor"]),
            "params.yaml: report.metrics.mosi: 'Cor' is not allowed",
        ),
        (
            lambda p: p["report"]["metrics"].update(sims=["Has0_acc_2"]),
            "params.yaml: report.metrics.sims: 'Has0_acc_2' is not allowed",
        ),
        # missing required keys, and settings that only make sense together
        (
            lambda p: p["assemble"]["lengths"].pop("audio"),
            "params.yaml: assemble.lengths.audio: missing; give an integer >= 1",
        ),
        (lambda p: p["datasets"]["demo"].pop("data"), "params.yaml: datasets.demo.data: missing; give a path"),
        (
            lambda p: p["sweep"].update(text_target="file", text_mode="finetune"),
            "params.yaml: sweep.text_target: 'file' needs text_mode 'frozen'",
        ),
    ],
)
def test_each_problem_names_the_key_the_value_and_what_is_allowed(tmp_path, edit, expected):
    problems = problems_of(write_params(tmp_path, edit))
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_every_problem_is_reported_at_once(tmp_path):
    def edit(params):
        params["sweep"].update(epochs=-1, epoch=3)
        params["datasets"]["demo"]["preset"] = "mossi"
        params["extract"]["audio"]["extractor"] = "librossa"

    problems = problems_of(write_params(tmp_path, edit))
    assert len(problems) == 4
    message = str(SettingsError(problems))
    assert message.startswith("4 problems in the settings:\n  ")
    assert "params.yaml: sweep.epochs: -1 is not allowed (an integer >= 1, or null)" in message
    assert "params.yaml: sweep.epoch: unknown key (did you mean 'epochs'?)" in message


def test_a_key_given_twice_and_broken_yaml_are_errors(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("sweep:\n  epochs: 1\n  epochs: 2\n")
    assert problems_of(path) == ["params.yaml: not valid YAML/JSON at line 3, column 3: key 'epochs' given twice"]
    path.write_text("sweep: [1\n")
    assert problems_of(path)[0].startswith("params.yaml: not valid YAML/JSON at line 2")
    assert problems_of(tmp_path / "absent.yaml") == ["absent.yaml: settings file not found"]


def test_an_extractors_own_config_checks_are_reported_at_its_key(tmp_path, monkeypatch):
    @dataclasses.dataclass
    class StrictConfig:
        fps: float = 10.0

        def __post_init__(self):
            if not self.fps > 0:
                raise ValueError(f"fps must be > 0, got {self.fps}")

    class Strict(Extractor):
        name, modality, version, config_class = "strict", "vision", 1, StrictConfig

    _registered()
    monkeypatch.setitem(EXTRACTORS, "strict", Strict)
    problems = problems_of(
        write_params(tmp_path, lambda p: p["extract"].update(vision={"extractor": "strict", "fps": 0}))
    )
    assert problems == ["params.yaml: extract.vision: fps must be > 0, got 0 (extractor 'strict')"]


def schema_keys(schema: type, prefix: str = ""):
    for spec in dataclasses.fields(schema):
        kind, path = spec.metadata["kind"], f"{prefix}{spec.name}"
        kind = kind.inner if isinstance(kind, Optional) else kind
        if isinstance(kind, Section):
            yield from schema_keys(kind.schema, f"{path}.")
        elif isinstance(kind, MappingOf) and isinstance(kind.value, Section):
            yield from schema_keys(kind.value.schema, f"{path}.{kind.placeholder}.")
        elif (
            isinstance(kind, MappingOf)
            and isinstance(kind.key, Choice)
            and callable(kind.value)
            and all(isinstance(kind.value(name), FieldsOf) for name in kind.key.options)
        ):
            # Fixed names, each with its own settings (the missing patterns'): every setting of every name.
            for name in kind.key.options:
                yield from (f"{path}.{name}.{field.name}" for field in dataclasses.fields(kind.value(name).schema))
        elif isinstance(kind, FieldsOf):
            yield from (f"{path}.{field.name}" for field in dataclasses.fields(kind.schema))
        elif isinstance(kind, MappingOf):
            yield f"{path}.{kind.placeholder}"
        else:
            yield path


def test_every_params_key_is_in_the_readme_table():
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### `params.yaml`, key by key") :]
    section = section[: section.index("\n### ", 1)]
    documented = {
        key
        for line in section.splitlines()
        if line.startswith("| `")
        for key in re.findall(r"`([^`]+)`", line.split("|")[1])
    }
    keys = set(schema_keys(Params))
    assert {
        "sweep.epochs",
        "datasets.<name>.text_encoder",
        "report.metrics.<family>",
        "extract.vision",
        "sweep.missing",
        "sweep.patterns.block.min_span",
        "sweep.patterns.per_modality.swept",
        "sweep.patterns.modality.modalities",
        "sweep.protocol",
        "sweep.train_once.valid_rate",
    } <= keys
    assert keys - documented == set()


def test_every_extractor_setting_is_in_the_extraction_docs():
    docs = (REPO / "docs" / "extraction.md").read_text()
    for name, cls in _registered().items():
        row = next(line for line in docs.splitlines() if line.startswith(f"| `{name}` |"))
        missing = [spec.name for spec in dataclasses.fields(cls.config_class) if f"`{spec.name}`" not in row]
        assert not missing, f"{name}: {missing}"


def test_the_sweep_and_import_schemas_are_the_functions_keywords_with_their_defaults():
    def keywords(function, skip):
        return {
            name: parameter.default
            for name, parameter in inspect.signature(function).parameters.items()
            if name not in skip
        }

    def defaults(schema, skip=()):
        return {
            spec.name: spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()
            for spec in dataclasses.fields(schema)
            if spec.name not in skip
        }

    assert defaults(SweepCommandSettings) == keywords(experiments.sweep, {"data", "dataset"})
    imported = defaults(ImportAvec2019Settings, {"datasets"})
    assert imported == {**keywords(import_avec2019, {"data_dir", "out"}), "statistics": list(imported["statistics"])}


# ------------------------------------------------------------------------------------------------ the CLI


def test_cli_flags_and_config_sections_fail_the_same_way(tmp_path, capsys):
    # No data is read before the settings are checked: the file does not even exist.
    data = ["--data", str(tmp_path / "absent.pkl"), "--dataset", "mosi"]
    assert main(["sweep", *data, "--epochs", "0"]) == 2
    assert capsys.readouterr().err == "robustmm sweep: error: --epochs: 0 is not allowed (an integer >= 1, or null)\n"
    assert main(["sweep", *data, "--rates", "0,1.5", "--seeds", "1,1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("robustmm sweep: error: 2 problems in the settings:\n")
    assert "  --rates: 1.5 is not allowed (a non-empty list of distinct values, each a number in [0, 1])" in err
    assert "  --seeds: 1 given more than once" in err
    assert main(["train", *data, "--epochs", "0", "--rate", "2"]) == 2
    err = capsys.readouterr().err
    assert "--epochs: 0 is not allowed" in err and "--rate: 2.0 is not allowed (a number in [0, 1])" in err

    config = tmp_path / "settings.yaml"
    config.write_text("sweep:\n  epochs: 0\n  rate: [0.5]\n")
    assert main(["sweep", *data, "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{config}: sweep.epochs: 0 is not allowed (an integer >= 1, or null)" in err
    assert f"{config}: sweep.rate: unknown key (did you mean 'rates'?)" in err
    # A flag wins over the section, so its value is the one checked, named as the flag.
    assert main(["sweep", *data, "--config", str(config), "--epochs", "-2"]) == 2
    assert "--epochs: -2 is not allowed" in capsys.readouterr().err
    assert main(["sweep", *data, "--config", str(config), "--section", "train"]) == 2
    assert f"{config}: no section 'train' (the top level has sweep)" in capsys.readouterr().err


def test_cli_extract_and_assemble_settings(tmp_path, capsys):
    dataset = ["--dataset", str(tmp_path / "raw")]
    assert main(["extract", *dataset, "--audio", "librossa", "--workers", "0", "--max-failure-share", "1.5"]) == 2
    err = capsys.readouterr().err
    assert (
        "--audio: 'librossa' is not allowed (a registered audio extractor: librosa, mfcc, opensmile; did you mean 'librosa'?)"
        in err
    )
    assert "--workers: 0 is not allowed (an integer >= 1, or null)" in err
    assert "--max-failure-share: 1.5 is not allowed (a number in [0, 1])" in err
    assert (
        main(
            ["extract", *dataset, "--audio", "mfcc", "--option", "audio.n_mfc=3", "--option", "audio.sample_rate=fast"]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "--option audio.n_mfc=3: unknown key for extractor 'mfcc' (did you mean 'n_mfcc'?)" in err
    assert "--option audio.sample_rate=fast: 'fast' is not allowed (an integer)" in err
    assert main(["extract", *dataset, "--fps", "5"]) == 2
    assert "--fps: given, but no vision extractor is named" in capsys.readouterr().err
    assert main(["extract", *dataset]) == 2
    assert "error: name at least one extractor" in capsys.readouterr().err

    # params.yaml's extract and assemble sections are the pipeline's, not the commands'.
    assert main(["extract", "--config", str(REPO / "params.yaml"), "--audio", "mfcc"]) == 2
    err = capsys.readouterr().err
    assert "params.yaml: extract.datasets: unknown key (did you mean 'dataset'?)" in err
    assert "params.yaml: extract.dataset: missing; give a path" in err
    assert main(["assemble", "--config", str(REPO / "params.yaml"), *dataset, "--output", str(tmp_path / "x.pkl")]) == 2
    assert (
        "params.yaml: assemble.lengths: {'audio': 175, 'vision': 40} is not allowed (three integers >= 1"
        in capsys.readouterr().err
    )
    assert main(["assemble", *dataset, "--output", str(tmp_path / "x.pkl")]) == 2
    assert "--lengths: missing; give three integers >= 1" in capsys.readouterr().err


def test_debug_shows_the_traceback_and_bugs_keep_theirs(tmp_path, monkeypatch, capsys):
    data = ["--data", str(tmp_path / "absent.pkl"), "--dataset", "mosi"]
    with pytest.raises(SettingsError, match="--epochs: 0 is not allowed"):
        main(["--debug", "sweep", *data, "--epochs", "0"])
    monkeypatch.setenv("ROBUSTMM_DEBUG", "1")
    with pytest.raises(SettingsError):
        main(["sweep", *data, "--epochs", "0"])
    monkeypatch.delenv("ROBUSTMM_DEBUG")

    def bug(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(experiments, "sweep", bug)
    with pytest.raises(KeyError):
        main(["sweep", *data])

    def interrupted():
        raise KeyboardInterrupt

    assert report_errors("robustmm sweep", interrupted) == 130
    assert capsys.readouterr().err == "robustmm sweep: interrupted\n"


# ------------------------------------------------------------------------------------------------ pipeline stages


def run_script(folder: Path, *arguments: str, debug: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("ROBUSTMM_DEBUG", None)
    if debug:
        env["ROBUSTMM_DEBUG"] = "1"
    return subprocess.run(
        [sys.executable, str(REPO / "pipeline" / arguments[0]), *arguments[1:]],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_stage_with_bad_params_stops_before_any_work_with_one_message(tmp_path):
    write_params(
        tmp_path, lambda p: (p["sweep"].update(epochs=-1, epoch=3), p["datasets"]["demo"].update(text_encodr="x"))
    )
    result = run_script(tmp_path, "sweep.py", "demo")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "pipeline/sweep.py: error: 3 problems in the settings:",
        "  params.yaml: datasets.demo.text_encodr: unknown key (did you mean 'text_encoder'?)",
        "  params.yaml: sweep.epoch: unknown key (did you mean 'epochs'?)",
        "  params.yaml: sweep.epochs: -1 is not allowed (an integer >= 1, or null)",
    ]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["params.yaml"]  # nothing was written
    debugged = run_script(tmp_path, "sweep.py", "demo", debug=True)
    assert debugged.returncode == 1 and "Traceback" in debugged.stderr and "SettingsError" in debugged.stderr


@pytest.mark.parametrize(
    "arguments", [("extract.py", "demo"), ("assemble.py", "demo"), ("import_avec2019.py", "avec"), ("report.py",)]
)
def test_every_stage_checks_the_whole_params_file(tmp_path, arguments):
    write_params(tmp_path, lambda p: p["report"]["metrics"].update(mosi=["Has0_acc2"]))
    result = run_script(tmp_path, *arguments)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr == (
        f"pipeline/{arguments[0]}: error: params.yaml: report.metrics.mosi: 'Has0_acc2' is not allowed "
        "(a non-empty list of distinct values, each a mosi metric: MAE, Corr, Has0_acc_2, Has0_F1_score, "
        "Non0_acc_2, Non0_F1_score, Mult_acc_5, Mult_acc_7; did you mean 'Has0_acc_2'?)\n"
    )


def test_a_stage_reports_bad_inputs_and_arguments_without_a_traceback(tmp_path):
    write_params(tmp_path, lambda p: None)
    missing_data = run_script(tmp_path, "sweep.py", "demo")
    assert missing_data.returncode == 2 and "Traceback" not in missing_data.stderr
    assert missing_data.stderr.strip() == "pipeline/sweep.py: error: data/demo.pkl: file not found"
    unknown = run_script(tmp_path, "sweep.py", "dmeo")
    assert (
        unknown.stderr.strip()
        == "pipeline/sweep.py: error: params.yaml: datasets: no entry 'dmeo' (entries: demo); did you mean 'demo'?"
    )
    usage = run_script(tmp_path, "extract.py", "demo", "audio")
    assert usage.returncode == 2 and usage.stderr.strip() == "usage: python pipeline/extract.py DATASET"


def test_checking_settings_and_the_stages_that_never_train_import_no_heavy_library():
    # Each stage is a process of its own: PyTorch, scikit-learn, pandas and librosa took 5 s of every start,
    # most of the assemble and report stages' time. The params check (all sections) must not need them.
    code = (
        "import sys; from robustmm.settings import load_params; import robustmm.features.assemble, "
        "robustmm.report, robustmm.features.extract; "
        "load_params('params.yaml'); "
        "print(' '.join(m for m in ('torch', 'sklearn', 'pandas', 'librosa', 'transformers') if m in sys.modules))"
    )
    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
