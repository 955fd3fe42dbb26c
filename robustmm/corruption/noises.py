"""Signal noises applied to decoded clips: one small class per noise, registered by name, with a dataclass config.

Every noise has one `level`, whose meaning is the noise's own (`level_meaning`, checked against `level_range`):

| noise | modality | level |
|---|---|---|
| `white_noise`, `pink_noise`, `brown_noise` | audio | SNR in dB of the track over the added noise (power spectrum flat, 1/f, 1/f^2) |
| `mute` | audio | share of the track silenced, in spans of `span_seconds` at random places |
| `lowpass` | audio | cutoff frequency in Hz of a zero-phase Butterworth low-pass of order `order` |
| `clipping` | audio | share of the samples clipped: the track is cut at that quantile of its magnitude |
| `blur` | vision | standard deviation in pixels of a Gaussian blur of every frame |
| `occlusion` | vision | share of the frame area covered by one patch of `fill` colour, placed once per clip |
| `blank_frames` | vision | share of the frames replaced by black frames |
| `dropped_frames` | vision | share of the frames dropped, each shown as the last frame kept (the picture freezes) |
| `brightness` | vision | gain on every pixel value (1: unchanged, 0.5 darker, 1.5 brighter), clipped to [0, 255] |

The randomness of a clip comes from the `rng` it is given (robustmm.corruption.clips seeds one per clip from the
seed and the clip's id), so the same seed gives the same corruption; the same seed at another level draws the same
random numbers (the same noise waveform, the same frames), so a curve over levels differs only by the level.

Adding a noise: a dataclass config, a class with `name`, `level_meaning`, `level_range` and `config_class`
deriving from AudioNoise or VideoNoise, decorated with `@register`, and a test.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

NOISES: dict[str, type[Noise]] = {}


def register(cls: type[Noise]) -> type[Noise]:
    NOISES[cls.name] = cls
    return cls


class Noise:
    name: ClassVar[str]
    modality: ClassVar[str]  # "audio" or "vision": the stream it changes (the other is copied as it is)
    level_meaning: ClassVar[str]
    level_range: ClassVar[tuple[float | None, float | None]]  # inclusive bounds, None: unbounded
    config_class: ClassVar[type]

    def __init__(self, level: float, config=None):
        low, high = self.level_range
        if (
            isinstance(level, bool)
            or not isinstance(level, (int, float))
            or not math.isfinite(level)
            or (low is not None and level < low)
            or (high is not None and level > high)
        ):
            raise ValueError(f"level {level!r} is not allowed for {self.name} (the level is {self.allowed_levels()})")
        self.level = float(level)
        self.config = config if config is not None else self.config_class()

    @classmethod
    def allowed_levels(cls) -> str:
        low, high = cls.level_range
        bounds = (
            f"in [{low:g}, {high:g}]"
            if low is not None and high is not None
            else f">= {low:g}"
            if low is not None
            else f"<= {high:g}"
            if high is not None
            else "any number"
        )
        return f"{cls.level_meaning}, {bounds}"


class AudioNoise(Noise):
    modality = "audio"

    def apply(self, samples: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
        """(channels, n) float32 samples of the whole track -> the corrupted track, same shape and dtype."""
        raise NotImplementedError


class VideoNoise(Noise):
    modality = "vision"

    def apply(self, frames: Iterator[np.ndarray], count: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """The clip's `count` upright RGB frames (H, W, 3) uint8, in order -> one corrupted frame for each."""
        raise NotImplementedError


def noise_config(name: str, options: dict | None = None):
    """The config of the registered noise `name` built from `options`; ValueError names what is wrong."""
    if name not in NOISES:
        raise ValueError(f"unknown noise {name!r}; known: {', '.join(sorted(NOISES))}")
    config_class = NOISES[name].config_class
    known = [field.name for field in dataclasses.fields(config_class)]
    unknown = sorted(set(options or {}) - set(known))
    if unknown:
        raise ValueError(f"{name}: unknown option(s) {', '.join(unknown)} (its options: {', '.join(known) or 'none'})")
    return config_class(**(options or {}))


def create_noise(name: str, level: float, options: dict | None = None) -> Noise:
    """The registered noise `name` at `level` with its config built from `options`; ValueError names what is wrong."""
    return NOISES[name](level, noise_config(name, options))


def signal_to_noise_db(signal: np.ndarray, noise: np.ndarray) -> float:
    """10 log10 of the signal's power over the noise's, both over all channels and samples."""
    return 10.0 * math.log10(np.mean(np.square(signal, dtype=np.float64)) / np.mean(np.square(noise, dtype=np.float64)))


# ------------------------------------------------------------------------------------------------ audio


@dataclass(frozen=True)
class NoNoiseOptions:
    """A noise without options beyond its level."""


def coloured_noise(shape: tuple[int, int], exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise whose power spectrum falls as 1/f^exponent (0 white, 1 pink, 2 brown), zero mean."""
    white = rng.standard_normal(shape)
    if exponent == 0:
        return white
    spectrum = np.fft.rfft(white, axis=-1)
    frequencies = np.fft.rfftfreq(shape[-1])
    frequencies[0] = frequencies[1] if len(frequencies) > 1 else 1.0
    spectrum *= frequencies ** (-exponent / 2)
    spectrum[..., 0] = 0.0  # no DC offset: the noise is heard, not a shift of the waveform
    return np.fft.irfft(spectrum, n=shape[-1], axis=-1)


class ColouredNoise(AudioNoise):
    """Noise added at an exact signal-to-noise ratio over the whole track; a silent track stays silent."""

    exponent: ClassVar[float]
    level_range = (None, None)
    config_class = NoNoiseOptions

    def apply(self, samples, sample_rate, rng):
        signal_power = float(np.mean(np.square(samples, dtype=np.float64)))
        noise = coloured_noise(samples.shape, self.exponent, rng)
        noise_power = float(np.mean(np.square(noise)))
        if signal_power == 0.0 or noise_power == 0.0:
            return samples.copy()
        noise *= math.sqrt(signal_power / (noise_power * 10.0 ** (self.level / 10.0)))
        return (samples + noise).astype(np.float32)


@register
class WhiteNoise(ColouredNoise):
    name = "white_noise"
    level_meaning = "the SNR in dB of the track over added white noise"
    exponent = 0.0


@register
class PinkNoise(ColouredNoise):
    name = "pink_noise"
    level_meaning = "the SNR in dB of the track over added pink (1/f) noise"
    exponent = 1.0


@register
class BrownNoise(ColouredNoise):
    name = "brown_noise"
    level_meaning = "the SNR in dB of the track over added brown (1/f^2) noise"
    exponent = 2.0


@dataclass(frozen=True)
class MuteOptions:
    span_seconds: float = 0.5  # length of each silenced span

    def __post_init__(self):
        if (
            isinstance(self.span_seconds, bool)
            or not isinstance(self.span_seconds, (int, float))
            or not self.span_seconds > 0
        ):
            raise ValueError(f"mute: span_seconds {self.span_seconds!r} is not allowed (a number of seconds > 0)")


@register
class Mute(AudioNoise):
    name = "mute"
    level_meaning = "the share of the track silenced"
    level_range = (0.0, 1.0)
    config_class = MuteOptions

    def apply(self, samples, sample_rate, rng):
        span = max(1, round(self.config.span_seconds * sample_rate))
        spans = -(-samples.shape[1] // span)
        muted = samples.copy()
        for index in rng.permutation(spans)[: round(self.level * spans)]:
            muted[:, index * span : (index + 1) * span] = 0.0
        return muted


@dataclass(frozen=True)
class LowpassOptions:
    order: int = 8  # of the Butterworth filter, applied forwards and backwards (zero phase)

    def __post_init__(self):
        if isinstance(self.order, bool) or not isinstance(self.order, int) or self.order < 1:
            raise ValueError(f"lowpass: order {self.order!r} is not allowed (an integer >= 1)")


@register
class Lowpass(AudioNoise):
    name = "lowpass"
    level_meaning = "the cutoff frequency in Hz, below half the clip's sample rate"
    level_range = (1.0, None)
    config_class = LowpassOptions

    def apply(self, samples, sample_rate, rng):
        from scipy.signal import butter, sosfiltfilt

        if self.level >= sample_rate / 2:
            raise ValueError(
                f"lowpass: level {self.level:g} Hz is not below half the clip's sample rate {sample_rate} Hz"
            )
        sos = butter(self.config.order, self.level, fs=sample_rate, output="sos")
        if samples.shape[1] <= 3 * (2 * len(sos) + 1):  # too short for sosfiltfilt's edge padding
            return samples.copy()
        return sosfiltfilt(sos, samples, axis=1).astype(np.float32)


@register
class Clipping(AudioNoise):
    name = "clipping"
    level_meaning = "the share of samples clipped (the track is cut at that quantile of its magnitude)"
    level_range = (0.0, 1.0)
    config_class = NoNoiseOptions

    def apply(self, samples, sample_rate, rng):
        if samples.size == 0 or self.level == 0.0:
            return samples.copy()
        threshold = np.quantile(np.abs(samples), 1.0 - self.level)
        return np.clip(samples, -threshold, threshold).astype(np.float32)


# ------------------------------------------------------------------------------------------------ video


@register
class Blur(VideoNoise):
    name = "blur"
    level_meaning = "the standard deviation in pixels of a Gaussian blur"
    level_range = (0.0, None)
    config_class = NoNoiseOptions

    def apply(self, frames, count, rng):
        import cv2

        for frame in frames:
            yield (
                frame
                if self.level == 0.0
                else cv2.GaussianBlur(frame, (0, 0), sigmaX=self.level, borderType=cv2.BORDER_REFLECT)
            )


@dataclass(frozen=True)
class OcclusionOptions:
    fill: tuple[int, int, int] = (0, 0, 0)  # RGB colour of the patch
    position: str = "random"  # random: anywhere in the frame, drawn per clip; centre: the frame's centre

    def __post_init__(self):
        fill = tuple(self.fill) if isinstance(self.fill, (list, tuple)) else ()
        if len(fill) != 3 or not all(
            isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255 for value in fill
        ):
            raise ValueError(f"occlusion: fill {self.fill!r} is not allowed (three integers in [0, 255], RGB)")
        object.__setattr__(self, "fill", fill)
        if self.position not in ("random", "centre"):
            raise ValueError(f"occlusion: position {self.position!r} is not allowed (random or centre)")


@register
class Occlusion(VideoNoise):
    name = "occlusion"
    level_meaning = "the share of the frame area covered by one patch of the frame's shape"
    level_range = (0.0, 1.0)
    config_class = OcclusionOptions

    def apply(self, frames, count, rng):
        patch = None
        for frame in frames:
            if patch is None:
                height, width = frame.shape[:2]
                rows, cols = round(math.sqrt(self.level) * height), round(math.sqrt(self.level) * width)
                if self.config.position == "centre":
                    top, left = (height - rows) // 2, (width - cols) // 2
                else:
                    top, left = int(rng.integers(height - rows + 1)), int(rng.integers(width - cols + 1))
                patch = (slice(top, top + rows), slice(left, left + cols))
            covered = frame.copy()
            covered[patch] = self.config.fill
            yield covered


def chosen_frames(share: float, candidates: int, rng: np.random.Generator, first: int = 0) -> set[int]:
    """round(share * candidates) frame indices drawn from first .. first + candidates - 1."""
    return set((first + rng.permutation(candidates)[: round(share * candidates)]).tolist())


@register
class BlankFrames(VideoNoise):
    name = "blank_frames"
    level_meaning = "the share of the frames replaced by black frames"
    level_range = (0.0, 1.0)
    config_class = NoNoiseOptions

    def apply(self, frames, count, rng):
        blank = chosen_frames(self.level, count, rng)
        for index, frame in enumerate(frames):
            yield np.zeros_like(frame) if index in blank else frame


@register
class DroppedFrames(VideoNoise):
    name = "dropped_frames"
    level_meaning = "the share of the frames after the first dropped, each shown as the last frame kept"
    level_range = (0.0, 1.0)
    config_class = NoNoiseOptions

    def apply(self, frames, count, rng):
        dropped = chosen_frames(self.level, max(count - 1, 0), rng, first=1)
        kept = None
        for index, frame in enumerate(frames):
            if index not in dropped or kept is None:
                kept = frame
            yield kept


@register
class Brightness(VideoNoise):
    name = "brightness"
    level_meaning = "the gain on every pixel value (1 unchanged, below 1 darker, above brighter)"
    level_range = (0.0, None)
    config_class = NoNoiseOptions

    def apply(self, frames, count, rng):
        for frame in frames:
            yield np.clip(np.rint(frame * np.float32(self.level)), 0, 255).astype(np.uint8)
