"""Stage `import_avec2019@<name>`: an AVEC2019 DDS (E-DAIC) download -> data/<name>.pkl.

AVEC2019 ships per-participant feature files instead of video, so this import replaces extract + assemble
for it. The folder is `import_avec2019.datasets.<name>`; the other keys of that section are the settings
of robustmm.avec2019.import_avec2019 (docs/avec2019.md).
"""

from robustmm.avec2019 import import_avec2019
from robustmm.errors import run_stage
from robustmm.settings import load_params, stage_argument


def main(name: str) -> None:
    settings = load_params().import_avec2019
    stage_argument("import_avec2019.datasets", name, settings.datasets)
    report = import_avec2019(settings.datasets[name], f"data/{name}.pkl", **settings.import_arguments())
    print(report.summary())


if __name__ == "__main__":
    run_stage(main)
