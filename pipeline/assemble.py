"""Stage `assemble@<dataset>`: features/<dataset>/*.pkl + raw/<dataset>/label.csv -> data/<dataset>.pkl.

Sequence lengths come from params.yaml (never from the data): the text length is the tokenizer's
`extract.text.max_length`, audio and vision lengths are `assemble.lengths`.
"""

from robustmm.errors import run_stage
from robustmm.features.assemble import assemble, describe_truncation
from robustmm.presets import MODALITIES
from robustmm.settings import load_params, stage_argument


def main(dataset: str) -> None:
    params = load_params()
    stage_argument("extract.datasets", dataset, params.extract.datasets)
    lengths = params.assemble.lengths
    features = {modality: f"features/{dataset}/{modality}.pkl" for modality in MODALITIES}
    assembled = assemble(
        dataset_dir=f"raw/{dataset}",
        output=f"data/{dataset}.pkl",
        lengths=(params.extract.text.config.max_length, lengths.audio, lengths.vision),
        **features,
    )
    for line in describe_truncation(assembled["meta"]):
        print(f"{dataset} {line}")


if __name__ == "__main__":
    run_stage(main)
