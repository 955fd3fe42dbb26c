"""Stage `import_avec2019@<name>`: an AVEC2019 DDS (E-DAIC) download -> data/<name>.pkl.

AVEC2019 ships per-participant feature files instead of video, so this import replaces extract + assemble
for it. The folder is `import_avec2019.datasets.<name>`; the other keys of that section are the settings
of robustmm.avec2019.import_avec2019 (docs/avec2019.md).
"""

import sys

from robustmm.avec2019 import import_avec2019
from robustmm.config import read_config_section


def main(name: str) -> None:
    settings = dict(read_config_section("params.yaml", "import_avec2019"))
    folder = settings.pop("datasets")[name]
    settings["statistics"] = tuple(settings["statistics"])
    report = import_avec2019(folder, f"data/{name}.pkl", **settings)
    print(report.summary())


if __name__ == "__main__":
    main(*sys.argv[1:])
