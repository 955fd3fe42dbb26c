"""Per-clip cache of extractor outputs, keyed by (clip content hash, extractor name, config, version), and the
private numba cache that the extraction processes share."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import pickle
import sys
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robustmm.cache_folder import user_cache_folder
from robustmm.data import atomic_write
from robustmm.features.base import Extractor


@dataclass
class ClipResult:
    arrays: dict[str, np.ndarray]  # "features" (T, dim) for audio/vision; "text_bert" and "text" for text
    failure: str | None = None  # why this modality of the clip is empty
    quality: dict = field(default_factory=dict)  # e.g. {"frames": sampled, "detected": with a face}


def file_hash(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class DamagedEntry(ValueError):
    """A cache entry that cannot be read (truncated, overwritten, from another program): it is extracted again."""


class FeatureCache:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def entry(self, content_hash: str, extractor: Extractor) -> Path:
        identity = json.dumps(
            {"content": content_hash, "extractor": extractor.name, "config": dataclasses.asdict(extractor.config),
             "version": extractor.version},
            sort_keys=True,
        )
        key = hashlib.sha256(identity.encode("utf-8")).hexdigest()
        return self.root / extractor.name / key[:2] / f"{key}.npz"

    @staticmethod
    def load(path: Path, shapes: dict[str, tuple[int | None, ...]]) -> ClipResult | None:
        """The entry at `path` (None when absent); `shapes` gives each array it must hold (None: any size there).

        Raises DamagedEntry when the file cannot be read or does not hold what the extractor writes.
        """
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as stored:
                info = json.loads(str(stored["info"]))
                arrays = {name: stored[name] for name in stored.files if name != "info"}
            result = ClipResult(arrays=arrays, failure=info["failure"], quality=info["quality"])
        except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile, zlib.error,
                pickle.UnpicklingError) as error:
            raise DamagedEntry(f"{type(error).__name__}: {error}") from None
        for name, shape in shapes.items():
            array = result.arrays.get(name)
            if array is None:
                raise DamagedEntry(f"no {name!r} array")
            if array.ndim != len(shape) or any(want is not None and have != want for have, want in zip(array.shape, shape)):
                raise DamagedEntry(f"{name!r} has shape {array.shape}, expected {tuple('*' if n is None else n for n in shape)}")
        return result

    @staticmethod
    def store(path: Path, result: ClipResult) -> None:
        """Write atomically: a crash leaves either the whole entry or none."""
        with atomic_write(path) as file:
            info = json.dumps({"failure": result.failure, "quality": result.quality}, sort_keys=True)
            np.savez(file, info=np.array(info), **result.arrays)


JIT_CACHE_ENV_VAR = "NUMBA_CACHE_DIR"


def use_private_jit_cache() -> Path:
    """Point numba's on-disk cache (librosa's `cache=True` kernels) at a folder of this environment's own, unless
    NUMBA_CACHE_DIR is set already; return the folder. Set before the workers start, so they inherit it.

    numba's default is `__pycache__` beside librosa in site-packages, which every environment and every process
    writes at once; workers compiling the same kernels together left its index and object files out of step, and
    every later process that loaded them segfaulted.
    """
    if not os.environ.get(JIT_CACHE_ENV_VAR):
        environment = hashlib.sha256(sys.prefix.encode("utf-8")).hexdigest()[:16]
        os.environ[JIT_CACHE_ENV_VAR] = str(user_cache_folder("numba", environment))
    return Path(os.environ[JIT_CACHE_ENV_VAR])


def librosa_caches_privately() -> bool:
    """Whether this process's librosa kernels cache in the private folder. numba fixes a function's cache folder
    when the function first runs: a process that ran librosa before the folder was set (a test process, say)
    keeps its kernels from another cache, writes none into the folder, and must not mark it as holding them
    (such a marker let two processes compile them into it at once, outside the lock, and every later load
    segfaulted). The folder is read from numba's dispatcher (a private attribute); where it is not found, no
    marker is left and every load takes the lock."""
    import librosa.util.utils

    cache = getattr(getattr(librosa.util.utils._localmax, "_dispatcher", None), "cache", None)
    folder = getattr(cache, "_cache_path", None)
    return isinstance(folder, str) and Path(folder).is_relative_to(use_private_jit_cache())


def jit_cache_marker(extractors: list[Extractor]) -> Path:
    """The file that says `extractors` have loaded into the private numba cache once, holding its lock: the cache
    then holds every kernel their load compiles, and later processes load them side by side without the lock
    (waiting for it put the second worker of a pool a whole librosa import behind the first). It names what
    the kernels depend on: the extractors and configs, the librosa and numba versions and this CPU (numba
    compiles for the host CPU)."""
    from importlib.metadata import PackageNotFoundError, version

    import llvmlite.binding

    def installed(package: str) -> str | None:
        try:
            return version(package)
        except PackageNotFoundError:
            return None

    identity = json.dumps({
        "extractors": [[extractor.name, extractor.version, dataclasses.asdict(extractor.config)] for extractor in extractors],
        "packages": {package: installed(package) for package in ("librosa", "numba", "llvmlite", "numpy")},
        "cpu": [llvmlite.binding.get_host_cpu_name(), llvmlite.binding.get_host_cpu_features().flatten()],
    }, sort_keys=True)
    return use_private_jit_cache() / f"loaded-{hashlib.sha256(identity.encode('utf-8')).hexdigest()[:24]}"


@contextlib.contextmanager
def jit_cache_lock(wait: bool = True):
    """Hold the numba cache's lock: one process at a time loads extractors, so the first compiles and writes the
    kernels and the others find them complete (numba itself does not lock its cache files). Yields whether the
    lock is held: with `wait=False`, False at once when another process holds it."""
    folder = use_private_jit_cache()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "robustmm.lock", "a") as lock:
        try:
            import fcntl
        except ImportError:  # no fcntl (Windows): processes load without the lock
            yield True
            return
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
