"""Stage `corrupt@<name>`: raw/<dataset>/ -> raw/<name>/, every clip with the noise of `corruptions.<name>`.

The corrupted copy has the raw layout, so the extract and assemble stages treat it as any dataset (list <name>
in extract.datasets); its clips are new content, so the feature cache extracts them afresh.
"""

from robustmm.corruption.clips import corrupt_dataset
from robustmm.corruption.noises import create_noise
from robustmm.errors import run_stage
from robustmm.settings import load_params, stage_argument


def main(name: str) -> None:
    corruptions = load_params().corruptions
    stage_argument("corruptions", name, corruptions)
    entry = corruptions[name]
    noise = create_noise(entry.noise, entry.level, entry.options)
    summary = corrupt_dataset(f"raw/{entry.dataset}", noise, entry.seed, f"raw/{name}", progress=False)
    print(
        f"{name}: {summary['clips']} clips of raw/{entry.dataset} with {noise.name} at level {noise.level:g}"
        + (f", {len(summary['unchanged'])} without that stream copied unchanged" if summary["unchanged"] else "")
    )


if __name__ == "__main__":
    run_stage(main)
