"""Published TFR-Net and EMT-DLFR numbers (SPEC section 8) and the measured numbers they may stand beside.

A published number is shown next to a run's only where both were made the same way: the preset's dataset,
the per-rate protocol (one model trained and tested per rate, the same rate on every split) with i.i.d.
token/frame drops and fixed per-modality missing seeds, and, for an AUILC, the paper's whole grid (MOSI rates
0.0..1.0, SIMS 0.0..0.5, step 0.1). The SPEC's single "Acc-2" is compared with robustmm's negative /
non-negative accuracy (MOSI `Has0_acc_2`, SIMS `Mult_acc_2`), converted from percent to a fraction.
"""

from __future__ import annotations

from dataclasses import dataclass

TFR_NET_SOURCE = (
    "Yuan, Li, Xu, Yu: Transformer-based Feature Reconstruction Network for Robust Multimodal "
    "Sentiment Analysis, ACM Multimedia 2021"
)
EMT_DLFR_SOURCE = (
    "Sun, Lian, Liu, Tao: Efficient Multimodal Transformer with Dual-Level Feature Restoration for "
    "Robust Multimodal Sentiment Analysis, IEEE Transactions on Affective Computing 2023"
)
SYSTEMS = {
    "TFR-Net (paper)": TFR_NET_SOURCE,
    "TFR-Net (re-run by the EMT-DLFR authors)": EMT_DLFR_SOURCE,
    "EMT-DLFR": EMT_DLFR_SOURCE,
}
PROTOCOL = (
    "one model trained and tested per missing rate (the same rate on train, valid and test), i.i.d. "
    "token/frame drops with fixed per-modality missing seeds; AUILC: trapezoid area of the metric over "
    "the whole grid, r = 0 included (MOSI rates 0.0..1.0, SIMS 0.0..0.5, step 0.1)"
)
AUILC, COMPLETE = "AUILC", "r=0"
# The grids the published AUILCs were computed over, per preset.
PUBLISHED_GRIDS = {
    "mosi": tuple(round(0.1 * step, 1) for step in range(11)),
    "sims": tuple(round(0.1 * step, 1) for step in range(6)),
}


@dataclass(frozen=True)
class Published:
    system: str
    dataset: str  # preset name
    summary: str  # AUILC or COMPLETE (the model trained and tested at rate 0)
    metric: str  # robustmm's metric name
    value: float  # on robustmm's scale (accuracies as fractions)


def _rows(system: str, dataset: str, summary: str, values: dict[str, float]) -> list[Published]:
    return [Published(system, dataset, summary, metric, value) for metric, value in values.items()]


PUBLISHED = (
    *_rows("TFR-Net (paper)", "mosi", AUILC, {"MAE": 1.155, "Corr": 0.467, "Has0_acc_2": 0.690}),
    *_rows(
        "TFR-Net (re-run by the EMT-DLFR authors)", "mosi", AUILC, {"MAE": 1.156, "Corr": 0.452, "Has0_acc_2": 0.678}
    ),
    *_rows("EMT-DLFR", "mosi", AUILC, {"MAE": 1.106, "Corr": 0.486, "Has0_acc_2": 0.703}),
    *_rows("TFR-Net (paper)", "sims", AUILC, {"MAE": 0.237, "Corr": 0.253, "Mult_acc_2": 0.377}),
    *_rows(
        "TFR-Net (re-run by the EMT-DLFR authors)", "sims", AUILC, {"MAE": 0.236, "Corr": 0.253, "Mult_acc_2": 0.373}
    ),
    *_rows("EMT-DLFR", "sims", AUILC, {"MAE": 0.215, "Corr": 0.287, "Mult_acc_2": 0.384}),
    *_rows("TFR-Net (paper)", "mosi", COMPLETE, {"MAE": 0.754, "Has0_acc_2": 0.841}),
    *_rows("EMT-DLFR", "mosi", COMPLETE, {"MAE": 0.705, "Has0_acc_2": 0.850}),
)


def comparable(info: dict | None, rates) -> tuple[dict[str, list[Published]], str]:
    """The published numbers a sweep's may stand beside, by summary (AUILC, r=0), and, where some are left
    out, why. `info` is the sweep's run_info.json, `rates` the rates it swept."""
    if info is None:
        return {}, "no run_info.json beside the results, so their protocol is unknown"
    dataset = info["dataset"]
    published = [entry for entry in PUBLISHED if entry.dataset == dataset]
    if not published:
        return {}, (
            f"the {dataset} preset has no published numbers in SPEC section 8 (MOSI and SIMS only)"
            if dataset != "custom"
            else "a custom dataset is none of the published ones (SPEC section 8: MOSI, SIMS)"
        )
    protocol, pattern = info["protocol"], info.get("missing", {"pattern": "iid"})["pattern"]
    if protocol.get("name", "per_rate") != "per_rate":
        return (
            {},
            f"this sweep used the {protocol['name']} protocol; the published numbers are per-rate models ({PROTOCOL})",
        )
    if protocol["missing_seeds"] == "per_training_seed":
        return {}, "this sweep drew its masks with each training seed; the published protocol fixes them per modality"
    found, reasons = {}, []
    if pattern != "iid":
        reasons.append(f"AUILC left out: its rates are of the {pattern} pattern, the published ones of i.i.d. drops")
    elif tuple(round(rate, 9) for rate in rates) != PUBLISHED_GRIDS[dataset]:
        reasons.append(
            f"AUILC left out: this sweep's grid {list(rates)} is not the published one {list(PUBLISHED_GRIDS[dataset])}"
        )
    else:
        found[AUILC] = [entry for entry in published if entry.summary == AUILC]
    complete = [entry for entry in published if entry.summary == COMPLETE]
    if complete and 0.0 in rates:
        found[COMPLETE] = complete
    elif complete:
        reasons.append("r=0 left out: rate 0 was not swept")
    return found, "; ".join(reasons)
