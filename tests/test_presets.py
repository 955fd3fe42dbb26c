import pytest

from robustmm import cli, data, presets


def test_published_presets():
    mosi, mosei, sims, simsv2, avec = (presets.get_preset(name) for name in ("mosi", "mosei", "sims", "simsv2", "avec2019"))
    assert mosi.seq_lens == (50, 375, 500) and mosi.feature_dims == (768, 5, 20)
    assert mosei.seq_lens == (50, 500, 500) and mosei.feature_dims == (768, 74, 35)
    assert sims.seq_lens == (39, 400, 55) and sims.feature_dims == (768, 33, 709)
    assert simsv2.seq_lens == (50, 925, 232) and simsv2.feature_dims == (768, 25, 177)
    assert mosi.missing_rates == tuple(round(0.1 * i, 1) for i in range(11))
    assert sims.missing_rates == simsv2.missing_rates == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
    assert mosi.seeds == (111, 1111, 11111)
    assert (mosi.metric_family, sims.metric_family, avec.metric_family) == ("mosi", "sims", "avec")
    assert (mosi.language, sims.language) == ("en", "zh")
    assert sims.text_encoder == "bert-base-chinese" and mosei.text_encoder == "bert-base-uncased"
    assert mosi.tfr_net.recon_weights == (5.0, 2.0, 20.0)
    assert mosei.tfr_net.recon_weights == (5e-6, 2e-6, 2e-5)
    assert sims.tfr_net.recon_weights == (1.0, 0.01, 1e-4) and sims.tfr_net.batch_size == 16
    assert mosi.tfr_net.batch_size == 24 and mosi.tfr_net.grad_clip == 0.8 and mosi.tfr_net.early_stop == 6
    assert simsv2.notes and avec.notes  # settings that are ours, not upstream's, say so
    assert avec.label_range == (0.0, 24.0) and avec.key_metrics == ("CCC", "RMSE", "MAE")


def test_custom_preset_and_overrides():
    custom = presets.custom_preset("mydata", seq_lens=(30, 100, 80), feature_dims=(384, 33, 58), language="zh", batch_size=8)
    assert custom.text_encoder == "bert-base-chinese" and custom.tfr_net.batch_size == 8
    assert custom.missing_rates[-1] == 1.0
    assert presets.get_preset("mosi").with_tfr_net(batch_size=4).tfr_net.batch_size == 4
    with pytest.raises(ValueError, match="unknown metric family"):
        presets.custom_preset("x", seq_lens=(1, 1, 1), feature_dims=(1, 1, 1), metric_family="iemocap")


def test_unknown_dataset_names_the_choices():
    with pytest.raises(ValueError, match="unknown dataset 'iemocap': choose one of avec2019, custom, mosei, mosi, sims, simsv2"):
        presets.get_preset("iemocap")


def test_make_synthetic_command(tmp_path, capsys):
    out = tmp_path / "sims.pkl"
    assert cli.main(["make-synthetic", "--dataset", "sims", "--out", str(out), "--sizes", "3,2,2"]) == 0
    loaded = data.load(out)
    assert loaded["train"]["audio"].shape == (3, 400, 33) and loaded["test"]["vision"].shape == (2, 55, 709)
    assert cli.main(["make-synthetic", "--dataset", "nope", "--out", str(out)]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err
