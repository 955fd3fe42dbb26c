"""Stage `sweep@<dataset>`: the missing-rate sweep on datasets.<dataset>.data -> results/<dataset>/.

One TFR-Net per (rate, seed) with the settings of the `sweep` section: the keyword arguments of
robustmm.experiments.sweep, and `torch_threads` (CPU threads for PyTorch; null = its default).
Writes results.csv (one row per run), metrics.json (mean/std per rate and AUILC), robustness.csv and
robustness.png, and runs/ (each run's result; checkpoints are not kept).
"""

import sys

import torch

from robustmm.config import read_config_section
from robustmm.experiments import sweep


def main(dataset: str) -> None:
    entry = read_config_section("params.yaml", f"datasets.{dataset}")
    settings = dict(read_config_section("params.yaml", "sweep"))
    threads = settings.pop("torch_threads")
    if threads:
        torch.set_num_threads(threads)
    sweep(
        entry["data"],
        entry["preset"],
        text_encoder=entry.get("text_encoder"),
        out=f"results/{dataset}",
        keep_models=False,
        **settings,
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
