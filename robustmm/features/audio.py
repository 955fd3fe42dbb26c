"""Audio extractors: `librosa` (the SIMS 33-dim recipe), `opensmile` (eGeMAPSv02), `mfcc` (MFCC with deltas)."""

from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass

import numpy as np

from robustmm.features.base import AudioExtractor, check_config, register
from robustmm.features.decode import ClipError

CHROMA_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def _require_samples(samples: np.ndarray, minimum: int) -> None:
    if len(samples) < minimum:
        raise ClipError(f"audio track too short ({len(samples)} samples, need at least {minimum})")


def _finite(features: np.ndarray) -> np.ndarray:
    # Silence gives -inf in log features; the format stores 0 there (SPEC section 3).
    return np.nan_to_num(np.asarray(features, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)


def _memoize_cqt_filters() -> None:
    """Make librosa build each constant-Q filter bank once per loaded extractor instead of once per clip.

    chroma_cqt rebuilds its filters for every clip (7 octaves, about 80 ms, more than the rest of the recipe),
    yet they depend only on the sample rate and the estimated tuning, which takes one of 100 values (steps of
    0.01 bin): a dataset meets the same values again and again. librosa has no hook for this (its joblib cache
    keys on the whole signal), so its private filter builder is wrapped; the filters are the same arrays, so
    features are bit-identical. Each call starts an empty memo (banks of 100 tunings take about 5 MB).
    """
    constantq = importlib.import_module("librosa.core.constantq")
    current = getattr(constantq, "__vqt_filter_fft")
    build = getattr(current, "__wrapped__", current)
    banks = {}

    def filter_fft(sr, freqs, filter_scale, norm, sparsity, hop_length=None, window="hann", gamma=0.0,
                   dtype=np.complex64, alpha=None):
        args = (sr, freqs, filter_scale, norm, sparsity, hop_length, window, gamma, dtype, alpha)
        if not isinstance(window, str):  # an array window is not hashable: rare, built every time
            return build(*args)
        key = (sr, freqs.tobytes(), filter_scale, norm, sparsity, hop_length, window, gamma, np.dtype(dtype).str,
               None if alpha is None else np.asarray(alpha).tobytes())
        if key not in banks:
            banks[key] = build(*args)
        basis, n_fft, lengths = banks[key]
        # vqt scales the basis in place: every call gets its own copy.
        return basis.copy(), n_fft, lengths.copy()

    filter_fft.__wrapped__ = build
    setattr(constantq, "__vqt_filter_fft", filter_fft)


@dataclass
class LibrosaConfig:
    sample_rate: int = 22050
    hop_length: int = 512
    n_mfcc: int = 20

    def __post_init__(self):
        check_config(self, positive=("sample_rate", "hop_length", "n_mfcc"))


@register
class LibrosaExtractor(AudioExtractor):
    """Zero-crossing rate (1) + MFCC (20, htk mel scale) + chroma_cqt (12) per hop, as MMSA-FET does for SIMS."""

    name = "librosa"
    version = 2  # 2: one BLAS thread (MFCC last bits differed under threaded BLAS, which version 1 used when set)
    config_class = LibrosaConfig

    @property
    def feature_names(self) -> list[str]:
        return ["zcr"] + [f"mfcc_{i}" for i in range(self.config.n_mfcc)] + [f"chroma_{note}" for note in CHROMA_NAMES]

    @property
    def frame_rate(self) -> float:
        return self.config.sample_rate / self.config.hop_length

    def load(self) -> None:
        _memoize_cqt_filters()
        # librosa compiles its numba kernels on first use (seconds): pay that once per worker, not in the first clip.
        self.extract(np.sin(np.linspace(0, 400 * np.pi, self.config.sample_rate)).astype(np.float32))

    def extract(self, samples: np.ndarray) -> np.ndarray:
        import librosa

        _require_samples(samples, self.config.hop_length)
        sr, hop = self.config.sample_rate, self.config.hop_length
        zcr = librosa.feature.zero_crossing_rate(samples, hop_length=hop)
        mfcc = librosa.feature.mfcc(y=samples, sr=sr, hop_length=hop, htk=True, n_mfcc=self.config.n_mfcc)
        with warnings.catch_warnings():
            # chroma_cqt warns about n_fft on its own downsampled low octaves: expected, not a problem of the clip.
            warnings.filterwarnings("ignore", message="n_fft=.* is too large", category=UserWarning)
            chroma = librosa.feature.chroma_cqt(y=samples, sr=sr, hop_length=hop)
        frames = min(zcr.shape[1], mfcc.shape[1], chroma.shape[1])
        return _finite(np.concatenate([zcr[:, :frames], mfcc[:, :frames], chroma[:, :frames]], axis=0).T)


@dataclass
class OpensmileConfig:
    sample_rate: int = 16000
    feature_set: str = "eGeMAPSv02"
    functionals: bool = False  # True: one row of functionals per clip instead of 100 Hz low-level descriptors

    def __post_init__(self):
        check_config(self, positive=("sample_rate",))


@register
class OpensmileExtractor(AudioExtractor):
    """openSMILE eGeMAPSv02 low-level descriptors (25 dims, 100 Hz, as SIMS v2) or functionals (88 dims per clip)."""

    name = "opensmile"
    version = 1
    config_class = OpensmileConfig

    def __init__(self, config=None):
        super().__init__(config)
        self._smile = None

    def _build(self):
        import opensmile

        try:
            feature_set = opensmile.FeatureSet[self.config.feature_set]
        except KeyError:
            raise ValueError(
                f"opensmile: unknown feature_set {self.config.feature_set!r}; known: {', '.join(opensmile.FeatureSet.__members__)}"
            ) from None
        level = opensmile.FeatureLevel.Functionals if self.config.functionals else opensmile.FeatureLevel.LowLevelDescriptors
        return opensmile.Smile(feature_set=feature_set, feature_level=level)

    @property
    def smile(self):
        if self._smile is None:
            self._smile = self._build()
        return self._smile

    @property
    def feature_names(self) -> list[str]:
        return list(self.smile.feature_names)

    @property
    def frame_rate(self) -> float | None:
        return None if self.config.functionals else 100.0

    def load(self) -> None:
        self.smile  # noqa: B018 - builds the native extractor once per worker

    def extract(self, samples: np.ndarray) -> np.ndarray:
        _require_samples(samples, self.config.sample_rate // 10)
        table = self.smile.process_signal(samples, self.config.sample_rate)
        return _finite(table.to_numpy())


@dataclass
class MfccConfig:
    sample_rate: int = 16000
    n_mfcc: int = 13
    window_seconds: float = 0.025
    hop_seconds: float = 0.01
    delta_orders: tuple[int, ...] = (1, 2)

    def __post_init__(self):
        check_config(self, positive=("sample_rate", "n_mfcc", "window_seconds", "hop_seconds", "delta_orders"))


@register
class MfccExtractor(AudioExtractor):
    """MFCC 0..n-1 with their deltas and delta-deltas (the AVEC2019 baseline style: 39 dims at 100 Hz)."""

    name = "mfcc"
    version = 2  # 2: one BLAS thread, as librosa
    config_class = MfccConfig

    @property
    def hop_length(self) -> int:
        return int(round(self.config.hop_seconds * self.config.sample_rate))

    @property
    def feature_names(self) -> list[str]:
        base = [f"mfcc_{i}" for i in range(self.config.n_mfcc)]
        return base + [f"{name}_delta{order}" for order in self.config.delta_orders for name in base]

    @property
    def frame_rate(self) -> float:
        return self.config.sample_rate / self.hop_length

    def load(self) -> None:
        self.extract(np.sin(np.linspace(0, 400 * np.pi, self.config.sample_rate)).astype(np.float32))

    def extract(self, samples: np.ndarray) -> np.ndarray:
        import librosa

        window = int(round(self.config.window_seconds * self.config.sample_rate))
        _require_samples(samples, window)
        mfcc = librosa.feature.mfcc(
            y=samples, sr=self.config.sample_rate, n_mfcc=self.config.n_mfcc, n_fft=window, hop_length=self.hop_length,
        )
        # Deltas need at least 3 frames; librosa's default width 9 is narrowed for very short clips.
        width = min(9, mfcc.shape[1] if mfcc.shape[1] % 2 else mfcc.shape[1] - 1)
        if width < 3:
            raise ClipError(f"audio track too short for deltas ({mfcc.shape[1]} frames)")
        parts = [mfcc] + [librosa.feature.delta(mfcc, order=order, width=width) for order in self.config.delta_orders]
        return _finite(np.concatenate(parts, axis=0).T)
