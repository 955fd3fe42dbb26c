"""Stage `sweep@<dataset>`: the missing-rate sweep on datasets.<dataset>.data -> results/<dataset>/.

One TFR-Net per (rate, seed) with the settings of the `sweep` section: the keyword arguments of
robustmm.experiments.sweep, run on the executor it names (`sweep.executor`: local or ray).
Writes results.csv (one row per run), metrics.json (mean/std per rate and AUILC), robustness.csv and
robustness.png, curves/ (every run's per-epoch training curves, drawn by `dvc plots show`), and runs/ (each run's
result and DVCLive log; checkpoints are not kept).
"""

from robustmm.errors import run_stage
from robustmm.experiments import sweep
from robustmm.settings import load_params, stage_argument


def main(dataset: str) -> None:
    params = load_params()
    stage_argument("datasets", dataset, params.datasets)
    entry = params.datasets[dataset]
    sweep(
        entry.data,
        entry.preset,
        text_encoder=entry.text_encoder,
        out=f"results/{dataset}",
        keep_models=False,
        **params.sweep.sweep_arguments(),
    )


if __name__ == "__main__":
    run_stage(main)
