"""Stage `extract@<dataset>-<modality>`: one modality of raw/<dataset> -> features/<dataset>/<modality>.pkl.

The extractor and its settings are `extract.<modality>` in params.yaml. Each clip's features are cached
under cache/features (keyed by clip content, extractor, config and version), so a rerun after a new clip
or a crash extracts only what is missing.
"""

import sys

from robustmm.config import read_config_section
from robustmm.features.extract import extract_modality


def main(dataset: str, modality: str) -> None:
    params = read_config_section("params.yaml", "extract")
    config = dict(params[modality])
    extractor = config.pop("extractor")
    report = extract_modality(
        f"raw/{dataset}",
        modality,
        extractor,
        config,
        cache_dir="cache/features",
        workers=params["workers"],
        output=f"features/{dataset}/{modality}.pkl",
        max_failure_share=params["max_failure_share"],
    )
    print(f"{dataset} {modality} ({extractor}): {report['clips']} clips, {report['failed']} failed")


if __name__ == "__main__":
    main(*sys.argv[1:])
