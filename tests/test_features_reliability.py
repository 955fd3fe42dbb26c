"""Nothing lost, nothing silently wrong in extraction: crashed workers, the numba cache, damaged cache entries,
rotated videos, truncation, stale transcripts, bad settings."""

import pytest

from robustmm.cli import main
from robustmm.features.base import create_extractor


@pytest.mark.parametrize(("name", "config", "message"), [
    ("mediapipe", {"fps": -1}, "extractor 'mediapipe': config fps = -1 must be greater than 0"),
    ("mediapipe", {"fps": 0}, "fps = 0 must be greater than 0"),
    ("mediapipe", {"fps": "ten"}, "fps = 'ten' must be a finite number"),
    ("mediapipe", {"min_detection_confidence": 1.5}, "min_detection_confidence = 1.5 must be within \\[0, 1\\]"),
    ("openface", {"feature_set": "au"}, "feature_set = 'au' must be one of all, au_pose"),
    ("openface", {"fps": -2.0}, "fps = -2.0 must be greater than 0"),
    ("librosa", {"sample_rate": 0}, "sample_rate = 0 must be greater than 0"),
    ("librosa", {"hop_length": 12.5}, "hop_length = 12.5 must be an integer"),
    ("mfcc", {"delta_orders": [1, "two"]}, "delta_orders = \\[1, 'two'\\] must be a list of int values"),
    ("mfcc", {"hop_seconds": -0.01}, "hop_seconds = -0.01 must be greater than 0"),
    ("opensmile", {"sample_rate": -16000}, "sample_rate = -16000 must be greater than 0"),
    ("bert", {"max_length": 0}, "max_length = 0 must be greater than 0"),
    ("bert", {"batch_size": True}, "batch_size = True must be an integer"),
])
def test_extractor_configs_are_checked_with_key_value_and_what_is_allowed(name, config, message):
    with pytest.raises(ValueError, match=message):
        create_extractor(name, config)


def test_the_cli_refuses_a_negative_fps_before_any_work(tmp_path, capsys):
    dataset = tmp_path / "absent"  # not even read: the settings are checked first
    assert main(["extract", "--dataset", str(dataset), "--vision", "mediapipe", "--fps", "-5",
                 "--cache-dir", str(tmp_path / "cache"), "--output-dir", str(tmp_path / "out")]) == 2
    assert "extractor 'mediapipe': config fps = -5.0 must be greater than 0" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()
