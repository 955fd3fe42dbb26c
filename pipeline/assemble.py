"""Stage `assemble@<dataset>`: features/<dataset>/*.pkl + raw/<dataset>/label.csv -> data/<dataset>.pkl.

Sequence lengths come from params.yaml (never from the data): the text length is the tokenizer's
`extract.text.max_length`, audio and vision lengths are `assemble.lengths`.
"""

import sys
from pathlib import Path

import yaml

from robustmm.features.assemble import assemble


def main(dataset: str) -> None:
    params = yaml.safe_load(Path("params.yaml").read_text(encoding="utf-8"))
    lengths = params["assemble"]["lengths"]
    features = {modality: f"features/{dataset}/{modality}.pkl" for modality in ("text", "audio", "vision")}
    assemble(
        dataset_dir=f"raw/{dataset}",
        output=f"data/{dataset}.pkl",
        lengths=(params["extract"]["text"]["max_length"], lengths["audio"], lengths["vision"]),
        **features,
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
