"""Stage `report`: every dataset's sweep (results/<dataset>/) -> reports/summary.md, robustness.png, plots/."""

from robustmm.config import read_config_section
from robustmm.report import write_report


def main() -> None:
    tables = {name: f"results/{name}/results.csv" for name in read_config_section("params.yaml", "datasets")}
    write_report(tables, read_config_section("params.yaml", "report.metrics"), "reports")


if __name__ == "__main__":
    main()
