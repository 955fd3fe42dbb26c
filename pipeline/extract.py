"""Stage `extract@<dataset>-<modality>`: one modality of raw/<dataset> -> features/<dataset>/<modality>.pkl.

The extractor and its settings are `extract.<modality>` in params.yaml. Each clip's features are cached
under cache/features (keyed by clip content, extractor, config and version), so a rerun after a new clip
or a crash extracts only what is missing.
"""

from robustmm.errors import run_stage
from robustmm.features.extract import extract_modality
from robustmm.presets import MODALITIES
from robustmm.settings import SettingsError, load_params, stage_argument


def main(dataset: str, modality: str) -> None:
    params = load_params()
    stage_argument("extract.datasets", dataset, params.extract.datasets)
    if modality not in MODALITIES:
        raise SettingsError([f"modality {modality!r}: expected one of {', '.join(MODALITIES)}"])
    chosen = getattr(params.extract, modality)
    report = extract_modality(
        f"raw/{dataset}",
        modality,
        chosen.extractor,
        chosen.options,
        cache_dir="cache/features",
        workers=params.extract.workers,
        output=f"features/{dataset}/{modality}.pkl",
        max_failure_share=params.extract.max_failure_share,
        executor=params.extract.executor,
        ray_address=params.extract.ray_address,
    )
    print(f"{dataset} {modality} ({chosen.extractor}): {report['clips']} clips, {report['failed']} failed")


if __name__ == "__main__":
    run_stage(main)
