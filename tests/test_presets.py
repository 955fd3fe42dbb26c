import dataclasses

import pytest

from robustmm import cli, data, presets
from robustmm.presets import TFRNetParams

# The upstream files, read by hand (docs/training.md names them): values that differ from TFRNetParams().
# thuiar/TFR-Net config/config_regression.py has no weight_sim_loss (its Storage reads a missing key as
# False: CMD off) and models/missingTask/TFR_NET/alignment.py writes 25 reconstruction heads; EMT-DLFR's
# alignment.py writes 1. MMSA 2.2.1 src/MMSA/config/config_regression.json gives both in its tfr_net entries.
SIMS_REPO = dict(
    relu_dropout=0.0,
    embed_dropout=0.1,
    nlevels=2,
    cls_dropout=0.1,
    batch_size=16,
    recon_weights=(1.0, 0.01, 1e-4),
    patience=10,
)
UPSTREAM = {
    ("mosi", "tfr-net"): dict(
        learning_rate_bert=1e-5, learning_rate_other=2e-3, weight_sim_loss=0.0, num_temporal_head=25
    ),
    ("mosi", "mmsa"): dict(
        learning_rate_bert=2e-6, learning_rate_other=1e-3, weight_sim_loss=5.0, num_temporal_head=25
    ),
    ("mosi", "emt-dlfr"): dict(batch_size=16, learning_rate_other=2e-3, weight_sim_loss=0.0, num_temporal_head=1),
    ("mosei", "mmsa"): dict(
        learning_rate_bert=1e-5,
        learning_rate_other=2e-3,
        recon_weights=(5e-6, 2e-6, 2e-5),
        weight_sim_loss=5.0,
        num_temporal_head=25,
    ),
    ("mosei", "emt-dlfr"): dict(
        batch_size=16,
        learning_rate_other=2e-3,
        recon_weights=(5.0, 2.0, 20.0),
        weight_sim_loss=0.0,
        num_temporal_head=1,
    ),
    ("sims", "tfr-net"): dict(
        SIMS_REPO, learning_rate_bert=1e-5, learning_rate_other=2e-3, weight_sim_loss=0.0, num_temporal_head=25
    ),
    ("sims", "mmsa"): dict(
        SIMS_REPO, learning_rate_bert=1e-5, learning_rate_other=2e-3, weight_sim_loss=5.0, num_temporal_head=25
    ),
    ("sims", "emt-dlfr"): dict(SIMS_REPO, learning_rate_other=2e-3, weight_sim_loss=0.0, num_temporal_head=1),
}
# Shared by every upstream configuration of TFR-Net.
SHARED = dict(
    common_dim=30,
    num_heads=6,
    conv_kernels=(1, 5, 3),
    intra_layers=3,
    attn_dropout=(0.2, 0.1, 0.0),
    res_dropout=0.2,
    text_dropout=0.2,
    fusion_hidden=(36, 20, 48),
    fusion_gru_layers=3,
    fusion_dropout=0.2,
    cls_hidden_dim=128,
    weight_decay_bert=1e-4,
    weight_decay_other=1e-3,
    grad_clip=0.8,
    early_stop=6,
    update_epochs=4,
    max_epochs=None,
    patience=5,
)


@pytest.mark.parametrize("dataset, source", sorted(UPSTREAM))
def test_every_setting_equals_the_named_upstream_configuration(dataset, source):
    preset = presets.get_preset(dataset, source)
    assert preset.preset_source == source
    expected = {**SHARED, **UPSTREAM[(dataset, source)]}
    for name in ("relu_dropout", "embed_dropout", "nlevels", "cls_dropout"):
        expected.setdefault(name, {"relu_dropout": 0.2, "embed_dropout": 0.2, "nlevels": 3, "cls_dropout": 0.0}[name])
    expected.setdefault("batch_size", 24)
    expected.setdefault("recon_weights", (5.0, 2.0, 20.0))
    expected.setdefault("learning_rate_bert", 1e-5)
    assert set(expected) == {field.name for field in dataclasses.fields(TFRNetParams)}
    assert dataclasses.asdict(preset.tfr_net) == expected


def test_the_default_source_is_named_and_a_missing_one_is_refused():
    assert presets.get_preset("mosi").tfr_net == presets.get_preset("mosi", "tfr-net").tfr_net
    assert presets.get_preset("mosei").tfr_net == presets.get_preset("mosei", "mmsa").tfr_net
    assert presets.get_preset("sims").tfr_net == presets.get_preset("sims", "tfr-net").tfr_net
    assert presets.get_preset("simsv2", "emt-dlfr").tfr_net == presets.get_preset("sims", "emt-dlfr").tfr_net
    with pytest.raises(
        ValueError, match="tfr-net has no TFR-Net configuration for mosei: choose one of mmsa, emt-dlfr"
    ):
        presets.get_preset("mosei", "tfr-net")
    with pytest.raises(ValueError, match="unknown preset source 'mult'"):
        presets.get_preset("mosi", "mult")
    with pytest.raises(ValueError, match="avec2019 has no upstream TFR-Net configuration"):
        presets.get_preset("avec2019", "mmsa")


def test_overrides_by_name_are_typed_and_unknown_names_get_a_suggestion():
    params = presets.override_tfr_net(
        TFRNetParams(), {"learning_rate_other": "1e-3", "recon_weights": "1,1,1", "nlevels": 2.0}
    )
    assert params.learning_rate_other == 1e-3 and params.recon_weights == (1.0, 1.0, 1.0) and params.nlevels == 2
    assert presets.override_tfr_net(TFRNetParams(), {"max_epochs": 3}).max_epochs == 3
    with pytest.raises(
        ValueError, match="unknown TFR-Net setting 'learning_rate_othr' \\(did you mean learning_rate_other\\?\\)"
    ):
        presets.override_tfr_net(TFRNetParams(), {"learning_rate_othr": 1e-3})
    with pytest.raises(ValueError, match="'weight_gen_loss' \\(did you mean recon_weights\\?\\)"):
        presets.override_tfr_net(TFRNetParams(), {"weight_gen_loss": [1, 1, 1]})
    with pytest.raises(ValueError, match="nlevels=2.5 is not an integer"):
        presets.override_tfr_net(TFRNetParams(), {"nlevels": 2.5})
    with pytest.raises(ValueError, match="recon_weights='1,1' is not 3 comma-separated numbers"):
        presets.override_tfr_net(TFRNetParams(), {"recon_weights": "1,1"})


def test_published_presets():
    mosi, mosei, sims, simsv2, avec = (
        presets.get_preset(name) for name in ("mosi", "mosei", "sims", "simsv2", "avec2019")
    )
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
    assert (mosi.preset_source, mosei.preset_source, sims.preset_source, avec.preset_source) == (
        "tfr-net",
        "mmsa",
        "tfr-net",
        "robustmm",
    )
    assert simsv2.notes and avec.notes  # settings that are ours, not upstream's, say so
    assert avec.label_range == (0.0, 24.0) and avec.key_metrics == ("CCC", "RMSE", "MAE")


def test_custom_preset_and_overrides():
    custom = presets.custom_preset(
        "mydata", seq_lens=(30, 100, 80), feature_dims=(384, 33, 58), language="zh", batch_size=8
    )
    assert custom.text_encoder == "bert-base-chinese" and custom.tfr_net.batch_size == 8
    assert dataclasses.replace(custom.tfr_net, batch_size=24) == presets.get_preset("mosi").tfr_net  # MOSI's settings
    emt = presets.custom_preset("mydata", seq_lens=(30, 100, 80), feature_dims=(384, 33, 58), preset_source="emt-dlfr")
    assert emt.tfr_net == presets.get_preset("mosi", "emt-dlfr").tfr_net and emt.preset_source == "emt-dlfr"
    assert custom.missing_rates[-1] == 1.0
    assert presets.get_preset("mosi").with_tfr_net(batch_size=4).tfr_net.batch_size == 4
    with pytest.raises(ValueError, match="unknown metric family"):
        presets.custom_preset("x", seq_lens=(1, 1, 1), feature_dims=(1, 1, 1), metric_family="iemocap")


def test_unknown_dataset_names_the_choices():
    with pytest.raises(
        ValueError, match="unknown dataset 'iemocap': choose one of avec2019, custom, mosei, mosi, sims, simsv2"
    ):
        presets.get_preset("iemocap")


def test_make_synthetic_command(tmp_path, capsys):
    out = tmp_path / "sims.pkl"
    assert cli.main(["make-synthetic", "--dataset", "sims", "--out", str(out), "--sizes", "3,2,2"]) == 0
    loaded = data.load(out)
    assert loaded["train"]["audio"].shape == (3, 400, 33) and loaded["test"]["vision"].shape == (2, 55, 709)
    assert cli.main(["make-synthetic", "--dataset", "nope", "--out", str(out)]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err
