import math
import warnings

import numpy as np
import pytest

from robustmm import metrics


def test_mosi_metrics_hand_computed():
    y_true = np.array([-3.0, -1.0, 0.0, 0.0, 1.5, 2.5])
    y_pred = np.array([-2.6, 0.4, -0.2, 0.0, 1.4, 3.7])
    result = metrics.compute("mosi", y_pred, y_true)
    assert list(result) == [
        "Has0_acc_2",
        "Has0_F1_score",
        "Non0_acc_2",
        "Non0_F1_score",
        "Mult_acc_5",
        "Mult_acc_7",
        "MAE",
        "Corr",
    ]
    # Has0: pred >= 0 vs true >= 0 -> [F,T,F,T,T,T] vs [F,F,T,T,T,T]: 4 of 6 agree.
    assert result["Has0_acc_2"] == pytest.approx(4 / 6)
    # Non0 drops the two zero labels: pred > 0 [F,T,T,T] vs true > 0 [F,F,T,T]: 3 of 4.
    assert result["Non0_acc_2"] == pytest.approx(3 / 4)
    # Acc-7: round(clip(., -3, 3)) half to even: pred [-3, 0, -0, 0, 1, 3] true [-3, -1, 0, 0, 2, 2].
    assert result["Mult_acc_7"] == pytest.approx(3 / 6)
    # Acc-5: clip to 2: pred [-2, 0, 0, 0, 1, 2] true [-2, -1, 0, 0, 2, 2].
    assert result["Mult_acc_5"] == pytest.approx(4 / 6)
    assert result["MAE"] == pytest.approx(np.mean(np.abs(y_pred - y_true)))  # unclipped
    assert result["Corr"] == pytest.approx(np.corrcoef(y_pred, y_true)[0, 1])


def test_half_to_even_rounding_at_2_5():
    # 2.5 rounds to 2 (not 3), so a prediction of 2.5 matches a label of 2.0 under Acc-7.
    assert metrics.compute("mosi", [2.5, -2.5], [2.0, -2.0])["Mult_acc_7"] == 1.0
    assert metrics.compute("mosi", [2.5, 3.5], [3.0, 4.0])["Mult_acc_7"] == 0.5  # 3.5 -> 4 -> clipped first: 3


def test_clipping_before_rounding():
    result = metrics.compute("mosi", [5.0, -9.0], [3.0, -3.0])
    assert result["Mult_acc_7"] == 1.0 and result["Mult_acc_5"] == 1.0
    assert result["MAE"] == pytest.approx(4.0)


def test_weighted_f1_argument_order_is_true_then_pred():
    from sklearn.metrics import f1_score

    y_true = np.array([1.0, 1.0, 1.0, 1.0, -1.0, -1.0])
    y_pred = np.array([1.0, -1.0, -1.0, -1.0, -1.0, -1.0])
    expected = f1_score(y_true >= 0, y_pred >= 0, average="weighted")
    swapped = f1_score(y_pred >= 0, y_true >= 0, average="weighted")
    assert expected != pytest.approx(swapped)
    assert expected == pytest.approx(0.457142857)
    assert metrics.compute("mosi", y_pred, y_true)["Has0_F1_score"] == pytest.approx(expected)


def test_sims_bin_edges_are_right_closed():
    edges = np.array([-0.7, -0.1, 0.0, 0.1, 0.7])
    assert metrics.sims_classes(edges, 2).tolist() == [0, 0, 0, 1, 1]
    assert metrics.sims_classes(edges, 3).tolist() == [0, 0, 1, 1, 2]
    assert metrics.sims_classes(edges, 5).tolist() == [0, 1, 2, 2, 3]
    # float32 edges compare in float32, as upstream does: 0.1f is neutral.
    assert metrics.sims_classes(np.float32([0.1, -0.1]), 3).tolist() == [1, 0]


def test_sims_metrics_clip_first():
    y_true = np.array([-1.0, -0.4, 0.0, 0.2, 0.8])
    y_pred = np.array([-1.6, -0.05, 0.1, 0.6, 2.0])
    result = metrics.compute("sims", y_pred, y_true)
    assert list(result) == ["Mult_acc_2", "Mult_acc_3", "Mult_acc_5", "F1_score", "MAE", "Corr"]
    clipped = np.clip(y_pred, -1, 1)
    # 2 classes: pred [0,0,1,1,1] true [0,0,0,1,1]
    assert result["Mult_acc_2"] == pytest.approx(4 / 5)
    # 3 classes: pred [0,1,1,2,2] true [0,0,1,2,2]
    assert result["Mult_acc_3"] == pytest.approx(4 / 5)
    # 5 classes: pred [0,2,2,3,4] true [0,1,2,3,4]
    assert result["Mult_acc_5"] == pytest.approx(4 / 5)
    assert result["MAE"] == pytest.approx(np.mean(np.abs(clipped - y_true)))
    assert result["Corr"] == pytest.approx(np.corrcoef(clipped, y_true)[0, 1])


def test_avec_metrics():
    y_true = np.array([0.0, 4.0, 10.0, 20.0])
    y_pred = np.array([2.0, 4.0, 8.0, 14.0])
    result = metrics.compute("avec", y_pred, y_true)
    assert list(result) == ["CCC", "RMSE", "MAE"]
    mean_p, mean_t = y_pred.mean(), y_true.mean()
    ccc = 2 * np.mean((y_pred - mean_p) * (y_true - mean_t)) / (y_pred.var() + y_true.var() + (mean_p - mean_t) ** 2)
    assert result["CCC"] == pytest.approx(ccc)
    assert result["RMSE"] == pytest.approx(np.sqrt(np.mean([4, 0, 4, 36])))
    assert result["MAE"] == pytest.approx(2.5)
    assert metrics.compute("avec", y_true, y_true)["CCC"] == pytest.approx(1.0)


def test_constant_predictions_give_nan_with_warning():
    with pytest.warns(RuntimeWarning, match="Corr"):
        result = metrics.compute("mosi", np.zeros(4), np.array([-1.0, 0.5, 1.0, 2.0]))
    assert math.isnan(result["Corr"])
    assert result["MAE"] == pytest.approx(1.125)
    with pytest.warns(RuntimeWarning, match="CCC"):
        assert math.isnan(metrics.compute("avec", np.ones(3), np.ones(3))["CCC"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert metrics.compute("avec", np.ones(3), np.array([0.0, 1.0, 2.0]))["CCC"] == 0.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown metric family"):
        metrics.compute("iemocap", [1.0], [1.0])
    with pytest.raises(ValueError, match="2 predictions for 3 labels"):
        metrics.compute("mosi", [1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="finite"):
        metrics.compute("mosi", [np.nan, 2.0], [1.0, 2.0])


def test_auilc_on_known_curve():
    rates = np.round(np.arange(0, 1.01, 0.1), 1)
    assert metrics.auilc(rates, 1.0 - rates) == pytest.approx(0.5)  # a line from 1 to 0 over width 1
    assert metrics.auilc([0.0, 0.1, 0.2, 0.3, 0.4, 0.5], [0.4] * 6) == pytest.approx(0.2)  # SIMS width 0.5
    assert metrics.auilc([0.0, 0.5, 1.0], [1.0, 0.0, 1.0]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="increasing"):
        metrics.auilc([0.0, 0.2, 0.1], [1, 2, 3])
    with pytest.raises(ValueError, match="same number"):
        metrics.auilc([0.0, 0.1], [1.0])


def test_aggregate_mean_and_population_std():
    summary = metrics.aggregate([{"MAE": 1.0, "Corr": 0.5}, {"MAE": 3.0, "Corr": 0.7}])
    assert summary["MAE"] == {"mean": 2.0, "std": 1.0}
    assert summary["Corr"]["mean"] == pytest.approx(0.6)
