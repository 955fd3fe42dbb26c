"""Stage `evaluate_corruptions@<dataset>`: the rate-0 models of datasets.<dataset> tested on every corrupted copy.

The models are trained on the clean file with the `sweep` settings at missing rate 0 (kept in
results/<dataset>/corruption_models/, reused while data and settings are unchanged) and tested on the test split of
data/<name>.pkl for every `corruptions.<name>` whose dataset is <dataset>. Writes results/<dataset>/corruptions.csv,
corruptions.json and corruptions.png (robustmm.corruption.evaluate). One stage per `evaluate_corruptions.datasets`
entry: the datasets that have corrupted copies.
"""

import torch

from robustmm.corruption.evaluate import CorruptedSet, evaluate_corruptions
from robustmm.errors import run_stage
from robustmm.presets import KEY_METRICS, get_preset
from robustmm.settings import load_params, stage_argument


def main(dataset: str) -> None:
    params = load_params()
    stage_argument("evaluate_corruptions.datasets", dataset, params.evaluate_corruptions.datasets)
    entry = params.datasets[dataset]
    if params.sweep.torch_threads:
        torch.set_num_threads(params.sweep.torch_threads)
    corrupted = [
        CorruptedSet(name, corruption.noise, corruption.level, f"data/{name}.pkl")
        for name, corruption in params.corruptions.items()
        if corruption.dataset == dataset
    ]
    family = (
        (params.sweep.metric_family or "mosi") if entry.preset == "custom" else get_preset(entry.preset).metric_family
    )
    shown = tuple(params.report.metrics.get(family, KEY_METRICS[family]))  # as the report shows that family
    rows = evaluate_corruptions(
        entry.data,
        entry.preset,
        corrupted,
        f"results/{dataset}",
        f"results/{dataset}/corruption_models",
        shown,
        text_encoder=entry.text_encoder,
        **params.sweep.sweep_arguments(),
    )
    for row in rows:
        print(f"{dataset} {row['corruption']}: " + ", ".join(f"{name} {row[f'{name}_mean']:.4f}" for name in shown))


if __name__ == "__main__":
    run_stage(main)
