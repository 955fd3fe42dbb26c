"""Stage `assemble@<dataset>`: features/<dataset>/*.pkl + raw/<dataset>/label.csv -> data/<dataset>.pkl.

Sequence lengths come from params.yaml (never from the data): the text length is the tokenizer's
`extract.text.max_length`, audio and vision lengths are `assemble.lengths`.
"""

import sys

from robustmm.config import read_config_section
from robustmm.features.assemble import assemble, describe_truncation
from robustmm.presets import MODALITIES


def main(dataset: str) -> None:
    lengths = read_config_section("params.yaml", "assemble.lengths")
    text_length = read_config_section("params.yaml", "extract.text")["max_length"]
    features = {modality: f"features/{dataset}/{modality}.pkl" for modality in MODALITIES}
    assembled = assemble(
        dataset_dir=f"raw/{dataset}",
        output=f"data/{dataset}.pkl",
        lengths=(text_length, lengths["audio"], lengths["vision"]),
        **features,
    )
    for line in describe_truncation(assembled["meta"]):
        print(f"{dataset} {line}")


if __name__ == "__main__":
    main(*sys.argv[1:])
