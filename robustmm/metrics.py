"""The community's evaluation metrics (SPEC section 7), AUILC and aggregation over seeds.

Values are returned unrounded (upstream rounds to 4 decimals before averaging; we round only for display).
"""

from __future__ import annotations

import warnings

import numpy as np

FAMILIES = ("mosi", "sims", "avec")


def _flat(values) -> np.ndarray:
    # Float inputs keep their dtype so that SIMS bin edges compare as upstream does (0.1 in float32 is neutral).
    values = np.asarray(values).reshape(-1)
    return values if np.issubdtype(values.dtype, np.floating) else values.astype(np.float64)


def _multiclass_acc(y_pred: np.ndarray, y_true: np.ndarray) -> float:
    # np.round rounds half to even, as upstream does: 2.5 -> 2, -0.5 -> -0.
    return float(np.mean(np.round(y_pred) == np.round(y_true)))


def _accuracy(y_pred: np.ndarray, y_true: np.ndarray) -> float:
    return float(np.mean(y_pred == y_true)) if len(y_true) else float("nan")


def _pearson(y_pred: np.ndarray, y_true: np.ndarray) -> float:
    if np.std(y_pred) == 0 or np.std(y_true) == 0:
        warnings.warn(
            "Corr is undefined for constant predictions or labels; reporting NaN", RuntimeWarning, stacklevel=3
        )
        return float("nan")
    return float(np.corrcoef(y_pred, y_true)[0, 1])


def _weighted_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    if len(y_true) == 0:
        return float("nan")
    # Imported here: scikit-learn takes a second to import, and the settings schema (every stage) imports this module.
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, average="weighted", zero_division=0))


def _mosi(y_pred: np.ndarray, y_true: np.ndarray) -> dict[str, float]:
    non_zero = y_true != 0
    return {
        "Has0_acc_2": _accuracy(y_pred >= 0, y_true >= 0),
        "Has0_F1_score": _weighted_f1(y_true >= 0, y_pred >= 0),
        "Non0_acc_2": _accuracy(y_pred[non_zero] > 0, y_true[non_zero] > 0),
        "Non0_F1_score": _weighted_f1(y_true[non_zero] > 0, y_pred[non_zero] > 0),
        "Mult_acc_5": _multiclass_acc(np.clip(y_pred, -2, 2), np.clip(y_true, -2, 2)),
        "Mult_acc_7": _multiclass_acc(np.clip(y_pred, -3, 3), np.clip(y_true, -3, 3)),
        "MAE": float(np.mean(np.abs(y_pred - y_true))),
        "Corr": _pearson(y_pred, y_true),
    }


# Right-closed bins on labels clipped to [-1, 1]: 0.0 is negative, 0.1 neutral, 0.7 weakly positive.
SIMS_EDGES = {2: (0.0,), 3: (-0.1, 0.1), 5: (-0.7, -0.1, 0.1, 0.7)}


def sims_classes(values: np.ndarray, num_classes: int) -> np.ndarray:
    return np.searchsorted(np.asarray(SIMS_EDGES[num_classes], dtype=values.dtype), values, side="left")


def _sims(y_pred: np.ndarray, y_true: np.ndarray) -> dict[str, float]:
    y_pred = np.clip(y_pred, -1, 1)
    y_true = np.clip(y_true, -1, 1)
    pred2, true2 = sims_classes(y_pred, 2), sims_classes(y_true, 2)
    return {
        "Mult_acc_2": _accuracy(pred2, true2),
        "Mult_acc_3": _accuracy(sims_classes(y_pred, 3), sims_classes(y_true, 3)),
        "Mult_acc_5": _accuracy(sims_classes(y_pred, 5), sims_classes(y_true, 5)),
        "F1_score": _weighted_f1(true2, pred2),
        "MAE": float(np.mean(np.abs(y_pred.astype(np.float64) - y_true))),
        "Corr": _pearson(y_pred.astype(np.float64), y_true.astype(np.float64)),
    }


def concordance_correlation(y_pred: np.ndarray, y_true: np.ndarray) -> float:
    """Lin's CCC with population moments over all samples (the AVEC challenge's definition)."""
    mean_pred, mean_true = y_pred.mean(), y_true.mean()
    covariance = np.mean((y_pred - mean_pred) * (y_true - mean_true))
    denominator = y_pred.var() + y_true.var() + (mean_pred - mean_true) ** 2
    if denominator == 0:
        warnings.warn(
            "CCC is undefined for identical constant predictions and labels; reporting NaN",
            RuntimeWarning,
            stacklevel=3,
        )
        return float("nan")
    return float(2 * covariance / denominator)


def _avec(y_pred: np.ndarray, y_true: np.ndarray) -> dict[str, float]:
    return {
        "CCC": concordance_correlation(y_pred, y_true),
        "RMSE": float(np.sqrt(np.mean((y_pred - y_true) ** 2))),
        "MAE": float(np.mean(np.abs(y_pred - y_true))),
    }


_COMPUTE = {"mosi": _mosi, "sims": _sims, "avec": _avec}


def compute(family: str, y_pred, y_true) -> dict[str, float]:
    """Metrics of `family` ("mosi" for MOSI/MOSEI, "sims" for SIMS/SIMS v2, "avec" for AVEC2019 PHQ-8)."""
    if family not in _COMPUTE:
        raise ValueError(f"unknown metric family {family!r}: choose one of {', '.join(FAMILIES)}")
    y_pred, y_true = _flat(y_pred), _flat(y_true)
    if not (np.all(np.isfinite(y_pred)) and np.all(np.isfinite(y_true))):
        raise ValueError("predictions and labels must be finite")
    if y_pred.shape != y_true.shape:
        raise ValueError(f"{len(y_pred)} predictions for {len(y_true)} labels")
    if len(y_true) == 0:
        raise ValueError("no samples to evaluate")
    if family != "sims":
        y_pred, y_true = y_pred.astype(np.float64), y_true.astype(np.float64)
    return _COMPUTE[family](y_pred, y_true)


def auilc(rates, values) -> float:
    """Area under the indicator line chart: trapezoid area of a metric over the missing-rate grid."""
    rates, values = _flat(rates).astype(np.float64), _flat(values).astype(np.float64)
    if len(rates) != len(values) or len(rates) < 2:
        raise ValueError("AUILC needs the same number (at least 2) of rates and values")
    if np.any(np.diff(rates) <= 0):
        raise ValueError(f"AUILC needs strictly increasing rates, got {rates.tolist()}")
    return float(np.sum((rates[1:] - rates[:-1]) * (values[1:] + values[:-1]) / 2))


def aggregate(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and (population, as MMSA reports) standard deviation of each metric over seeds."""
    if not runs:
        raise ValueError("no runs to aggregate")
    return {
        name: {"mean": float(np.mean([run[name] for run in runs])), "std": float(np.std([run[name] for run in runs]))}
        for name in runs[0]
    }
