"""Training and evaluating TFR-Net on one (missing rate, seed) of a `.pkl` feature file (SPEC sections 5-6).

One run: simulate missing features at `rate` in the run's pattern (`missing`, default iid) on every split with
the protocol's missing seeds (fixed per modality, independent of the training seed `seed`; `missing_seeds`),
or, in the train-once protocol, per-sample random rates on the train split; train with L1 on the prediction
plus the weighted reconstruction loss from epoch 2, early-stop on the validation loss (with a maximum number
of epochs), reload the best checkpoint and test (at `rate`, and at each of `test_rates` when given). `last.pt` is written after every epoch, so a run that is
interrupted resumes where it stopped; `result.json` marks a finished run. `run.json` records the run's
fingerprint (data, settings, preset, robustmm version): a folder is resumed or reused only when it matches.
Checkpoints hold tensors and plain data only and are read with `weights_only=True`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import pickle
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from robustmm import __version__, metrics
from robustmm import data as feature_data
from robustmm.device import resolve_device
from robustmm.errors import UserError
from robustmm.missing import (
    PROTOCOL_MISSING_SEEDS,
    MissingPattern,
    TrainOnce,
    as_pattern,
    check_missing_seeds,
    mask_seeds,
    pattern_record,
)
from robustmm.models.tfr_net import TFRNet
from robustmm.presets import (
    Preset,
    check_preset_source,
    check_tfr_net_overrides,
    custom_preset,
    get_preset,
    override_tfr_net,
)
from robustmm.progress import interactive
from robustmm.run_options import KERNELS, TEXT_MODES, TEXT_TARGETS, check_checkpointing


@dataclass
class RunConfig:
    """Settings of one training run; `None` takes the preset's value."""

    dataset: str
    rate: float = 0.0
    seed: int = 1111
    text_mode: str = "finetune"
    text_encoder: str | None = None
    text_target: str = "encoder"  # frozen mode: complete-text target from the encoder, or the file's `text`
    simam: bool = False
    faithful: bool = False
    device: str = "auto"
    amp: bool = False
    checkpointing: bool | str = "auto"  # recompute activations in backward: True, False, "text-encoder", or "auto"
    kernels: str = "auto"  # run_options.KERNELS: "auto" (robustmm's compiled CPU kernels where they apply) or "pytorch"
    max_epochs: int | None = None
    batch_size: int | None = None
    progress: bool = True
    metric_family: str | None = None  # custom dataset only: "mosi" (default), "sims" or "avec"
    label_range: tuple[float, float] | None = None  # custom dataset only: (low, high), default (-3, 3)
    # (text, audio, vision) seeds of the masks, the same for every training seed; or "per_training_seed".
    missing_seeds: tuple[int, int, int] | str = PROTOCOL_MISSING_SEEDS
    preset_source: str | None = None  # "tfr-net", "mmsa" or "emt-dlfr"; None: the preset's default source
    tfr_net: dict | None = None  # TFR-Net settings changed by name, e.g. {"learning_rate_other": 1e-3}
    # What `rate` drops: a robustmm.missing pattern as its record ({"pattern": "block", "min_span": 2, ...}).
    missing: dict = field(default_factory=lambda: {"pattern": "iid"})
    # The train-once protocol: per-sample random rates on the train split (`rate` on valid and test); None: `rate`
    # on every split.
    train_once: TrainOnce | None = None
    # Rates the best checkpoint is also tested at (result.json `test_by_rate`); None: at `rate` only.
    test_rates: tuple[float, ...] | None = None

    @property
    def pattern(self) -> MissingPattern:
        return as_pattern(self.missing)

    def __post_init__(self):
        self.missing_seeds = check_missing_seeds(self.missing_seeds)
        self.missing = pattern_record(as_pattern(self.missing))
        if isinstance(self.train_once, dict):
            self.train_once = TrainOnce(**self.train_once)
        if self.test_rates is not None:
            self.test_rates = tuple(float(rate) for rate in self.test_rates)
            if not all(0.0 <= rate <= 1.0 for rate in self.test_rates):
                raise ValueError(f"test rates {list(self.test_rates)}: each must lie in [0, 1]")
        self.checkpointing = check_checkpointing(self.checkpointing)
        if self.kernels not in KERNELS:
            raise ValueError(f"kernels {self.kernels!r}: expected {' or '.join(KERNELS)}")
        check_preset_source(self.preset_source)
        self.tfr_net = check_tfr_net_overrides(self.tfr_net) if self.tfr_net else None
        if self.text_mode not in TEXT_MODES:
            raise ValueError(f"unknown text mode {self.text_mode!r}: choose one of {', '.join(TEXT_MODES)}")
        if self.text_target not in TEXT_TARGETS:
            raise ValueError(f"unknown text target {self.text_target!r}: choose one of {', '.join(TEXT_TARGETS)}")
        if self.text_target == "file" and self.text_mode != "frozen":
            raise ValueError("text_target 'file' needs text_mode 'frozen' (finetune re-encodes the text every step)")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"missing rate {self.rate} is outside [0, 1]")
        for name, value in (("max_epochs", self.max_epochs), ("batch_size", self.batch_size)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} {value!r}: expected a whole number of at least 1 (or none for the preset's)")
        if self.faithful and self.amp:
            raise ValueError("faithful mode is upstream's float32 training; amp applies to the default mode only")


# ---------------------------------------------------------------------------------------------- the data


def load_features(
    path: str | Path,
    dataset: str,
    metric_family: str | None = None,
    label_range: tuple[float, float] | None = None,
    preset_source: str | None = None,
    tfr_net: dict | None = None,
) -> tuple[dict, Preset]:
    """Load and validate a feature file and check it against the dataset's preset.

    `custom`: lengths and dims from the file, metric family `metric_family` (default mosi) and labels that
    must lie in `label_range` (default (-3, 3)). The preset's TFR-Net settings come from `preset_source`,
    changed by the `tfr_net` overrides."""
    loaded, preset = _load_features(path, dataset, metric_family, label_range, preset_source)
    if tfr_net:
        preset = preset.replace(tfr_net=override_tfr_net(preset.tfr_net, tfr_net))
    return loaded, preset


def _load_features(path, dataset, metric_family, label_range, preset_source) -> tuple[dict, Preset]:
    loaded = feature_data.load(path)
    check_split_sizes(loaded, path)
    train = loaded["train"]
    seq_lens = (train["text_bert"].shape[2], train["audio"].shape[1], train["vision"].shape[1])
    dims = (train["text"].shape[2] if "text" in train else 768, train["audio"].shape[2], train["vision"].shape[2])
    if dataset == "custom":
        preset = custom_preset(
            "custom",
            seq_lens=seq_lens,
            feature_dims=dims,
            metric_family=metric_family or "mosi",
            label_range=label_range or (-3.0, 3.0),
            preset_source=preset_source,
        )
        check_label_range(loaded, preset, path, "set --label-range LOW,HIGH to the labels' scale")
        return loaded, preset
    if metric_family is not None or label_range is not None:
        raise ValueError(
            f"metric family and label range are set by the {dataset} preset; they apply to --dataset custom only"
        )
    preset = get_preset(dataset, preset_source)
    problems = [
        f"{modality} features have {dim} dims, the {dataset} preset expects {expected}"
        for modality, dim, expected in zip(("audio", "vision"), dims[1:], preset.feature_dims[1:])
        if dim != expected
    ]
    if problems:
        raise feature_data.FormatError(path, problems + ["use --dataset custom to take the dims from the file"])
    check_label_range(
        loaded,
        preset,
        path,
        "for labels on another scale use --dataset custom with --label-range LOW,HIGH and --metric-family",
    )
    return loaded, preset


# The fewest rows of each split and what needs them (a training batch of one cannot pass BatchNorm).
SPLIT_NEEDS = {"train": (2, "training"), "valid": (1, "early stopping"), "test": (1, "testing")}


def check_split_sizes(loaded: dict, path: str | Path) -> None:
    problems = [
        f"the {name} split has {rows} rows; {purpose} needs at least {fewest}"
        for name, (fewest, purpose) in SPLIT_NEEDS.items()
        for rows in [len(loaded[name]["regression_labels"])]
        if rows < fewest
    ]
    if problems:
        raise feature_data.FormatError(path, problems)


def check_label_range(loaded: dict, preset: Preset, path: str | Path, advice: str) -> None:
    """Every split's labels within the preset's range: labels on another scale give silently wrong metrics."""
    low, high = preset.label_range
    if not low < high:
        raise ValueError(f"label range {low},{high}: the low end must be below the high end")
    scale = "the label range" if preset.name == "custom" else f"the {preset.name} preset's label range"
    problems = [
        f"{name}/regression_labels span {labels.min():g}..{labels.max():g}, outside {scale} {low:g},{high:g}"
        for name in feature_data.SPLITS
        for labels in [np.asarray(loaded[name]["regression_labels"], dtype=np.float64)]
        if labels.min() < low or labels.max() > high
    ]
    if problems:
        raise feature_data.FormatError(path, problems + [advice])


def corrupt(
    split: dict, rate, missing_seeds: tuple[int, int, int], unk_id: int, pattern: MissingPattern | None = None
) -> dict:
    """The split with missing features at `rate` (one number, or one per row) in `pattern` (default iid: upstream's
    `generate_m`), one mask per modality drawn with its missing seed (text, audio, vision)."""
    return (pattern or as_pattern("iid")).apply(split, rate, missing_seeds, unk_id=unk_id)


def attach_text_features(split: dict, encoder, text_target: str, complete_cache: dict, name: str) -> None:
    """Frozen mode: add `text` (complete, the target) and `text_m` (corrupted, the input) encoder outputs.

    The complete-text features depend only on the split, so they are computed once and kept in
    `complete_cache`; the corrupted ones once per (rate, seed), equal to the complete ones when nothing dropped.
    """
    if text_target == "file":
        if "text" not in split:
            raise ValueError(f"text_target 'file' needs a `text` key in split {name!r}; the file has none")
        hidden, length = split["text"].shape[2], split["text"].shape[1]
        if hidden != encoder.hidden_size or length != split["text_bert"].shape[2]:
            raise ValueError(
                f"{name}/text has shape (N, {length}, {hidden}) but the encoder {encoder.name!r} gives "
                f"(N, {split['text_bert'].shape[2]}, {encoder.hidden_size}): use text_target 'encoder'"
            )
        complete = split["text"]
    else:
        if name not in complete_cache:
            complete_cache[name] = encoder.encode(split["text_bert"])
        complete = complete_cache[name]
    split["text"] = complete
    unchanged = np.array_equal(split["text_bert_m"], split["text_bert"])
    split["text_m"] = complete if unchanged and text_target == "encoder" else encoder.encode(split["text_bert_m"])


BATCH_KEYS = {
    "finetune": ("text_bert", "text_bert_m"),
    "frozen": ("text_bert", "text", "text_m"),
}
COMMON_KEYS = (
    "audio",
    "audio_m",
    "vision",
    "vision_m",
    "audio_lengths",
    "vision_lengths",
    "text_keep",
    "audio_keep",
    "vision_keep",
)


def to_tensors(split: dict, text_mode: str) -> dict[str, torch.Tensor]:
    tensors = {key: torch.as_tensor(np.asarray(split[key])) for key in BATCH_KEYS[text_mode] + COMMON_KEYS}
    tensors["labels"] = torch.as_tensor(np.asarray(split["regression_labels"], dtype=np.float32))
    return tensors


def batches(tensors: dict, batch_size: int, device: torch.device, order: torch.Tensor | None = None):
    """Batches in `order` (a training epoch's shuffle) or in row order (evaluation)."""
    count = len(tensors["labels"])
    ends = list(range(batch_size, count, batch_size)) + [count]
    if order is not None and len(ends) > 1 and ends[-1] - ends[-2] == 1:
        # A training batch of one sample cannot pass BatchNorm: it joins the batch before it.
        del ends[-2]
    order = torch.arange(count) if order is None else order
    for start, end in zip([0] + ends[:-1], ends):
        index = order[start:end]
        yield {key: value[index].to(device, non_blocking=True) for key, value in tensors.items()}


# ----------------------------------------------------------------------------------- model and optimiser


def activation_bytes(tfr_net, batch_size: int, seq_lens, text_model, faithful: bool) -> tuple[int, int]:
    """Estimated activations a training step keeps for backward without checkpointing, beyond what it keeps with:
    (the text encoder's, the transformers').

    Floats saved per element, measured at MOSI shapes (batch 24, 50/375/500, bert-base: BERT 1.25 GB, the
    reconstruction 0.6 GB, the other transformers 0.6 GB): about 28 per BERT hidden value and layer, 25 per
    transformer value (d per step) and layer. Faithful finetune runs BERT twice with gradients."""
    d, layers = tfr_net.common_dim, max(tfr_net.nlevels, tfr_net.intra_layers)
    transformers = 25 * batch_size * sum(seq_lens) * d * (layers + 2 * tfr_net.nlevels)
    reconstruction = 25 * batch_size * 3 * d * sum(seq_lens) * layers
    bert = 0
    if text_model is not None:
        config = text_model.config
        bert = 28 * batch_size * seq_lens[0] * config.hidden_size * config.num_hidden_layers * (2 if faithful else 1)
    return 4 * bert, 4 * (transformers + reconstruction)


def available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        return int(re.search(r"MemAvailable:\s+(\d+) kB", meminfo.read_text()).group(1)) * 1024
    return 0  # unknown: keep the memory-saving default


def resolve_checkpointing(setting: bool | str, needed_bytes: tuple[int, int], device: torch.device) -> bool | str:
    """`auto`: the least recomputation whose kept activations take at most half the memory available now.

    The text encoder comes first: per byte saved its recomputation is the cheapest (BERT's layers are wide
    matrix products; the transformers' attention at 500 x 500 is what costs), and memory is a hard limit."""
    if setting != "auto":
        return setting
    text_encoder, transformers = needed_bytes
    budget = available_bytes(device) / 2
    if text_encoder + transformers <= budget:
        return False
    return "text-encoder" if text_encoder and transformers <= budget else True


def build_model(
    preset: Preset, config: RunConfig, seq_lens, feature_dims, encoder, device: torch.device | None = None
) -> TFRNet:
    # Read from disk, not copied from `encoder`: a sweep need not keep pristine weights resident between runs.
    text_model = encoder.new_model() if config.text_mode == "finetune" else None
    batch_size = config.batch_size or preset.tfr_net.batch_size
    needed = activation_bytes(preset.tfr_net, batch_size, seq_lens, text_model, config.faithful)
    return TFRNet(
        preset.tfr_net,
        seq_lens,
        feature_dims,
        text_mode=config.text_mode,
        text_encoder=text_model,
        simam=config.simam,
        faithful=config.faithful,
        checkpointing=resolve_checkpointing(config.checkpointing, needed, device or torch.device("cpu")),
        kernels=config.kernels,
    )


def build_optimizer(model: TFRNet, preset: Preset) -> torch.optim.Optimizer:
    """Adam with three groups: BERT weights, BERT biases and LayerNorms (no decay), the rest."""
    p = preset.tfr_net
    bert = list(model.text_encoder.named_parameters()) if model.text_encoder is not None else []
    no_decay = ("bias", "LayerNorm", "layer_norm")
    bert_ids = {id(param) for _, param in bert}
    groups = [
        {
            "params": [w for n, w in bert if not any(k in n for k in no_decay)],
            "lr": p.learning_rate_bert,
            "weight_decay": p.weight_decay_bert,
        },
        {
            "params": [w for n, w in bert if any(k in n for k in no_decay)],
            "lr": p.learning_rate_bert,
            "weight_decay": 0.0,
        },
        {
            "params": [w for w in model.parameters() if id(w) not in bert_ids],
            "lr": p.learning_rate_other,
            "weight_decay": p.weight_decay_other,
        },
    ]
    return torch.optim.Adam([group for group in groups if group["params"]], fused=True)


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast where the hardware has it (CPU with AVX512-BF16/AMX, recent GPUs), else fp16 on CUDA."""
    if not enabled:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if device.type == "cpu" or torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ------------------------------------------------------------------------------- run folders and checkpoints

# Settings added after runs were recorded, with the value every earlier run was made with: left out of the
# fingerprint at that value, so that the runs recorded before they existed stay valid.
ADDED_LATER = {"missing": {"pattern": "iid"}, "train_once": None, "test_rates": None}
# RunConfig fields that cannot change a run's result: a run may resume on another device, without bars, with
# checkpointing switched (recomputation gives the same activations), with other kernels (the same function; like
# another device, another stream of dropout masks).
DISPLAY_ONLY = ("progress", "device", "checkpointing", "kernels")
# Preset fields that belong to a sweep or to the reader, not to one run.
NOT_OF_ONE_RUN = ("notes", "missing_rates", "seeds")
# The files a run writes in its folder; overwriting a run deletes exactly these.
RUN_FILES = ("run.json", "result.json", "last.pt", "best.pt", "text_features.npz")


class RunMismatchError(UserError):
    """A run folder made with other data, settings or robustmm version than the run asked for."""


class CheckpointError(UserError):
    """A checkpoint that cannot be read, or holds more than tensors and plain data."""


def data_sha256(loaded: dict) -> str:
    """SHA-256 of what a run trains and tests on: every split's keys, dtypes, shapes and values."""
    digest = hashlib.sha256()
    for name in feature_data.SPLITS:
        for key in sorted(loaded[name]):
            array = np.asarray(loaded[name][key])
            digest.update(f"{name}/{key} {array.dtype.str} {array.shape}\n".encode())
            if array.dtype == object:
                digest.update("\x1f".join(map(str, array.ravel())).encode())
            else:
                digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


def run_fingerprint(preset: Preset, config: RunConfig, data_hash: str) -> dict:
    """What a run's result depends on, as JSON data: the data, every setting, the preset and the code version.

    Built from the whole RunConfig and Preset, so a field added to either is covered without listing it."""
    settings = {
        key: value
        for key, value in dataclasses.asdict(config).items()
        if key not in DISPLAY_ONLY and not (key in ADDED_LATER and value == ADDED_LATER[key])
    }
    preset_fields = {key: value for key, value in dataclasses.asdict(preset).items() if key not in NOT_OF_ONE_RUN}
    fingerprint = {"robustmm": __version__, "data_sha256": data_hash, "settings": settings, "preset": preset_fields}
    return json.loads(json.dumps(fingerprint))  # tuples as lists: the form run.json reads back


_ABSENT = object()


def _shown(value) -> str:
    return "(not recorded)" if value is _ABSENT else json.dumps(value)


def fingerprint_differences(recorded: dict, current: dict, prefix: str = "") -> list[str]:
    """What differs between two fingerprints, one readable line per difference."""
    differences = []
    for key in sorted(set(recorded) | set(current)):
        old, new, name = recorded.get(key, _ABSENT), current.get(key, _ABSENT), prefix + key
        if isinstance(old, dict) and isinstance(new, dict):
            differences += fingerprint_differences(old, new, f"{name}.")
        elif old == new:
            continue
        elif name == "data_sha256":
            differences.append(f"the data changed (feature sha256 {str(old)[:12]}... recorded, {new[:12]}... now)")
        elif name == "robustmm":
            differences.append(f"made by robustmm {old}, this is robustmm {new}")
        else:
            kind, _, field = name.partition(".")
            differences.append(
                f"{'setting' if kind == 'settings' else kind} {field}: {_shown(old)} recorded, {_shown(new)} now"
            )
    return differences


def claim_run_dir(run_dir: Path, fingerprint: dict, overwrite: bool) -> None:
    """Make `run_dir` this run's folder: new, or made with the same fingerprint (resumed or reused), or, with
    `overwrite`, cleared of another run's files. Another run's folder without `overwrite` is an error."""
    record = run_dir / "run.json"
    if record.exists():
        try:
            recorded = json.loads(record.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            recorded = None
        readable = isinstance(recorded, dict)
        differences = (
            fingerprint_differences(recorded, fingerprint) if readable else ["its run.json is not a fingerprint"]
        )
    elif any((run_dir / name).exists() for name in RUN_FILES):
        differences = ["it has no run.json (made by an older robustmm or by hand)"]
    else:
        differences = []
    if differences and not overwrite:
        raise RunMismatchError(
            f"{run_dir}: holds a different run, so it is not reused or resumed: "
            + "; ".join(differences)
            + "; choose another output folder, or train afresh in it with --overwrite (sweep setting overwrite: true)"
        )
    if differences:
        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)
    if not record.exists():
        with feature_data.atomic_write(record) as file:
            file.write(json.dumps(fingerprint, indent=2).encode())


def finished_result(run_dir: Path, fingerprint: dict) -> dict | None:
    """The result.json of the run in `run_dir` when it is finished and has this fingerprint; else None (`train`
    then trains, resumes or refuses it)."""
    try:
        recorded = json.loads((run_dir / "run.json").read_text())
        if isinstance(recorded, dict) and not fingerprint_differences(recorded, fingerprint):
            return json.loads((run_dir / "result.json").read_text())
    except (OSError, ValueError):  # absent or unreadable: train says what is wrong
        pass
    return None


def save_checkpoint(checkpoint: dict, path: Path) -> None:
    # Atomic, so that a run killed while saving still resumes from the previous epoch.
    with feature_data.atomic_write(path) as file:
        torch.save(checkpoint, file)


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint's tensors and plain data, on the CPU; a file that would run code when unpickled is refused."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError as error:
        reason = str(error).partition("WeightsUnpickler error:")[2]
        reason = (
            " ".join(reason.split("Please use")[0].split("Check the documentation")[0].split()) or "not a checkpoint"
        )
        raise CheckpointError(
            f"{path}: refused to load: checkpoints may hold only tensors and plain data ({reason})"
        ) from None
    except (RuntimeError, EOFError, OSError) as error:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(error).__name__}: {error})") from None


def rng_states(generator: torch.Generator) -> dict:
    """Every random generator's state as tensors and plain data (numpy's key as a list of ints)."""
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"]["key"] = numpy_state["state"]["key"].tolist()
    return {
        "generator": generator.get_state(),
        "torch": torch.get_rng_state(),
        "numpy": numpy_state,
        "python": random.getstate(),
    }


def restore_rng_states(states: dict, generator: torch.Generator) -> None:
    generator.set_state(states["generator"])
    torch.set_rng_state(states["torch"])
    numpy_state = states["numpy"]
    numpy_state["state"]["key"] = np.asarray(numpy_state["state"]["key"], dtype=np.uint32)
    np.random.set_state(numpy_state)
    random.setstate(states["python"])


# ------------------------------------------------------------------------------------ the DVCLive log

# A run's DVCLive folder: per-epoch curves under plots/metrics/ (train/loss, valid/loss, learning_rate) and the
# final values with the test metrics in metrics.json, read by `dvc plots show` and `dvc exp show` (dvc.yaml).
TRAINING_LOG = "dvclive"


def _no_vscode_signal(*_) -> None:
    pass


def open_training_log(run_dir: Path, history: list[dict]):
    """The run's DVCLive logger, its files rewritten from `history` so that a resumed run logs exactly the
    epochs of the checkpoint it resumes from (an epoch logged after its checkpoint's save is not lost or doubled)."""
    import dvclive.live
    from dvclive import Live

    # DVCLive signals VS Code's DVC extension through one file per repository (.dvc/tmp/exps/run/
    # DVCLIVE_STEP_COMPLETED), written every epoch and removed at the end by a check-then-remove: runs training at
    # once in one repository (sweep.workers, Ray) raced on it, and a run failed at its end with FileNotFoundError
    # (a CI run of tests/test_executors.py). robustmm's runs leave that file alone.
    dvclive.live.mark_dvclive_step_completed = dvclive.live.cleanup_dvclive_step_completed = _no_vscode_signal
    # No experiment commits, no dvc.yaml edits, no report: the pipeline's dvc.yaml declares the curves.
    live = Live(dir=str(run_dir / TRAINING_LOG), save_dvc_exp=False, dvcyaml=False, report=None)
    for entry in history:
        log_epoch(live, entry)
    return live


def log_epoch(live, entry: dict) -> None:
    live.step = entry["epoch"]
    for name, key in (
        ("train/loss", "train_loss"),
        ("valid/loss", "valid_loss"),
        ("learning_rate", "learning_rate"),
        ("learning_rate_bert", "learning_rate_bert"),
    ):
        _log_finite(live, name, entry.get(key))
    live.next_step()


def close_training_log(live, result: dict) -> None:
    """The run's final values beside the last epoch's: best epoch and validation loss, every test metric."""
    live.step = result["epochs"]
    _log_finite(live, "best_epoch", result["best_epoch"], plot=False)
    _log_finite(live, "best_valid_loss", result["best_valid_loss"], plot=False)
    for name, value in result["test"].items():
        _log_finite(live, f"test/{name}", value, plot=False)
    live.end()


def _log_finite(live, name: str, value, plot: bool = True) -> None:
    # DVCLive would log NaN as the text "nan", which no plot or metrics diff can read; an undefined value is left out.
    if value is not None and math.isfinite(value):
        live.log_metric(name, value, plot=plot)


def epoch_learning_rates(optimizer: torch.optim.Optimizer, config: RunConfig) -> dict[str, float]:
    """The learning rates an epoch trains with: the non-BERT group's (the last), and BERT's when it is trained."""
    rates = {"learning_rate": optimizer.param_groups[-1]["lr"]}
    if config.text_mode == "finetune":
        rates["learning_rate_bert"] = optimizer.param_groups[0]["lr"]
    return rates


# ----------------------------------------------------------------------------------------- the loop


def train_epoch(model, optimizer, scaler, tensors, preset, config, epoch, generator, device) -> float:
    """One pass over the training split; returns the mean L1 loss."""
    p = preset.tfr_net
    batch_size = config.batch_size or p.batch_size
    recon_weights = torch.tensor(p.recon_weights, device=device)
    model.train()
    count = len(tensors["labels"])
    order = torch.randperm(count, generator=generator)
    # Redrawn bars only where a person watches: in a log (`dvc repro > log`) each epoch would add a line.
    bar = tqdm(
        total=count,
        desc=f"rate {config.rate} seed {config.seed} epoch {epoch}",
        unit="sample",
        leave=False,
        disable=not (config.progress and interactive()),
    )
    total, seen, start = 0.0, 0, time.perf_counter()
    for step, batch in enumerate(batches(tensors, batch_size, device, order)):
        # Upstream (faithful) zeroes gradients every `update_epochs` batches, steps on every batch and once more
        # on the last of each `update_epochs` (5 steps per 4 batches), counting afresh each epoch.
        if not config.faithful or step % p.update_epochs == 0:
            optimizer.zero_grad(set_to_none=True)
        # The reconstruction loss counts from epoch 2; before, it is not computed at all.
        with autocast(device, config.amp):
            out = model(batch, with_reconstruction=epoch >= 2)
        l1 = torch.nn.functional.l1_loss(out["prediction"].float(), batch["labels"])
        loss = l1 + (recon_weights * out["recon_loss"]).sum() if epoch >= 2 else l1
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_value_([w for w in model.parameters() if w.requires_grad], p.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        if config.faithful and (step + 1) % p.update_epochs == 0:
            optimizer.step()
        size = len(batch["labels"])
        total, seen = total + l1.item() * size, seen + size
        bar.update(size)
        bar.set_postfix(loss=f"{total / seen:.4f}", samples_per_s=f"{seen / (time.perf_counter() - start):.1f}")
    bar.close()
    return total / max(seen, 1)


@torch.no_grad()
def predict(model, tensors, batch_size, device, amp=False) -> np.ndarray:
    model.eval()
    outputs = []
    for batch in batches(tensors, batch_size, device):
        with autocast(device, amp):
            outputs.append(model(batch, with_reconstruction=False)["prediction"].float().cpu())
    return torch.cat(outputs).numpy()


def l1(predictions: np.ndarray, tensors: dict) -> float:
    return float(np.mean(np.abs(predictions - tensors["labels"].numpy())))


def upstream_valid_loss(predictions: np.ndarray, tensors: dict, batch_size: int, generator: torch.Generator) -> float:
    """MMSA's validation loss: the mean over batches of each batch's mean L1, rounded to 4 decimals. Its
    validation loader shuffles, so the batches (hence the mean, through the smaller last one) are drawn anew
    each epoch, here with the run's generator."""
    errors = torch.as_tensor(np.abs(predictions - tensors["labels"].numpy()))
    shuffled = errors[torch.randperm(len(errors), generator=generator)]
    batch_means = [chunk.mean().item() for chunk in shuffled.split(batch_size)]
    return round(sum(batch_means) / len(batch_means), 4)


def prepare_splits(
    loaded: dict, config: RunConfig, encoder, complete_cache: dict, text_cache: Path | None = None
) -> dict[str, dict]:
    """The corrupted splits as tensors. Frozen mode: with `text_cache` (an .npz file), the encoder outputs are
    read from it when it exists and written to it otherwise, so a resumed run does not encode again."""
    cached = dict(np.load(text_cache)) if text_cache is not None and text_cache.exists() else {}
    seeds = mask_seeds(config.missing_seeds, config.seed)
    splits = {}
    for name in feature_data.SPLITS:
        rate = config.rate
        if name == "train" and config.train_once is not None:
            rate = config.train_once.sample_rates(len(loaded[name]["regression_labels"]), seeds)
        split = corrupt(loaded[name], rate, seeds, encoder.unk_id, config.pattern)
        if config.text_mode == "frozen" and f"{name}/text_m" in cached:
            split["text"], split["text_m"] = cached[f"{name}/text"], cached[f"{name}/text_m"]
        elif config.text_mode == "frozen":
            attach_text_features(split, encoder, config.text_target, complete_cache, name)
        splits[name] = to_tensors(split, config.text_mode)
    if config.text_mode == "frozen" and text_cache is not None and not cached:
        with feature_data.atomic_write(text_cache) as file:
            np.savez(
                file, **{f"{name}/{key}": splits[name][key].numpy() for name in splits for key in ("text", "text_m")}
            )
    return splits


def test_at_rates(
    model,
    loaded: dict,
    preset: Preset,
    config: RunConfig,
    encoder,
    complete_cache: dict,
    batch_size: int,
    device: torch.device,
) -> list[dict]:
    """The test metrics of `model` at each of `config.test_rates`, the test split corrupted in the run's pattern."""
    seeds = mask_seeds(config.missing_seeds, config.seed)
    results = []
    for rate in config.test_rates:
        split = corrupt(loaded["test"], rate, seeds, encoder.unk_id, config.pattern)
        if config.text_mode == "frozen":
            attach_text_features(split, encoder, config.text_target, complete_cache, "test")
        tensors = to_tensors(split, config.text_mode)
        predictions = predict(model, tensors, batch_size, device, config.amp)
        results.append(
            {"rate": rate, "metrics": metrics.compute(preset.metric_family, predictions, tensors["labels"].numpy())}
        )
    return results


def train(
    loaded: dict,
    preset: Preset,
    config: RunConfig,
    run_dir: str | Path,
    encoder,
    complete_cache: dict | None = None,
    *,
    data_hash: str | None = None,
    overwrite: bool = False,
) -> dict:
    """Train, early-stop, reload the best checkpoint and test; returns (and writes) `result.json`.

    `run_dir` is reused (its result.json returned) or resumed (from last.pt) only when its run.json holds this
    run's fingerprint; another run's folder raises RunMismatchError, or with `overwrite` is cleared and trained
    afresh. `encoder` is a robustmm.text_encoder.TextEncoder; `complete_cache` shares frozen complete-text
    features and `data_hash` (data_sha256(loaded)) the data's fingerprint between the runs of a sweep."""
    run_dir = Path(run_dir)
    claim_run_dir(run_dir, run_fingerprint(preset, config, data_hash or data_sha256(loaded)), overwrite)
    result_path = run_dir / "result.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    device = resolve_device(config.device)
    p = preset.tfr_net
    max_epochs = p.max_epochs if config.max_epochs is None else config.max_epochs
    batch_size = p.batch_size if config.batch_size is None else config.batch_size

    seed_everything(config.seed)
    complete_cache = {} if complete_cache is None else complete_cache
    # Frozen encoder outputs stay on disk until the run finishes (MOSI with bert-base: 0.7 GB).
    text_cache = run_dir / "text_features.npz"
    tensors = prepare_splits(loaded, config, encoder, complete_cache, text_cache)
    train_split = loaded["train"]
    seq_lens = (train_split["text_bert"].shape[2], train_split["audio"].shape[1], train_split["vision"].shape[1])
    feature_dims = (encoder.hidden_size, train_split["audio"].shape[2], train_split["vision"].shape[2])
    model = build_model(preset, config, seq_lens, feature_dims, encoder, device).to(device)
    optimizer = build_optimizer(model, preset)
    scaler = torch.amp.GradScaler(
        device.type, enabled=config.amp and device.type == "cuda" and not torch.cuda.is_bf16_supported()
    )
    generator = torch.Generator().manual_seed(config.seed)
    state = {"epoch": 0, "best_valid": math.inf, "best_epoch": 0, "bad_epochs": 0, "history": [], "train_seconds": 0.0}
    checkpoint_meta = {
        "config": dataclasses.asdict(config),
        "preset": preset.name,
        "seq_lens": seq_lens,
        "feature_dims": feature_dims,
    }

    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    if last_path.exists():
        last = load_checkpoint(last_path)
        model.load_state_dict(last["model"])
        optimizer.load_state_dict(last["optimizer"])
        if last["scaler"] and scaler.is_enabled():
            scaler.load_state_dict(last["scaler"])
        state = last["state"]
        restore_rng_states(last["rng"], generator)

    # Upstream (faithful) cuts every learning rate tenfold after `patience` epochs without a better validation loss.
    scheduler = (
        torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.1, patience=p.patience)
        if config.faithful
        else None
    )
    if scheduler is not None and "scheduler" in state:
        scheduler.load_state_dict(state["scheduler"])
    live = open_training_log(run_dir, state["history"])
    while (max_epochs is None or state["epoch"] < max_epochs) and state["bad_epochs"] < p.early_stop:
        epoch = state["epoch"] + 1
        start = time.perf_counter()
        learning_rates = epoch_learning_rates(optimizer, config)
        train_loss = train_epoch(model, optimizer, scaler, tensors["train"], preset, config, epoch, generator, device)
        valid_predictions = predict(model, tensors["valid"], batch_size, device, config.amp)
        if config.faithful:
            valid_loss = upstream_valid_loss(valid_predictions, tensors["valid"], batch_size, generator)
            scheduler.step(valid_loss)
            state["scheduler"] = scheduler.state_dict()
        else:
            valid_loss = l1(valid_predictions, tensors["valid"])
        state["train_seconds"] += time.perf_counter() - start
        state["history"].append({"epoch": epoch, "train_loss": train_loss, "valid_loss": valid_loss, **learning_rates})
        state["epoch"] = epoch
        if valid_loss < state["best_valid"]:
            state.update(best_valid=valid_loss, best_epoch=epoch, bad_epochs=0)
            save_checkpoint({"model": model.state_dict(), "epoch": epoch, **checkpoint_meta}, best_path)
        else:
            state["bad_epochs"] += 1
        save_checkpoint(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "state": state,
                "rng": rng_states(generator),
            },
            last_path,
        )
        log_epoch(live, state["history"][-1])

    if not best_path.exists():
        losses = ", ".join(f"{entry['valid_loss']:g}" for entry in state["history"])
        raise RuntimeError(f"{run_dir}: no epoch reached a finite validation loss ({losses}): nothing to test")
    model.load_state_dict(load_checkpoint(best_path)["model"])
    predictions = predict(model, tensors["test"], batch_size, device, config.amp)
    result = {
        "rate": config.rate,
        "seed": config.seed,
        "best_epoch": state["best_epoch"],
        "epochs": state["epoch"],
        "best_valid_loss": state["best_valid"],
        "train_seconds": state["train_seconds"],
        "test": metrics.compute(preset.metric_family, predictions, tensors["test"]["labels"].numpy()),
        "history": state["history"],
        "config": dataclasses.asdict(config),
    }
    if config.test_rates is not None:
        result["test_by_rate"] = test_at_rates(
            model, loaded, preset, config, encoder, complete_cache, batch_size, device
        )
    close_training_log(live, result)
    text = json.dumps(result, indent=2)
    with feature_data.atomic_write(result_path) as file:  # its presence marks the run finished
        file.write(text.encode())
    last_path.unlink()
    text_cache.unlink(missing_ok=True)
    return json.loads(text)  # as a later reuse reads it (tuples become lists)


def evaluate_checkpoint(
    checkpoint: str | Path,
    data_path: str | Path,
    rate: float | None = None,
    missing_seeds: tuple[int, int, int] | str | None = None,
    split: str = "test",
    device: str = "auto",
    encoder=None,
) -> dict:
    """Metrics of a saved best checkpoint on one split of a feature file, at the run's (or the given) rate and
    missing seeds."""
    from robustmm.text_encoder import TextEncoder

    saved = load_checkpoint(checkpoint)
    config = RunConfig(**{**saved["config"], "device": device, "progress": False})
    config.rate = config.rate if rate is None else rate
    config.missing_seeds = config.missing_seeds if missing_seeds is None else check_missing_seeds(missing_seeds)
    if split not in feature_data.SPLITS:
        raise ValueError(f"unknown split {split!r}: choose one of {', '.join(feature_data.SPLITS)}")
    loaded, preset = load_features(
        data_path, config.dataset, config.metric_family, config.label_range, config.preset_source, config.tfr_net
    )
    encoder = encoder or TextEncoder(
        config.text_encoder or preset.text_encoder,
        device=resolve_device(device),
        load_weights=config.text_mode == "frozen",
    )
    seeds = mask_seeds(config.missing_seeds, config.seed)
    split_data = corrupt(loaded[split], config.rate, seeds, encoder.unk_id, config.pattern)
    if config.text_mode == "frozen":
        attach_text_features(split_data, encoder, config.text_target, {}, split)
    tensors = to_tensors(split_data, config.text_mode)
    target = resolve_device(device)
    model = build_model(preset, config, saved["seq_lens"], saved["feature_dims"], encoder).to(target)
    model.load_state_dict(saved["model"])
    predictions = predict(model, tensors, config.batch_size or preset.tfr_net.batch_size, target)
    return {
        "split": split,
        "rate": config.rate,
        "missing_seeds": list(seeds),
        **metrics.compute(preset.metric_family, predictions, tensors["labels"].numpy()),
    }
