"""Stage `report`: every dataset's sweep (results/<dataset>/) -> reports/summary.md, robustness.png, plots/."""

from robustmm.errors import run_stage
from robustmm.report import write_report
from robustmm.settings import load_params


def main() -> None:
    params = load_params()
    tables = {name: f"results/{name}/results.csv" for name in params.datasets}
    write_report(tables, params.report.metrics, "reports")


if __name__ == "__main__":
    run_stage(main)
