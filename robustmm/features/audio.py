"""Audio extractors: `librosa` (recipes: SIMS 33 dims, MMSA-FET default 70), `opensmile` (eGeMAPSv02), `mfcc` (+ deltas)."""

from __future__ import annotations

import importlib
import inspect
import warnings
from dataclasses import dataclass

import numpy as np

from robustmm.features.base import AudioExtractor, check_config, register
from robustmm.features.decode import AudioFormat, ClipError

CHROMA_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def _require_samples(samples: np.ndarray, minimum: int) -> None:
    if len(samples) < minimum:
        raise ClipError(f"audio track too short ({len(samples)} samples, need at least {minimum})")


def _finite(features: np.ndarray) -> np.ndarray:
    # Silence gives -inf in log features; the format stores 0 there (SPEC section 3).
    return np.nan_to_num(np.asarray(features, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)


def _sparsify_rows(x: np.ndarray, quantile: float, dtype):
    """librosa.util.sparsify_rows built as CSR at once: librosa sets the kept entries of each row through a lil_matrix,
    which took half the time of building a constant-Q filter bank. The same entries (those at or above the row's
    quantile threshold, cast to `dtype`, zeros dropped as lil does) in the same order, so the same matrix."""
    import scipy.sparse

    mags = np.abs(x)
    norms = np.sum(mags, axis=1, keepdims=True)
    mag_sort = np.sort(mags, axis=1)
    cumulative_mag = np.cumsum(mag_sort / norms, axis=1)
    threshold_idx = np.argmin(cumulative_mag < quantile, axis=1)
    values = x.astype(dtype)
    keep = (mags >= mag_sort[np.arange(len(x)), threshold_idx][:, np.newaxis]) & (values != 0)
    indptr = np.concatenate([[0], np.cumsum(keep.sum(axis=1))]).astype(np.int32)
    return scipy.sparse.csr_matrix((values[keep], np.nonzero(keep)[1].astype(np.int32), indptr), shape=x.shape)


def _vqt_filter_fft(sr, freqs, filter_scale, norm, sparsity, hop_length=None, window="hann", gamma=0.0,
                    dtype=np.complex64, alpha=None):
    """librosa.core.constantq.__vqt_filter_fft (librosa 0.11) with the sparsification of _sparsify_rows; the test
    tests/test_features_extractors.py compares the two banks entry by entry."""
    import librosa

    basis, lengths = librosa.filters.wavelet(freqs=freqs, sr=sr, filter_scale=filter_scale, norm=norm, pad_fft=True,
                                             window=window, gamma=gamma, alpha=alpha)
    n_fft = basis.shape[1]
    if hop_length is not None and n_fft < 2.0 ** (1 + np.ceil(np.log2(hop_length))):
        n_fft = int(2.0 ** (1 + np.ceil(np.log2(hop_length))))
    basis *= lengths[:, np.newaxis] / float(n_fft)
    fft_basis = librosa.get_fftlib().fft(basis, n=n_fft, axis=1)[:, : (n_fft // 2) + 1]
    return _sparsify_rows(fft_basis, sparsity, dtype), n_fft, lengths


def _memoize_cqt_filters() -> None:
    """Make librosa build each constant-Q filter bank once per loaded extractor instead of once per clip.

    chroma_cqt rebuilds its filters for every clip (7 octaves, about 80 ms, more than the rest of the recipe),
    yet they depend only on the sample rate and the estimated tuning, which takes one of 100 values (steps of
    0.01 bin): a dataset meets the same values again and again. librosa has no hook for this (its joblib cache
    keys on the whole signal), so its private filter builder is replaced by one that memoizes _vqt_filter_fft;
    the filters are the same arrays, so features are bit-identical. Each call starts an empty memo (banks of
    100 tunings take about 5 MB).
    """
    constantq = importlib.import_module("librosa.core.constantq")
    current = getattr(constantq, "__vqt_filter_fft")
    librosa_builder = getattr(current, "__wrapped__", current)
    banks = {}

    def filter_fft(sr, freqs, filter_scale, norm, sparsity, hop_length=None, window="hann", gamma=0.0,
                   dtype=np.complex64, alpha=None):
        args = (sr, freqs, filter_scale, norm, sparsity, hop_length, window, gamma, dtype, alpha)
        if not isinstance(window, str):  # an array window is not hashable: rare, built every time
            return librosa_builder(*args)
        key = (sr, freqs.tobytes(), filter_scale, norm, sparsity, hop_length, window, gamma, np.dtype(dtype).str,
               None if alpha is None else np.asarray(alpha).tobytes())
        if key not in banks:
            banks[key] = _vqt_filter_fft(*args)
        basis, n_fft, lengths = banks[key]
        # vqt scales the basis in place: every call gets its own copy.
        return basis.copy(), n_fft, lengths.copy()

    filter_fft.__wrapped__ = librosa_builder
    setattr(constantq, "__vqt_filter_fft", filter_fft)


@dataclass
class AudioDecoding:
    """How an audio extractor gets its samples (robustmm.features.decode.AudioFormat): `decode` pyav | mmsa-fet,
    `resampler` the librosa res_type of mmsa-fet (None: soxr_hq, as MMSA-FET 0.4.1; kaiser_best, as the published
    files made under librosa 0.9)."""

    decode: str = "pyav"
    resampler: str | None = None

    def __post_init__(self):
        AudioFormat(self.sample_rate, self.decode, self.resampler)  # a ValueError naming the bad setting


# librosa recipes as MMSA-FET's configs give them: STFT size, hop, and the ordered features with their arguments.
LIBROSA_RECIPES = {
    # SIMS (Yu et al. 2020): zero-crossing rate 1 + MFCC 20 (htk) + chroma_cqt 12 = 33 at 22050 / 512.
    "sims": {"n_fft": 2048, "hop_length": 512,
             "features": [{"zero_crossing_rate": {}}, {"mfcc": {"n_mfcc": 20, "htk": True}}, {"chroma_cqt": {}}]},
    # MMSA-FET 0.4.1 example_configs/librosa.json, 70 dims. Its "hop_lenth" key is misspelt there, so MMSA-FET
    # runs with its default hop of 128.
    "mmsa-fet-default": {"n_fft": 512, "hop_length": 128, "features": [
        {"chroma_stft": {}}, {"chroma_cqt": {}}, {"chroma_cens": {}}, {"mfcc": {"n_mfcc": 13, "htk": True}},
        {"rms": {}}, {"spectral_centroid": {}}, {"spectral_bandwidth": {}}, {"spectral_contrast": {}},
        {"spectral_flatness": {}}, {"spectral_rolloff": {}}, {"poly_features": {}}, {"tonnetz": {}},
        {"zero_crossing_rate": {}},
    ]},
}
# Dims of each supported librosa.feature function from its arguments (MMSA-FET's naming rules).
_LIBROSA_DIMS = {
    "chroma_stft": lambda args: args.get("n_chroma", 12), "chroma_cqt": lambda args: args.get("n_chroma", 12),
    "chroma_cens": lambda args: args.get("n_chroma", 12), "mfcc": lambda args: args.get("n_mfcc", 20),
    "melspectrogram": lambda args: args.get("n_mels", 128), "rms": lambda args: 1,
    "spectral_centroid": lambda args: 1, "spectral_bandwidth": lambda args: 1,
    "spectral_contrast": lambda args: args.get("n_bands", 6) + 1, "spectral_flatness": lambda args: 1,
    "spectral_rolloff": lambda args: 1, "poly_features": lambda args: args.get("order", 1) + 1,
    "tonnetz": lambda args: 6, "zero_crossing_rate": lambda args: 1,
}
TONNETZ_NAMES = ("fifth_x", "fifth_y", "minor_x", "minor_y", "major_x", "major_y")
# Set by the recipe for every feature whose function takes them, as MMSA-FET does.
_RECIPE_ARGS = ("y", "sr", "hop_length", "n_fft", "frame_length")


def _recipe_features(recipe) -> list[tuple[str, dict]]:
    """[(librosa.feature name, its arguments)] of a recipe's features list: names or one-key mappings."""
    if not isinstance(recipe, (list, tuple)) or not recipe:
        raise ValueError(f"librosa: recipe must be one of {', '.join(LIBROSA_RECIPES)} or a non-empty list of "
                         f"features, got {recipe!r}")
    features = []
    for item in recipe:
        if isinstance(item, str):
            name, args = item, {}
        elif isinstance(item, dict) and len(item) == 1:
            (name, args), = item.items()
            args = dict(args or {})
        else:
            raise ValueError(f"librosa: recipe item {item!r} is neither a feature name nor {{name: {{arguments}}}}")
        if name not in _LIBROSA_DIMS:
            raise ValueError(f"librosa: recipe feature {name!r} unsupported; supported: {', '.join(_LIBROSA_DIMS)}")
        reserved = sorted(set(args) & set(_RECIPE_ARGS))
        if reserved:
            raise ValueError(f"librosa: recipe feature {name!r} sets {', '.join(reserved)}: the recipe's sample_rate, "
                             "n_fft and hop_length apply to every feature")
        features.append((name, args))
    return features


def _check_recipe_arguments(features: list[tuple[str, dict]]) -> None:
    """Refuse arguments that a recipe's librosa.feature functions do not take. Only a recipe given as a list is
    checked: importing librosa takes seconds (numba), and every stage checks params.yaml."""
    import librosa

    for name, args in features:
        parameters = inspect.signature(getattr(librosa.feature, name)).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        unknown = sorted(set(args) - set(parameters))
        if unknown and not takes_any:
            raise ValueError(f"librosa: recipe feature {name!r} has no argument(s) {', '.join(unknown)}")


@dataclass
class LibrosaConfig(AudioDecoding):
    sample_rate: int = 22050
    recipe: str | list = "sims"  # a name in LIBROSA_RECIPES or an ordered list of features ({name: {arguments}})
    n_fft: int | None = None  # None: the recipe's (an explicit list: 2048)
    hop_length: int | None = None  # None: the recipe's (an explicit list: 512)

    def __post_init__(self):
        check_config(self, positive=("sample_rate", "n_fft", "hop_length"))
        super().__post_init__()
        if isinstance(self.recipe, str) and self.recipe not in LIBROSA_RECIPES:
            raise ValueError(f"librosa: unknown recipe {self.recipe!r}; known: {', '.join(LIBROSA_RECIPES)} or a list")
        features = _recipe_features(self.features)
        if not isinstance(self.recipe, str):
            _check_recipe_arguments(features)

    @property
    def features(self) -> list:
        return LIBROSA_RECIPES[self.recipe]["features"] if isinstance(self.recipe, str) else self.recipe

    def _recipe_value(self, key: str, explicit_default: int) -> int:
        if getattr(self, key) is not None:
            return int(getattr(self, key))
        return LIBROSA_RECIPES[self.recipe][key] if isinstance(self.recipe, str) else explicit_default

    @property
    def resolved_n_fft(self) -> int:
        return self._recipe_value("n_fft", 2048)

    @property
    def resolved_hop_length(self) -> int:
        return self._recipe_value("hop_length", 512)


def _librosa_feature_names(name: str, args: dict) -> list[str]:
    dims = _LIBROSA_DIMS[name](args)
    if name == "tonnetz":
        return [f"tonnetz_{axis}" for axis in TONNETZ_NAMES]
    if name.startswith("chroma_") and dims == len(CHROMA_NAMES):
        return [f"{name}_{note}" for note in CHROMA_NAMES]
    return [name] if dims == 1 else [f"{name}_{i}" for i in range(dims)]


@register
class LibrosaExtractor(AudioExtractor):
    """A librosa recipe: ordered librosa.feature functions per hop, computed as MMSA-FET computes them.

    Every feature gets the recipe's sample rate, hop and n_fft (or frame_length) where its function takes them
    (mfcc always gets n_fft): MMSA-FET's rules, so a recipe gives MMSA-FET's numbers for the same samples.
    """

    name = "librosa"
    # 3: recipes (n_fft, feature list) and the channel-mean downmix. 2: one BLAS thread (MFCC last bits differed
    # under threaded BLAS).
    version = 3
    config_class = LibrosaConfig
    uses_jit_cache = True

    @property
    def feature_names(self) -> list[str]:
        return [name for feature, args in _recipe_features(self.config.features)
                for name in _librosa_feature_names(feature, args)]

    @property
    def frame_rate(self) -> float:
        return self.config.sample_rate / self.config.resolved_hop_length

    def load(self) -> None:
        _memoize_cqt_filters()
        # librosa compiles its numba kernels on first use (seconds): pay that once per worker, not in the first clip.
        self.extract(np.sin(np.linspace(0, 400 * np.pi, self.config.sample_rate)).astype(np.float32))

    def extract(self, samples: np.ndarray) -> np.ndarray:
        import librosa

        sr, hop, n_fft = self.config.sample_rate, self.config.resolved_hop_length, self.config.resolved_n_fft
        _require_samples(samples, hop)
        parts = []
        with warnings.catch_warnings():
            # The constant-Q features warn about n_fft on their own downsampled low octaves, and 128 mel bands on a
            # short n_fft (MMSA-FET's 512) leave some empty: expected of the recipe, not a problem of the clip.
            warnings.filterwarnings("ignore", message="n_fft=.* is too large", category=UserWarning)
            warnings.filterwarnings("ignore", message="Empty filters detected", category=UserWarning)
            for feature, args in _recipe_features(self.config.features):
                function = getattr(librosa.feature, feature)
                parameters = inspect.signature(function).parameters
                kwargs = dict(args, hop_length=hop)
                if "sr" in parameters:
                    kwargs["sr"] = sr
                if "n_fft" in parameters or feature == "mfcc":
                    kwargs["n_fft"] = n_fft
                elif "frame_length" in parameters:
                    kwargs["frame_length"] = n_fft
                parts.append(function(y=samples, **kwargs))
        frames = min(part.shape[1] for part in parts)
        features = np.concatenate([part[:, :frames] for part in parts], axis=0).T
        if features.shape[1] != self.dim:
            raise RuntimeError(f"librosa recipe gave {features.shape[1]} dims, its feature names say {self.dim}")
        return _finite(features)


@dataclass
class OpensmileConfig(AudioDecoding):
    sample_rate: int = 16000
    feature_set: str = "eGeMAPSv02"
    functionals: bool = False  # True: one row of functionals per clip instead of 100 Hz low-level descriptors

    def __post_init__(self):
        check_config(self, positive=("sample_rate",))
        super().__post_init__()


@register
class OpensmileExtractor(AudioExtractor):
    """openSMILE eGeMAPSv02 low-level descriptors (25 dims, 100 Hz, as SIMS v2) or functionals (88 dims per clip)."""

    name = "opensmile"
    version = 2  # 2: the channel-mean downmix (was PyAV's (L + R) / sqrt(2))
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
class MfccConfig(AudioDecoding):
    sample_rate: int = 16000
    n_mfcc: int = 13
    window_seconds: float = 0.025
    hop_seconds: float = 0.01
    delta_orders: tuple[int, ...] = (1, 2)

    def __post_init__(self):
        check_config(self, positive=("sample_rate", "n_mfcc", "window_seconds", "hop_seconds", "delta_orders"))
        super().__post_init__()


@register
class MfccExtractor(AudioExtractor):
    """MFCC 0..n-1 with their deltas and delta-deltas (the AVEC2019 baseline style: 39 dims at 100 Hz)."""

    name = "mfcc"
    version = 3  # 3: the channel-mean downmix (was PyAV's (L + R) / sqrt(2)); 2: one BLAS thread, as librosa
    config_class = MfccConfig
    uses_jit_cache = True

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
