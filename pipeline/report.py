"""Stage `report`: every dataset's sweep (results/<dataset>/) -> reports/summary.md, robustness.png, plots/."""

from pathlib import Path

import yaml

from robustmm.report import write_report


def main() -> None:
    params = yaml.safe_load(Path("params.yaml").read_text(encoding="utf-8"))
    tables = {name: f"results/{name}/results.csv" for name in params["datasets"]}
    write_report(tables, params["report"]["metrics"], "reports")


if __name__ == "__main__":
    main()
