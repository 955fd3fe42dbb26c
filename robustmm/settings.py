"""The settings schema: one dataclass per section of params.yaml and per command, checked before any work.

params.yaml (every pipeline stage checks the whole file), `--config FILE --section NAME` and the command's
flags all go through `parse`: every problem is collected and reported at once, each with where it came from,
the value and what is allowed, e.g.

    params.yaml: sweep.epochs: -1 is not allowed (an integer >= 1, or null)
    params.yaml: sweep.epoch: unknown key (did you mean 'epochs'?)
    --rates: 1.5 is not allowed (a non-empty list of distinct values, each a number in [0, 1])

A field is one line, `name: type = setting(KIND, default)`; without a default it is required. The kinds
below say what a value may be; `FieldsOf` checks a mapping against another dataclass's fields and types (the
extractors' configs, through the registry) and then builds it, so that class's own checks apply too. The
README's "params.yaml, key by key" table lists every key of `Params` (tests/test_settings.py checks it).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from robustmm import avec2019
from robustmm.corruption.noises import NOISES, noise_config
from robustmm.errors import UserError
from robustmm.executors import EXECUTORS, Shard
from robustmm.features.base import EXTRACTORS, create_extractor
from robustmm.features.extract import DEFAULT_MAX_FAILURE_SHARE
from robustmm.metrics import FAMILIES
from robustmm.missing import (
    PATTERNS,
    PER_TRAINING_SEED,
    PROTOCOL_MISSING_SEEDS,
    PROTOCOLS,
    TrainOnce,
    check_missing_seeds,
)
from robustmm.presets import KEY_METRICS, MODALITIES, PRESET_SOURCES, PRESETS, check_tfr_net_overrides
from robustmm.run_options import KERNELS, TEXT_MODES, TEXT_TARGETS, check_checkpointing

PARAMS_FILE = "params.yaml"


class SettingsError(UserError):
    """Settings that cannot be used; `problems` lists each as `<where>: <key>: <what is wrong and allowed>`."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        heading = f"{len(problems)} problems in the settings:\n  " if len(problems) > 1 else ""
        super().__init__(heading + "\n  ".join(problems))


class Problems:
    """The problems found so far, each (dotted key path, message)."""

    def __init__(self):
        self.found: list[tuple[str, str]] = []

    def add(self, path: str, message: str) -> None:
        self.found.append((path, message))

    def reject(self, path: str, value, allowed: str, hint: str = "") -> None:
        self.add(path, f"{show(value)} is not allowed ({allowed}{hint})")

    def unknown_key(self, path: str, key, known, owner: str = "") -> None:
        close = suggestion(key, known)
        self.add(join_path(path, key), f"unknown key{owner} ({close or 'known: ' + ', '.join(map(str, known))})")


def show(value) -> str:
    """A value as the user wrote it in YAML."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def suggestion(word, known) -> str:
    close = difflib.get_close_matches(str(word), [str(name) for name in known], n=1)
    return f"did you mean {close[0]!r}?" if close else ""


def join_path(path: str, key) -> str:
    return f"{path}.{key}" if path else str(key)


INVALID = object()  # what a kind returns for a value it rejected (the problem is recorded)


# ------------------------------------------------------------------------------------------------ kinds


class Kind:
    """What a setting may be. Scalar kinds define `allowed` and `accepts`; compound kinds override `parse`."""

    allowed = "any value"

    def accepts(self, value) -> bool:
        return True

    def hint(self, value) -> str:
        return ""

    def convert(self, value):
        return value

    def parse(self, value, path: str, problems: Problems):
        if self.accepts(value):
            return self.convert(value)
        problems.reject(path, value, self.allowed, self.hint(value))
        return INVALID


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class Integer(Kind):
    def __init__(self, minimum: int | None = None, maximum: int | None = None):
        self.minimum, self.maximum = minimum, maximum
        if minimum is not None and maximum is not None:
            self.allowed = f"an integer in [{minimum}, {maximum}]"
        elif minimum is not None:
            self.allowed = f"an integer >= {minimum}"
        else:
            self.allowed = "an integer"

    def accepts(self, value) -> bool:
        return (
            isinstance(value, int)
            and not isinstance(value, bool)
            and (self.minimum is None or value >= self.minimum)
            and (self.maximum is None or value <= self.maximum)
        )


class Number(Kind):
    """A finite number; `above` is an exclusive lower bound (a length of time), minimum/maximum inclusive."""

    def __init__(self, minimum: float | None = None, maximum: float | None = None, above: float | None = None):
        self.minimum, self.maximum, self.above = minimum, maximum, above
        if minimum is not None and maximum is not None:
            self.allowed = f"a number in [{minimum:g}, {maximum:g}]"
        elif above is not None:
            self.allowed = f"a number > {above:g}"
        elif minimum is not None:
            self.allowed = f"a number >= {minimum:g}"
        else:
            self.allowed = "a number"

    def accepts(self, value) -> bool:
        return (
            _is_number(value)
            and (self.minimum is None or value >= self.minimum)
            and (self.maximum is None or value <= self.maximum)
            and (self.above is None or value > self.above)
        )


class Boolean(Kind):
    allowed = "true or false"

    def accepts(self, value) -> bool:
        return isinstance(value, bool)


class Text(Kind):
    def __init__(self, allowed: str = "a string"):
        self.allowed = allowed

    def accepts(self, value) -> bool:
        return isinstance(value, str) and value.strip() != ""


class Choice(Kind):
    """One of fixed names; `options` may be a function, for names known only once their modules are imported."""

    def __init__(self, options: Sequence[str] | Callable[[], Sequence[str]], what: str = "one of"):
        self._options, self.what = options, what

    @property
    def options(self) -> list[str]:
        return list(self._options() if callable(self._options) else self._options)

    @property
    def allowed(self) -> str:
        return f"{self.what} {', '.join(self.options)}"

    def accepts(self, value) -> bool:
        return isinstance(value, str) and value in self.options

    def hint(self, value) -> str:
        found = suggestion(value, self.options)
        return f"; {found}" if found else ""


class Device(Kind):
    allowed = "auto, cpu, cuda or cuda:N"

    def accepts(self, value) -> bool:
        return isinstance(value, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", value) is not None


class Optional(Kind):
    """The inner kind, or null."""

    def __init__(self, inner: Kind):
        self.inner = inner

    @property
    def allowed(self) -> str:
        return f"{self.inner.allowed}, or null"

    def parse(self, value, path: str, problems: Problems):
        if value is None:
            return None
        if type(self.inner).parse is not Kind.parse:  # a compound kind words its own problems
            return self.inner.parse(value, path, problems)
        if self.inner.accepts(value):
            return self.inner.convert(value)
        problems.reject(path, value, self.allowed, self.inner.hint(value))
        return INVALID


class ListOf(Kind):
    def __init__(self, item: Kind, min_length: int = 0, distinct: bool = False):
        self.item, self.min_length, self.distinct = item, min_length, distinct

    @property
    def allowed(self) -> str:
        size = "non-empty " if self.min_length == 1 else f"at least {self.min_length} " if self.min_length else ""
        return f"a {size}list of {'distinct ' if self.distinct else ''}values, each {self.item.allowed}"

    def parse(self, value, path: str, problems: Problems):
        if not isinstance(value, (list, tuple)) or len(value) < self.min_length:
            problems.reject(path, value, self.allowed)
            return INVALID
        bad = [item for item in value if not self.item.accepts(item)]
        for item in bad:
            problems.reject(path, item, self.allowed, self.item.hint(item))
        if bad:
            return INVALID
        repeated = sorted({show(item) for item in value if list(value).count(item) > 1})
        if self.distinct and repeated:
            problems.add(path, f"{', '.join(repeated)} given more than once ({self.allowed})")
            return INVALID
        return list(value)


class Range(Kind):
    allowed = "two numbers [LOW, HIGH] with LOW < HIGH"

    def accepts(self, value) -> bool:
        return (
            isinstance(value, (list, tuple)) and len(value) == 2 and all(map(_is_number, value)) and value[0] < value[1]
        )

    def convert(self, value):
        return float(value[0]), float(value[1])


class Lengths(Kind):
    """Padded lengths of the three modalities: [L_T, L_A, L_V] or {text: L_T, audio: L_A, vision: L_V}."""

    allowed = "three integers >= 1: [L_T, L_A, L_V] or {text: L_T, audio: L_A, vision: L_V}"

    def parse(self, value, path: str, problems: Problems):
        if isinstance(value, Mapping) and set(value) == set(MODALITIES):
            value = [value[modality] for modality in MODALITIES]
        if isinstance(value, (list, tuple)) and len(value) == 3 and all(map(Integer(1).accepts, value)):
            return tuple(value)
        problems.reject(path, value, self.allowed)
        return INVALID


class MappingOf(Kind):
    """Names to values; `value` is a kind, or a function of the key giving its kind (None: the key is rejected)."""

    def __init__(self, key: Kind, value: Kind | Callable[[str], Kind | None], placeholder: str, min_length: int = 0):
        self.key, self.value, self.placeholder, self.min_length = key, value, placeholder, min_length

    @property
    def allowed(self) -> str:
        size = "a non-empty mapping" if self.min_length else "a mapping"
        return f"{size} of {self.placeholder} -> settings"

    def parse(self, value, path: str, problems: Problems):
        if value is None and not self.min_length:
            return {}
        if not isinstance(value, Mapping) or len(value) < self.min_length:
            problems.reject(path, value, self.allowed)
            return INVALID
        parsed, before = {}, len(problems.found)
        for key, item in value.items():
            if not self.key.accepts(key):
                problems.add(
                    join_path(path, key),
                    f"{show(key)} is not allowed as a name ({self.key.allowed}{self.key.hint(key)})",
                )
                continue
            kind = self.value(key) if callable(self.value) else self.value
            parsed[key] = kind.parse(item, join_path(path, key), problems)
        return parsed if len(problems.found) == before else INVALID


def setting(kind: Kind, default=dataclasses.MISSING):
    """A settings field: its kind, and its default (none: the key is required)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"kind": kind})
    return field(default=default, metadata={"kind": kind})


class Section(Kind):
    """A mapping checked against a settings dataclass: unknown keys, required keys and each field's kind.

    A dataclass may define `problems(self) -> list[tuple[key, message]]` for checks across its fields."""

    def __init__(self, schema: type):
        self.schema = schema

    @property
    def allowed(self) -> str:
        return f"a mapping with keys {', '.join(field.name for field in dataclasses.fields(self.schema))}"

    def parse(self, value, path: str, problems: Problems):
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            problems.reject(path, value, self.allowed)
            return INVALID
        fields = {field.name: field for field in dataclasses.fields(self.schema)}
        before = len(problems.found)
        for key in value:
            if key not in fields:
                problems.unknown_key(path, key, fields)
        parsed = {}
        for name, spec in fields.items():
            kind = spec.metadata["kind"]
            if name in value:
                parsed[name] = kind.parse(value[name], join_path(path, name), problems)
            elif isinstance(kind, Section):
                parsed[name] = kind.parse({}, join_path(path, name), problems)  # an absent section: its defaults
            elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                problems.add(join_path(path, name), f"missing; give {kind.allowed}")
        if len(problems.found) != before:
            return INVALID
        built = self.schema(**parsed)
        for key, message in built.problems() if hasattr(built, "problems") else ():
            problems.add(join_path(path, key), message)
        return built if len(problems.found) == before else INVALID


def kind_of_annotation(annotation) -> Kind:
    """The kind of a plain dataclass field from its type: int, float, str, bool, X | None, tuple/list of X."""
    arguments = typing.get_args(annotation)
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        inner = [argument for argument in arguments if argument is not type(None)]
        kind = kind_of_annotation(inner[0]) if len(inner) == 1 else Kind()
        return Optional(kind) if type(None) in arguments else kind
    if typing.get_origin(annotation) in (tuple, list):
        if len(arguments) == 2 and arguments[1] is Ellipsis or typing.get_origin(annotation) is list:
            return ListOf(kind_of_annotation(arguments[0]) if arguments else Kind())
        return Kind()
    return {int: Integer(), float: Number(), bool: Boolean(), str: Text()}.get(annotation, Kind())


class FieldsOf(Kind):
    """A mapping of some of a dataclass's fields (e.g. an extractor config), checked by type and then by the
    dataclass itself (its __post_init__); the result is the mapping as given."""

    def __init__(self, schema: type, what: str):
        self.schema, self.what = schema, what
        self.allowed = f"a mapping of {what} settings"

    def parse(self, value, path: str, problems: Problems):
        if not isinstance(value, Mapping):
            problems.reject(path, value, self.allowed)
            return INVALID
        types_by_name = typing.get_type_hints(self.schema)
        names = [field.name for field in dataclasses.fields(self.schema)]
        before = len(problems.found)
        for key, item in value.items():
            if key not in names:
                problems.unknown_key(path, key, names, f" for {self.what}")
            else:
                kind_of_annotation(types_by_name[key]).parse(item, join_path(path, key), problems)
        if len(problems.found) != before:
            return INVALID
        try:
            self.schema(**value)
        except (ValueError, TypeError) as error:
            problems.add(path, f"{error} ({self.what})")
            return INVALID
        return dict(value)


class Checked(Kind):
    """A value checked and converted by a function of the library that raises ValueError (its message is the
    problem), so that a setting the library already checks is checked by the same code."""

    def __init__(self, check: Callable, allowed: str):
        self.check, self.allowed = check, allowed

    def parse(self, value, path: str, problems: Problems):
        try:
            return self.check(value)
        except ValueError as error:
            problems.add(path, str(error))
            return INVALID


@dataclass(frozen=True)
class ExtractorSettings:
    """An extractor by registered name and the config values given for it (the rest are its defaults)."""

    extractor: str
    options: dict

    @property
    def config(self):
        return create_extractor(self.extractor, self.options).config


class ExtractorKind(Kind):
    """`extract.<modality>`: an extractor name, or a mapping with `extractor` plus that extractor's config keys."""

    def __init__(self, modality: str):
        self.modality = modality
        self.name = Choice(
            lambda: sorted(name for name, cls in _registered().items() if cls.modality == modality),
            f"a registered {modality} extractor:",
        )
        self.allowed = f"an extractor name or a mapping with `extractor` and its settings ({self.name.allowed})"

    def parse(self, value, path: str, problems: Problems):
        if isinstance(value, str):
            value = {"extractor": value}
        if not isinstance(value, Mapping) or "extractor" not in value:
            problems.reject(path, value, self.allowed)
            return INVALID
        name = self.name.parse(value["extractor"], join_path(path, "extractor"), problems)
        if name is INVALID:
            return INVALID
        options = {key: item for key, item in value.items() if key != "extractor"}
        config = FieldsOf(EXTRACTORS[name].config_class, f"extractor {name!r}").parse(options, path, problems)
        return INVALID if config is INVALID else ExtractorSettings(name, config)


def _registered() -> dict:
    from robustmm.features import audio, text, video  # noqa: F401 - importing them registers their extractors

    return EXTRACTORS


RATE = Number(0.0, 1.0)
SEED = Integer(0, 2**32 - 1)  # numpy's seed range
POSITIVE = Integer(1)
NAME = Text("a name")
PATH = Text("a path")
PRESET = Choice(lambda: sorted([*PRESETS, "custom"]))
# Each missing pattern's own settings, by pattern name (iid has none): checked by the pattern's dataclass.
PATTERN_SETTINGS = MappingOf(
    Choice([name for name, pattern in PATTERNS.items() if dataclasses.fields(pattern)], "a pattern with settings:"),
    lambda name: FieldsOf(PATTERNS[name], f"missing pattern {name!r}"),
    "<pattern>",
)


NOISE = Choice(lambda: sorted(NOISES), "a registered noise:")


@dataclass(frozen=True, kw_only=True)
class NoiseSettings:
    """A noise, its level (whose meaning is the noise's) and options (its config), and the seed of its randomness."""

    noise: str = setting(NOISE)
    level: float = setting(Number())
    seed: int = setting(SEED, 0)
    options: dict = setting(MappingOf(Text("an option name"), Kind(), "<option>"), {})

    def problems(self) -> list[tuple[str, str]]:
        try:
            config = noise_config(self.noise, self.options)
        except ValueError as error:
            return [("options", str(error))]
        try:
            NOISES[self.noise](self.level, config)
        except ValueError as error:
            return [("level", str(error))]
        return []


# ------------------------------------------------------------------------------------------------ params.yaml


@dataclass(frozen=True, kw_only=True)
class DatasetSettings:
    """`datasets.<name>`: the feature file a sweep trains on and how to read it."""

    data: str = setting(PATH)
    preset: str = setting(PRESET)
    text_encoder: str | None = setting(Optional(Text("a model name or folder")), None)


EXECUTOR = Choice(EXECUTORS)
RAY_ADDRESS = Optional(Text("a Ray cluster address"))
SHARD = Optional(Checked(Shard.parse, "I/N with 0 <= I < N"))


@dataclass(frozen=True, kw_only=True)
class ExtractionSettings:
    """What `extract` (the stage and the command) shares."""

    workers: int | None = setting(Optional(POSITIVE), None)
    max_failure_share: float = setting(RATE, DEFAULT_MAX_FAILURE_SHARE)
    executor: str = setting(EXECUTOR, "local")
    ray_address: str | None = setting(RAY_ADDRESS, None)


@dataclass(frozen=True, kw_only=True)
class ExtractSettings(ExtractionSettings):
    """params.yaml `extract`."""

    datasets: list[str] = setting(ListOf(NAME, distinct=True), [])
    text: ExtractorSettings = setting(ExtractorKind("text"), ExtractorSettings("bert", {}))
    audio: ExtractorSettings = setting(ExtractorKind("audio"), ExtractorSettings("librosa", {}))
    vision: ExtractorSettings = setting(ExtractorKind("vision"), ExtractorSettings("mediapipe", {}))


@dataclass(frozen=True, kw_only=True)
class MediaLengths:
    audio: int = setting(POSITIVE)
    vision: int = setting(POSITIVE)


@dataclass(frozen=True, kw_only=True)
class AssembleSettings:
    """params.yaml `assemble` (the text length is `extract.text.max_length`)."""

    lengths: MediaLengths = setting(Section(MediaLengths))


_IMPORT = avec2019.ImportSettings


@dataclass(frozen=True, kw_only=True)
class ImportAvec2019Settings:
    """params.yaml `import_avec2019`: the folders, and the keyword arguments of robustmm.avec2019.import_avec2019."""

    datasets: dict[str, str] = setting(MappingOf(NAME, PATH, "<name>"), {})
    window_seconds: float = setting(Number(above=0.0), _IMPORT.window_seconds)
    statistics: list[str] = setting(ListOf(Choice(avec2019.STATISTICS), 1, distinct=True), list(_IMPORT.statistics))
    min_face_confidence: float = setting(RATE, _IMPORT.min_face_confidence)
    text_length: int = setting(Integer(2), _IMPORT.text_length)  # [CLS] and [SEP]
    audio_length: int = setting(POSITIVE, _IMPORT.audio_length)
    vision_length: int = setting(POSITIVE, _IMPORT.vision_length)
    text_encoder: str = setting(Text("a model name or folder"), _IMPORT.text_encoder)
    device: str = setting(Device(), _IMPORT.device)
    batch_size: int = setting(POSITIVE, _IMPORT.batch_size)

    def import_arguments(self) -> dict:
        return {name: getattr(self, name) for name in _field_names(self) if name != "datasets"}


@dataclass(frozen=True, kw_only=True)
class ModelSettings:
    """What `train` and `sweep` share: the keyword arguments of robustmm.train.RunConfig they pass on."""

    text_mode: str = setting(Choice(TEXT_MODES), "finetune")
    text_target: str = setting(Choice(TEXT_TARGETS), "encoder")
    simam: bool = setting(Boolean(), False)
    faithful: bool = setting(Boolean(), False)
    device: str = setting(Device(), "auto")
    amp: bool = setting(Boolean(), False)
    checkpointing: bool | str = setting(Checked(check_checkpointing, "auto, true, false or text-encoder"), "auto")
    kernels: str = setting(Choice(KERNELS), "auto")
    epochs: int | None = setting(Optional(POSITIVE), None)
    batch_size: int | None = setting(Optional(POSITIVE), None)
    progress: bool = setting(Boolean(), True)
    metric_family: str | None = setting(Optional(Choice(FAMILIES)), None)
    label_range: tuple[float, float] | None = setting(Optional(Range()), None)
    missing_seeds: tuple[int, int, int] | str = setting(
        Checked(check_missing_seeds, f"three seeds [text, audio, vision] or {PER_TRAINING_SEED!r}"),
        PROTOCOL_MISSING_SEEDS,
    )
    preset_source: str | None = setting(Optional(Choice(PRESET_SOURCES)), None)
    tfr_net: dict | None = setting(Optional(Checked(check_tfr_net_overrides, "TFR-Net settings by name")), None)
    missing: str = setting(Choice(PATTERNS), "iid")
    patterns: dict[str, dict] | None = setting(Optional(PATTERN_SETTINGS), None)

    def problems(self) -> list[tuple[str, str]]:
        if self.text_target == "file" and self.text_mode != "frozen":
            return [("text_target", "'file' needs text_mode 'frozen' (finetune re-encodes the text every step)")]
        return []


@dataclass(frozen=True, kw_only=True)
class RunResources:
    """What one training run of a sweep claims on a Ray cluster: CPUs (also its PyTorch threads when
    torch_threads is null) and a share of a GPU (0.25: four runs share one)."""

    cpus: float = setting(Number(above=0.0), 1.0)
    gpus: float = setting(Number(0.0), 0.0)


@dataclass(frozen=True, kw_only=True)
class SweepSettings(ModelSettings):
    """params.yaml `sweep`: the keyword arguments of robustmm.experiments.sweep that the stage does not set
    itself (text_encoder comes from `datasets.<name>`; out, model_dir, keep_models are the stage's)."""

    rates: list[float] | None = setting(Optional(ListOf(RATE, 1, distinct=True)), None)
    seeds: list[int] | None = setting(Optional(ListOf(SEED, 1, distinct=True)), None)
    torch_threads: int | None = setting(Optional(POSITIVE), None)
    overwrite: bool = setting(Boolean(), False)
    protocol: str = setting(Choice(PROTOCOLS), "per_rate")
    train_once: dict | None = setting(Optional(FieldsOf(TrainOnce, "the train-once protocol")), None)
    executor: str = setting(EXECUTOR, "local")
    workers: int = setting(POSITIVE, 1)
    resources: RunResources = setting(Section(RunResources), RunResources())
    ray_address: str | None = setting(RAY_ADDRESS, None)

    def sweep_arguments(self) -> dict:
        """The keyword arguments for robustmm.experiments.sweep."""
        return {name: getattr(self, name) for name in _field_names(self)}


@dataclass(frozen=True, kw_only=True)
class ReportSettings:
    """params.yaml `report`."""

    metrics: dict[str, list[str]] = setting(
        MappingOf(
            Choice(FAMILIES),
            lambda family: ListOf(Choice(KEY_METRICS[family], f"a {family} metric:"), 1, distinct=True),
            "<family>",
            min_length=1,
        )
    )


@dataclass(frozen=True, kw_only=True)
class CorruptionSettings(NoiseSettings):
    """params.yaml `corruptions.<name>`: raw/<name>/ made from raw/<dataset>/ by the corrupt stage."""

    dataset: str = setting(NAME)


@dataclass(frozen=True, kw_only=True)
class EvaluateCorruptionsSettings:
    """params.yaml `evaluate_corruptions`: the datasets whose clean models evaluate_corruptions@<dataset> tests on
    their corrupted copies; exactly those with a `corruptions` entry (dvc.yaml's foreach cannot filter)."""

    datasets: list[str] = setting(ListOf(NAME, distinct=True), [])


@dataclass(frozen=True, kw_only=True)
class Params:
    """The whole params.yaml."""

    datasets: dict[str, DatasetSettings] = setting(MappingOf(NAME, Section(DatasetSettings), "<name>", min_length=1))
    extract: ExtractSettings = setting(Section(ExtractSettings))
    assemble: AssembleSettings = setting(Section(AssembleSettings))
    import_avec2019: ImportAvec2019Settings = setting(Section(ImportAvec2019Settings))
    sweep: SweepSettings = setting(Section(SweepSettings))
    report: ReportSettings = setting(Section(ReportSettings))
    corruptions: dict[str, CorruptionSettings] = setting(MappingOf(NAME, Section(CorruptionSettings), "<name>"), {})
    evaluate_corruptions: EvaluateCorruptionsSettings = setting(
        Section(EvaluateCorruptionsSettings), EvaluateCorruptionsSettings()
    )

    def problems(self) -> list[tuple[str, str]]:
        """A corrupted copy is extracted and assembled like any raw dataset, and tested with the model trained on
        the clean one (`datasets.<dataset>`, built from raw/<dataset>/)."""
        return self._corruption_problems() + self._evaluation_problems()

    def _evaluation_problems(self) -> list[tuple[str, str]]:
        found = []
        listed = self.evaluate_corruptions.datasets
        copies: dict[str, list[str]] = {}
        for name, corruption in self.corruptions.items():
            copies.setdefault(corruption.dataset, []).append(name)
        for dataset, names in copies.items():
            if dataset not in listed:
                found.append(
                    (
                        "evaluate_corruptions.datasets",
                        f"{dataset!r} has corrupted copies ({', '.join(names)}) but is not listed: add it, so that "
                        f"evaluate_corruptions@{dataset} tests its clean models on them",
                    )
                )
        for dataset in listed:
            if dataset not in copies:
                found.append(
                    (
                        "evaluate_corruptions.datasets",
                        f"{dataset!r} has no corrupted copies (no corruptions entry with dataset: {dataset}): "
                        "remove it, or add one",
                    )
                )
            elif dataset in self.datasets and Path(self.datasets[dataset].data) != Path("data", f"{dataset}.pkl"):
                found.append(
                    (
                        f"datasets.{dataset}.data",
                        f"{self.datasets[dataset].data!r}: a dataset with corrupted copies is trained on "
                        f"data/{dataset}.pkl, the features of raw/{dataset}/ that its copies are compared with "
                        f"(evaluate_corruptions@{dataset} depends on that file)",
                    )
                )
        return found

    def _corruption_problems(self) -> list[tuple[str, str]]:
        found = []
        for name, corruption in self.corruptions.items():
            if "." in name:
                found.append(
                    (
                        f"corruptions.{name}",
                        "a name with '.' cannot be a DVC params key (DVC reads the dot as "
                        "nesting): write the level without it, e.g. demo-occlusion-30 for level 0.3",
                    )
                )
            if name == corruption.dataset:
                found.append(
                    (
                        f"corruptions.{name}.dataset",
                        f"{name!r} is the corrupted copy itself; name the clean raw dataset",
                    )
                )
            for needed, where in ((name, "extract.datasets"), (corruption.dataset, "extract.datasets")):
                if needed not in self.extract.datasets:
                    found.append(
                        (
                            f"corruptions.{name}",
                            f"{needed!r} is not in {where}: add it, so that its clips are extracted",
                        )
                    )
            if corruption.dataset not in self.datasets:
                found.append(
                    (
                        f"corruptions.{name}.dataset",
                        f"{corruption.dataset!r} is not in datasets: its clean model is "
                        f"trained on datasets.{corruption.dataset}",
                    )
                )
        return found


# ------------------------------------------------------------------------------------------------ commands


@dataclass(frozen=True, kw_only=True)
class SweepCommandSettings(SweepSettings):
    """`robustmm sweep`: flags and `--config` section; with `SweepSettings`, every keyword of robustmm.sweep."""

    text_encoder: str | None = setting(Optional(Text("a model name or folder")), None)
    out: str = setting(PATH, "results/sweep")
    model_dir: str | None = setting(Optional(PATH), None)
    keep_models: bool = setting(Boolean(), True)
    shard: Shard | None = setting(SHARD, None)


@dataclass(frozen=True, kw_only=True)
class TrainCommandSettings(ModelSettings):
    """`robustmm train` flags."""

    rate: float = setting(RATE, 0.0)
    seed: int = setting(SEED, 1111)
    text_encoder: str | None = setting(Optional(Text("a model name or folder")), None)
    out: str = setting(PATH, "results/train")
    overwrite: bool = setting(Boolean(), False)


@dataclass(frozen=True, kw_only=True)
class ExtractCommandSettings(ExtractionSettings):
    """`robustmm extract`: flags and `--config` section; null extractors are not run."""

    dataset: str = setting(PATH)
    output_dir: str = setting(PATH, "features")
    cache_dir: str = setting(PATH, "cache/features")
    shard: Shard | None = setting(SHARD, None)
    text: ExtractorSettings | None = setting(Optional(ExtractorKind("text")), None)
    audio: ExtractorSettings | None = setting(Optional(ExtractorKind("audio")), None)
    vision: ExtractorSettings | None = setting(Optional(ExtractorKind("vision")), None)

    def problems(self) -> list[tuple[str, str]]:
        if not self.extractors():
            return [
                ("", "name at least one extractor: --text, --audio or --vision (or those keys in the config section)")
            ]
        return []

    def extractors(self) -> dict[str, ExtractorSettings]:
        return {modality: getattr(self, modality) for modality in MODALITIES if getattr(self, modality) is not None}


@dataclass(frozen=True, kw_only=True)
class AssembleCommandSettings:
    """`robustmm assemble`: flags and `--config` section."""

    dataset: str = setting(PATH)
    output: str = setting(PATH)
    lengths: tuple[int, int, int] = setting(Lengths())
    features_dir: str = setting(PATH, "features")
    text_features: str | None = setting(Optional(PATH), None)
    audio_features: str | None = setting(Optional(PATH), None)
    vision_features: str | None = setting(Optional(PATH), None)


@dataclass(frozen=True, kw_only=True)
class CorruptCommandSettings(NoiseSettings):
    """`robustmm corrupt` flags."""

    dataset: str = setting(PATH)
    out: str = setting(PATH)


def _field_names(instance) -> list[str]:
    return [field.name for field in dataclasses.fields(instance)]


# ------------------------------------------------------------------------------------------------ reading


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML would keep the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_file(path: str | Path) -> dict:
    """A YAML (or JSON) settings file as a mapping."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SettingsError([f"{path}: settings file not found"]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise SettingsError([f"{path}: cannot read the settings file ({error})"]) from None
    try:
        loaded = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise SettingsError(
            [f"{path}: not valid YAML/JSON{where}: {getattr(error, 'problem', None) or error}"]
        ) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise SettingsError([f"{path}: holds a {type(loaded).__name__}, expected a mapping of sections"])
    return loaded


def read_section(path: str | Path, section: str) -> dict:
    """The mapping at dotted `section` (e.g. `extract` or `sims.extract`) of a YAML or JSON file."""
    node = read_file(path)
    for depth, part in enumerate(section.split(".")):
        if not isinstance(node, dict) or part not in node:
            where = ".".join(section.split(".")[:depth]) or "the top level"
            known = ", ".join(map(str, node)) if isinstance(node, dict) else "none"
            raise SettingsError([f"{path}: no section {section!r} ({where} has {known})"])
        node = node[part]
    if node is None:
        return {}
    if not isinstance(node, dict):
        raise SettingsError([f"{path}: section {section!r} is a {type(node).__name__}, expected a mapping"])
    return node


def parse(schema: type, raw, locate: Callable[[str], str]):
    """`raw` checked against `schema`; `locate` names where a dotted key path came from (file and key, or flag)."""
    problems = Problems()
    parsed = Section(schema).parse(raw, "", problems)
    if problems.found:
        raise SettingsError(
            [f"{where}: {message}" if (where := locate(path)) else message for path, message in problems.found]
        )
    return parsed


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """The whole params.yaml, checked: every problem of every section in one SettingsError."""
    return parse(Params, read_file(path), lambda key: f"{path}: {key}" if key else str(path))


def stage_argument(key: str, value: str, known) -> None:
    """A pipeline script's argument must be one of `known`, the entries of params.yaml's `key` (as dvc.yaml passes)."""
    if value not in known:
        close = suggestion(value, known)
        raise SettingsError(
            [
                f"{PARAMS_FILE}: {key}: no entry {value!r} (entries: {', '.join(map(str, known)) or 'none'})"
                + (f"; {close}" if close else "")
            ]
        )


def set_path(raw: dict, path: str, value) -> None:
    """Set the dotted key `path` in nested mappings, creating the mappings on the way."""
    *parents, last = path.split(".")
    for part in parents:
        raw = raw.setdefault(part, {})
    raw[last] = value


def load_command_settings(
    schema: type, config: str | Path | None, section: str, flags: dict[str, tuple[str, object]], raw: dict | None = None
):
    """A command's settings: the `--config` file's `section` (or `raw`, that section already read and adjusted),
    then the flags given, which win. `flags` maps a dotted key to (the flag as written, its value); None: not given."""
    if raw is None:
        raw = read_section(config, section) if config is not None else {}
    given = {path: flag for path, (flag, value) in flags.items() if value is not None}
    for path, (_, value) in flags.items():
        if value is not None:
            set_path(raw, path, value)
    flag_names = {path: flag for path, (flag, _) in flags.items()}

    def locate(path: str) -> str:
        if path in given or (config is None and path in flag_names):
            return given.get(path) or flag_names[path]
        if config is not None:
            return f"{config}: {join_path(section, path)}"
        return path  # a required key with no flag of its own

    return parse(schema, raw, locate)
