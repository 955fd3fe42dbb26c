"""The MMSA `.pkl` feature format (SPEC section 3): safe loading, normalising, validating, writing, summary.

A file is `{'train': S, 'valid': S, 'test': S}` (plus an optional `meta` dict of feature names, extractor
configs and versions); each split `S` maps keys to arrays with N rows.
"""

from __future__ import annotations

import builtins
import codecs
import contextlib
import io
import os
import pickle
import tempfile
from pathlib import Path

import numpy as np

from robustmm.errors import UserError

SPLITS = ("train", "valid", "test")
META_KEY = "meta"

FLOAT_KEYS = ("text", "audio", "vision")
LENGTH_KEYS = ("audio_lengths", "vision_lengths")
LABEL_KEYS = ("regression_labels", "regression_labels_T", "regression_labels_A", "regression_labels_V")
STRING_KEYS = ("id", "raw_text", "annotations")
REQUIRED_KEYS = ("id", "raw_text", "text_bert", "audio", "vision", "regression_labels")
RANKS = {
    "id": 1,
    "raw_text": 1,
    "annotations": 1,
    "text_bert": 3,
    "text": 3,
    "audio": 3,
    "vision": 3,
    "audio_lengths": 1,
    "vision_lengths": 1,
    "classification_labels": 1,
    **{key: 1 for key in LABEL_KEYS},
}


class FormatError(UserError):
    """A feature file that cannot be used; the message names the file and every problem found."""

    def __init__(self, path: str | os.PathLike, problems: list[str]):
        self.path = str(path)
        self.problems = problems
        super().__init__(f"{path}: " + ("; ".join(problems) if len(problems) == 1 else "\n  " + "\n  ".join(problems)))


# Globals a feature file may reference: numpy's array and scalar reconstruction (under numpy 1 and 2 module
# names) and builtin containers. Everything else (os.system, eval, arbitrary classes) is refused.
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): np._core.multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): np._core.multiarray.scalar,
    ("numpy.core.numeric", "_frombuffer"): np._core.numeric._frombuffer,
    ("numpy._core.numeric", "_frombuffer"): np._core.numeric._frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # Protocol 2 files carry array bytes as latin-1 text decoded back with _codecs.encode.
    ("_codecs", "encode"): codecs.encode,
}
_BUILTIN_GLOBALS = {
    name: getattr(builtins, name)
    for name in (
        "dict",
        "list",
        "tuple",
        "set",
        "frozenset",
        "str",
        "bytes",
        "bytearray",
        "int",
        "float",
        "complex",
        "bool",
        "slice",
        "range",
    )
}


def _numpy_dtype_class(module: str, name: str):
    # numpy 2 pickles dtypes as numpy.dtypes.Float32DType etc.
    if module == "numpy.dtypes" and name.endswith("DType"):
        candidate = getattr(np.dtypes, name, None)
        if isinstance(candidate, type) and issubclass(candidate, np.dtype):
            return candidate
    return None


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path):
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str):
        if (module, name) in _NUMPY_GLOBALS:
            return _NUMPY_GLOBALS[(module, name)]
        if module in ("builtins", "__builtin__") and name in _BUILTIN_GLOBALS:
            return _BUILTIN_GLOBALS[name]
        if (dtype_class := _numpy_dtype_class(module, name)) is not None:
            return dtype_class
        raise FormatError(
            self._path,
            [
                f"refused to load global '{module}.{name}': feature files may hold only numpy arrays and builtin containers"
            ],
        )


def read_pkl(path: str | os.PathLike) -> dict:
    """Unpickle `path` without executing code from it; no normalising or validation."""
    path = Path(path)
    try:
        with open(path, "rb") as file:
            data = _RestrictedUnpickler(io.BufferedReader(file, buffer_size=1 << 20), path).load()
    except FormatError:
        raise
    except FileNotFoundError:
        raise FormatError(path, ["file not found"]) from None
    except Exception as error:  # a truncated or non-pickle file surfaces as many exception types
        raise FormatError(path, [f"not a readable pickle ({type(error).__name__}: {error})"]) from None
    if not isinstance(data, dict):
        raise FormatError(path, [f"top level is a {type(data).__name__}, expected a dict of splits"])
    return data


def _as_string_array(values) -> np.ndarray:
    return np.array([str(value) for value in values], dtype=object)


def _zero_non_finite(array: np.ndarray, rows_per_chunk: int = 256) -> int:
    """Set -inf/inf/nan to 0 in place, a block of rows at a time so the mask stays small."""
    count = 0
    for start in range(0, len(array), rows_per_chunk):
        block = array[start : start + rows_per_chunk]
        bad = ~np.isfinite(block)
        if bad.any():
            count += int(bad.sum())
            block[bad] = 0.0
    return count


def normalise(data: dict) -> dict[str, int]:
    """Bring a loaded file to canonical dtypes in place; return counts of non-finite features set to 0.

    Lists become arrays; `text`/`audio`/`vision` and labels float32; `text_bert`, lengths and
    classification labels int64; id/text/annotation columns object arrays of str. Arrays already in the
    canonical dtype are not copied (this keeps peak memory near the file's array bytes).
    """
    replaced: dict[str, int] = {}
    for split_name in SPLITS:
        split = data.get(split_name)
        if not isinstance(split, dict):
            continue
        for key in list(split):
            value = split[key]
            if key in STRING_KEYS:
                split[key] = _as_string_array(value)
            elif key in FLOAT_KEYS or key in LABEL_KEYS:
                array = np.asarray(value, dtype=np.float32)
                if key in FLOAT_KEYS:
                    if not array.flags.writeable:
                        array = array.copy()
                    count = _zero_non_finite(array)
                    if count:
                        replaced[f"{split_name}/{key}"] = count
                split[key] = array
            elif key in ("text_bert", "classification_labels") or key in LENGTH_KEYS:
                array = np.asarray(value)
                if (
                    np.issubdtype(array.dtype, np.floating)
                    and np.all(np.isfinite(array))
                    and np.all(array == np.round(array))
                ):
                    array = array.astype(np.int64)
                elif np.issubdtype(array.dtype, np.integer):
                    array = array.astype(np.int64, copy=False)
                split[key] = array
    return replaced


def _split_problems(name: str, split: dict) -> list[str]:
    problems = []
    missing = [key for key in REQUIRED_KEYS if key not in split]
    if missing:
        problems.append(f"{name}: missing keys {', '.join(missing)}")
    arrays = {key: value for key, value in split.items() if isinstance(value, np.ndarray)}
    for key, value in split.items():
        if key not in arrays:
            problems.append(f"{name}/{key}: a {type(value).__name__}, expected an array")
    for key, array in arrays.items():
        if key in RANKS and array.ndim != RANKS[key]:
            problems.append(f"{name}/{key}: rank {array.ndim} (shape {array.shape}), expected rank {RANKS[key]}")
    sizes = {key: len(array) for key, array in arrays.items() if array.ndim >= 1}
    if len(set(sizes.values())) > 1:
        listing = ", ".join(f"{key}={size}" for key, size in sizes.items())
        problems.append(f"{name}: keys disagree on the number of rows N ({listing})")

    text_bert = arrays.get("text_bert")
    if text_bert is not None and text_bert.ndim == 3:
        if text_bert.shape[1] != 3:
            problems.append(f"{name}/text_bert: shape {text_bert.shape}, expected (N, 3, L_t)")
        elif not np.issubdtype(text_bert.dtype, np.integer):
            problems.append(f"{name}/text_bert: values are not integers (dtype {text_bert.dtype})")
        else:
            if (text_bert[:, 0] < 0).any():
                problems.append(f"{name}/text_bert: row 0 (token ids) has negative values")
            if not np.isin(text_bert[:, 1], (0, 1)).all():
                problems.append(f"{name}/text_bert: row 1 (attention mask) has values other than 0 and 1")
            if not np.isin(text_bert[:, 2], (0, 1)).all():
                problems.append(f"{name}/text_bert: row 2 (segment ids) has values other than 0 and 1")

    for modality in ("audio", "vision"):
        features, lengths = arrays.get(modality), arrays.get(f"{modality}_lengths")
        if lengths is None or features is None or features.ndim != 3 or lengths.ndim != 1:
            continue
        if not np.issubdtype(lengths.dtype, np.integer):
            problems.append(f"{name}/{modality}_lengths: values are not integers (dtype {lengths.dtype})")
            continue
        if (lengths < 0).any():
            problems.append(f"{name}/{modality}_lengths: {int((lengths < 0).sum())} negative lengths")
        too_long = lengths > features.shape[1]
        if too_long.any():
            problems.append(
                f"{name}/{modality}_lengths: {int(too_long.sum())} lengths exceed the padded length "
                f"{features.shape[1]} (max {int(lengths.max())})"
            )
    for key in LABEL_KEYS:
        labels = arrays.get(key)
        if labels is not None and np.issubdtype(labels.dtype, np.number) and not np.isfinite(labels).all():
            problems.append(f"{name}/{key}: {int((~np.isfinite(labels)).sum())} non-finite labels")
    return problems


def validate(data: dict) -> list[str]:
    """Every problem of a (normalised) file, by split and key; an empty list means valid."""
    problems = []
    for key in data:
        if key not in SPLITS and key != META_KEY:
            problems.append(f"unexpected top-level key {key!r} (expected {', '.join(SPLITS)} and optional {META_KEY})")
    for name in SPLITS:
        split = data.get(name)
        if split is None:
            problems.append(f"missing split {name!r}")
        elif not isinstance(split, dict):
            problems.append(f"{name}: a {type(split).__name__}, expected a dict of arrays")
        else:
            problems.extend(_split_problems(name, split))
    for key in ("text", "audio", "vision", "text_bert"):
        dims = {
            name: data[name][key].shape[-1 if key != "text_bert" else 1]
            for name in SPLITS
            if isinstance(data.get(name), dict)
            and isinstance(data[name].get(key), np.ndarray)
            and data[name][key].ndim == 3
        }
        if len(set(dims.values())) > 1 and key != "text_bert":
            listing = ", ".join(f"{name}={dim}" for name, dim in dims.items())
            problems.append(f"{key}: feature dims differ between splits ({listing})")
    return problems


def load(path: str | os.PathLike) -> dict:
    """Read, normalise and validate a feature file; raise FormatError listing every problem."""
    data = read_pkl(path)
    normalise(data)
    problems = validate(data)
    if problems:
        raise FormatError(path, problems)
    return data


def _canonical(value):
    if isinstance(value, dict):
        return {key: _canonical(value[key]) for key in sorted(value, key=str)}
    if isinstance(value, (list, tuple)):
        return type(value)(_canonical(item) for item in value)
    if isinstance(value, np.ndarray):
        return np.ascontiguousarray(value)
    return value


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike):
    """A binary file that replaces `path` only once fully written: a crash leaves the old file or none."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            yield file
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write(data: dict, path: str | os.PathLike) -> None:
    """Write a feature file atomically; the same content always gives byte-identical files.

    Keys are sorted and the pickler runs without its memo, so the bytes depend only on the content, never
    on object identity. Protocol 4 keeps the files readable by the upstream tools.
    """
    with atomic_write(path) as file:
        pickler = pickle.Pickler(file, protocol=4)
        pickler.fast = True
        pickler.dump(_canonical(data))


def array_bytes(data: dict) -> int:
    return sum(
        value.nbytes
        for split in (data.get(name, {}) for name in SPLITS)
        for value in split.values()
        if isinstance(value, np.ndarray) and value.dtype != object
    )


def _length_stats(lengths: np.ndarray) -> str:
    if len(lengths) == 0:
        return "no rows"
    return (
        f"mean {lengths.mean():.1f}, min {int(lengths.min())}, median {int(np.median(lengths))}, "
        f"max {int(lengths.max())}, empty {int((lengths == 0).sum())}"
    )


def _label_stats(labels: np.ndarray) -> str:
    if len(labels) == 0 or not np.issubdtype(labels.dtype, np.number):
        return "no labels"
    finite = labels[np.isfinite(labels)]
    text = f"mean {finite.mean():.3f}, std {finite.std():.3f}, min {finite.min():.3f}, max {finite.max():.3f}"
    signs = f"negative {int((finite < 0).sum())}, zero {int((finite == 0).sum())}, positive {int((finite > 0).sum())}"
    return f"{text}; {signs}"


def describe(data: dict) -> str:
    """A readable summary: splits, N, shapes and dtypes, length statistics, label distribution."""
    lines = []
    for name in SPLITS:
        split = data.get(name)
        if not isinstance(split, dict):
            continue
        rows = {len(value) for value in split.values() if isinstance(value, np.ndarray) and value.ndim}
        lines.append(f"[{name}] N = {', '.join(map(str, sorted(rows))) or 0}")
        for key in sorted(split):
            value = split[key]
            shape = value.shape if isinstance(value, np.ndarray) else f"<{type(value).__name__}>"
            dtype = value.dtype if isinstance(value, np.ndarray) else ""
            lines.append(f"  {key:<24} {str(shape):<20} {dtype}")
        text_bert = split.get("text_bert")
        if isinstance(text_bert, np.ndarray) and text_bert.ndim == 3 and text_bert.shape[1] >= 2:
            lines.append(f"  text tokens: {_length_stats(np.asarray(text_bert[:, 1]).sum(axis=1))}")
        for modality in ("audio", "vision"):
            lengths = split.get(f"{modality}_lengths")
            if isinstance(lengths, np.ndarray) and lengths.ndim == 1:
                lines.append(f"  {modality} frames: {_length_stats(lengths)}")
        labels = split.get("regression_labels")
        if isinstance(labels, np.ndarray) and labels.ndim == 1:
            lines.append(f"  labels: {_label_stats(labels)}")
    dims = {
        key: data["train"][key].shape[-1]
        for key in ("text", "audio", "vision")
        if isinstance(data.get("train"), dict)
        and isinstance(data["train"].get(key), np.ndarray)
        and data["train"][key].ndim == 3
    }
    if dims:
        lines.append("feature dims: " + ", ".join(f"{key} {dim}" for key, dim in dims.items()))
    meta = data.get(META_KEY)
    if isinstance(meta, dict):
        lines.append("meta: " + ", ".join(sorted(map(str, meta))))
    return "\n".join(lines)
