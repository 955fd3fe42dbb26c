"""Stage `extract@<dataset>`: raw/<dataset> -> features/<dataset>/{text,audio,vision}.pkl and their reports.

The extractors and their settings are `extract.text`, `extract.audio` and `extract.vision` in params.yaml. One
stage per dataset: each clip is decoded once for audio and vision, the workers start once, and the text is
encoded beside them. Each clip's features are cached under cache/features (keyed by clip content, extractor,
config and version), so a rerun after a changed extractor, a new clip or a crash extracts only what is missing.
"""

from robustmm.errors import run_stage


def main(dataset: str) -> None:
    # Imported here, not above: the extraction workers are started with multiprocessing's spawn, which runs this
    # file again in each worker (as __mp_main__, not __main__), and a worker imports only what its extractors need.
    from robustmm.features.extract import extract
    from robustmm.presets import MODALITIES
    from robustmm.settings import load_params, stage_argument

    params = load_params()
    stage_argument("extract.datasets", dataset, params.extract.datasets)
    chosen = {modality: getattr(params.extract, modality) for modality in MODALITIES}
    reports = extract(
        f"raw/{dataset}",
        {modality: (choice.extractor, choice.options) for modality, choice in chosen.items()},
        {modality: f"features/{dataset}/{modality}.pkl" for modality in MODALITIES},
        cache_dir="cache/features",
        workers=params.extract.workers,
        max_failure_share=params.extract.max_failure_share,
        executor=params.extract.executor,
        ray_address=params.extract.ray_address,
    )
    for modality, report in reports.items():
        print(
            f"{dataset} {modality} ({chosen[modality].extractor}): {report['clips']} clips, {report['failed']} failed"
        )


if __name__ == "__main__":
    run_stage(main)
