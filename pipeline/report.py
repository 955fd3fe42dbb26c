"""Stage `report`: every dataset's sweep (results/<dataset>/) -> reports/summary.md and reports/robustness.png."""

import yaml

from robustmm.presets import get_preset
from robustmm.report import write_report


def main() -> None:
    params = yaml.safe_load(open("params.yaml", encoding="utf-8"))
    shown = params["report"]["metrics"]
    families = {name: get_preset(entry["preset"]).metric_family for name, entry in params["datasets"].items()}
    write_report(
        {name: f"results/{name}/runs.csv" for name in params["datasets"]},
        {name: shown[family] for name, family in families.items()},
        "reports",
    )


if __name__ == "__main__":
    main()
