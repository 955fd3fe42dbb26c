"""The reproducibility receipt: the extraction stages that are bit-identical on any machine reproduce the
hashes of the committed dvc.lock (README, "Checking a reproduction")."""

import hashlib
from pathlib import Path

import pytest
import yaml

from robustmm.features.extract import extract_modality
from robustmm.settings import load_params

REPO = Path(__file__).resolve().parents[1]
# Measured bit-identical across worker counts and torch thread settings (README); vision (MediaPipe) and
# everything after it may differ in the last bits, so they are not asserted here.
EXACT_MODALITIES = ("text", "audio")


def locked_md5(lock: dict, stage: str, path: str) -> str:
    return next(out["md5"] for out in lock["stages"][stage]["outs"] if out["path"] == path)


@pytest.mark.parametrize("modality", EXACT_MODALITIES)
def test_extraction_reproduces_the_committed_dvc_lock(modality, tmp_path, monkeypatch):
    lock_path = REPO / "dvc.lock"
    if not lock_path.exists():
        pytest.skip("no dvc.lock committed yet: nothing to compare with")
    lock = yaml.safe_load(lock_path.read_text())
    stage = "extract@demo"
    assert stage in lock["stages"], f"dvc.lock has no {stage}: the pipeline's stages were renamed without renewing it"
    recorded = lock["stages"][stage]["params"]["params.yaml"][f"extract.{modality}"]
    if recorded != yaml.safe_load((REPO / "params.yaml").read_text())["extract"][modality]:
        pytest.skip(f"params.yaml's extract.{modality} changed since dvc.lock was written: `dvc repro` renews it")
    monkeypatch.chdir(REPO)  # params.yaml and raw/demo as `dvc repro` reads them
    chosen = getattr(load_params().extract, modality)
    output = tmp_path / f"{modality}.pkl"
    # A fresh cache: the features are computed, not read back from an earlier run's cache.
    extract_modality(
        "raw/demo",
        modality,
        chosen.extractor,
        chosen.options,
        cache_dir=tmp_path / "cache",
        workers=1,
        output=output,
        progress=False,
    )
    # DVC 3's md5 of a file output is the plain md5 of its bytes.
    assert hashlib.md5(output.read_bytes()).hexdigest() == locked_md5(lock, stage, f"features/demo/{modality}.pkl"), (
        f"features/demo/{modality}.pkl differs from the committed dvc.lock: see the README's 'Checking a reproduction'"
    )
