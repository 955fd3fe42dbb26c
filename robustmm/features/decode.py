"""Decoding a clip once with PyAV: the audio track in every format asked for, frames at every fps asked for.

Audio formats (`AudioFormat`): a sample rate and a decoding recipe. `pyav` resamples the decoded float samples with
PyAV's resampler (FFmpeg's swresample); `mmsa-fet` reproduces MMSA-FET's `ffmpeg -acodec pcm_s16le` then
`librosa.load(wav, sr)`: 16-bit PCM at the native rate and layout, then `librosa.resample` with a chosen resampler.
Both mix channels by their mean, as librosa.to_mono does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

AUDIO_DECODERS = ("pyav", "mmsa-fet")
# librosa.resample's res_type values that need no package beyond robustmm's (kaiser_* come from resampy).
MMSA_FET_RESAMPLERS = ("soxr_vhq", "soxr_hq", "soxr_mq", "soxr_lq", "soxr_qq", "kaiser_best", "kaiser_fast", "fft",
                       "scipy", "polyphase")
MMSA_FET_DEFAULT_RESAMPLER = "soxr_hq"  # librosa >= 0.10's default, the one MMSA-FET 0.4.1 gets today
# A frame is taken at grid time k / fps when its own time reaches it; this slack absorbs rounding of timestamps.
_TIME_SLACK = 1e-6


class ClipError(Exception):
    """A problem of the clip itself (undecodable, no audio stream, no face): reported per clip, never fatal.

    `cache=False` for failures that a rerun may not repeat (a crashed external tool), so they are retried.
    """

    def __init__(self, reason: str, cache: bool = True):
        super().__init__(reason)
        self.cache = cache


@dataclass(frozen=True)
class AudioFormat:
    """Mono float32 samples at `sample_rate`, decoded by `decode`; `resampler` is the librosa res_type of `mmsa-fet`
    (None there: soxr_hq) and must stay None for `pyav`. Raises ValueError for an unknown recipe or resampler."""

    sample_rate: int
    decode: str = "pyav"
    resampler: str | None = None

    def __post_init__(self):
        if self.decode not in AUDIO_DECODERS:
            raise ValueError(f"audio decode {self.decode!r} unknown; known: {', '.join(AUDIO_DECODERS)}")
        if self.decode == "pyav" and self.resampler is not None:
            raise ValueError(f"audio resampler {self.resampler!r} needs decode: mmsa-fet (pyav resamples with PyAV's own)")
        if self.decode == "mmsa-fet":
            if self.resampler is None:
                object.__setattr__(self, "resampler", MMSA_FET_DEFAULT_RESAMPLER)
            elif self.resampler not in MMSA_FET_RESAMPLERS:
                raise ValueError(f"audio resampler {self.resampler!r} unknown; known: {', '.join(MMSA_FET_RESAMPLERS)}")
        if int(self.sample_rate) != self.sample_rate or self.sample_rate <= 0:
            raise ValueError(f"audio sample_rate must be a positive integer, got {self.sample_rate!r}")


@dataclass
class DecodedClip:
    audio: dict[AudioFormat, np.ndarray] | None  # mono float32 samples per format; None when there is no audio stream
    has_video: bool
    duration: float  # seconds, from the container or the longest stream decoded


def _reason(error: Exception) -> str:
    # FFmpeg errors repeat the file name; the report names the clip already, and equal reasons then group.
    return getattr(error, "strerror", None) or str(error)


def _upright(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """The frame as it is meant to be seen: phones store frames sideways with a display matrix saying how to turn
    them (a face model given the sideways face still finds it, with the wrong head pose and blendshapes).
    `rotation` is FFmpeg's angle in degrees counterclockwise, as np.rot90 turns; mirroring is not applied."""
    quarter_turns = round(rotation / 90) % 4
    return np.rot90(rgb, quarter_turns) if quarter_turns else rgb


class _FrameSampler:
    def __init__(self, fps: float):
        self.fps = fps
        self.next_time = 0.0

    def wants(self, time: float) -> bool:
        if time + _TIME_SLACK < self.next_time:
            return False
        while self.next_time <= time + _TIME_SLACK:
            self.next_time += 1.0 / self.fps
        return True


def _channel_mean(planar: np.ndarray) -> np.ndarray:
    """(C, n) -> (n,): librosa.to_mono's mean; one channel is returned as it is (a mean would turn -0.0 into 0.0)."""
    return planar[0] if len(planar) == 1 else np.mean(planar, axis=0)


class _AudioTrack:
    """The audio frames of one clip collected once for all formats: per PyAV rate, and as native 16-bit PCM."""

    def __init__(self, formats: list[AudioFormat]):
        self.formats = formats
        self.pyav_rates = sorted({f.sample_rate for f in formats if f.decode == "pyav"})
        self.wants_pcm16 = any(f.decode == "mmsa-fet" for f in formats)
        self.resamplers: dict[int | str, av.AudioResampler] = {}
        self.chunks: dict[int | str, list[np.ndarray]] = {}
        self.native_rate: int | None = None

    def add(self, frame: av.AudioFrame | None) -> None:
        if frame is not None and not self.resamplers:
            # Planar output in the clip's own layout: the channels are averaged afterwards. PyAV's "mono" layout
            # would mix stereo to (L + R) / sqrt(2), 3 dB louder than MMSA-FET's and librosa's mean.
            self.native_rate, layout = frame.sample_rate, frame.layout.name
            for rate in self.pyav_rates:
                self.resamplers[rate] = av.AudioResampler(format="fltp", layout=layout, rate=rate)
            if self.wants_pcm16:
                # ffmpeg -acodec pcm_s16le: the same swresample conversion to 16 bits, native rate and layout.
                self.resamplers["pcm16"] = av.AudioResampler(format="s16p", layout=layout, rate=self.native_rate)
            self.chunks = {key: [] for key in self.resamplers}
        for key, resampler in self.resamplers.items():
            self.chunks[key].extend(out.to_ndarray() for out in resampler.resample(frame))

    def samples(self) -> dict[AudioFormat, np.ndarray]:
        def channels(key) -> np.ndarray | None:
            parts = self.chunks.get(key)
            return np.concatenate(parts, axis=1) if parts else None

        result = {}
        for rate in self.pyav_rates:
            planar = channels(rate)
            result[AudioFormat(rate)] = np.zeros(0, np.float32) if planar is None else _channel_mean(planar.astype(np.float32, copy=False))
        if self.wants_pcm16:
            import librosa

            pcm16 = channels("pcm16")
            # soundfile reads 16-bit PCM as x / 32768; librosa.load then averages the channels and resamples.
            native = None if pcm16 is None else _channel_mean(pcm16.astype(np.float32) / np.float32(32768))
            for audio_format in self.formats:
                if audio_format.decode == "mmsa-fet":
                    result[audio_format] = np.zeros(0, np.float32) if native is None else librosa.resample(
                        native, orig_sr=self.native_rate, target_sr=audio_format.sample_rate,
                        res_type=audio_format.resampler).astype(np.float32, copy=False)
        return result


def decode_clip(
    path: str | Path,
    audio_formats: Iterable[AudioFormat] = (),
    video_fps: Iterable[float] = (),
    on_frame: Callable[[float, float, np.ndarray], None] | None = None,
) -> DecodedClip:
    """Decode `path` in one pass. `on_frame(fps, time, rgb)` receives each sampled RGB frame (H, W, 3) uint8.

    Raises ClipError when the file cannot be opened or decoded.
    """
    audio_formats = sorted(set(audio_formats), key=repr)
    video_fps = sorted(set(video_fps))
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as error:
        raise ClipError(f"cannot open as a video file: {_reason(error)}") from None
    with container:
        audio_stream = container.streams.audio[0] if container.streams.audio else None
        video_stream = container.streams.video[0] if container.streams.video else None
        streams = [stream for stream, wanted in ((audio_stream, audio_formats), (video_stream, video_fps)) if stream and wanted]
        track = _AudioTrack(audio_formats)
        samplers = [_FrameSampler(fps) for fps in video_fps]
        frame_rate = float(video_stream.average_rate or 25) if video_stream else 25.0
        # One RGB converter for the clip, single-threaded: frame.to_ndarray builds a new converter with its own
        # threads for every frame, which took 6.8 instead of 0.4 ms a frame on two busy cores (same pixels).
        to_rgb = VideoReformatter()
        last_time, frame_index = 0.0, 0
        try:
            # demux() without streams would read them all: nothing to read when no wanted stream exists.
            for packet in container.demux(*streams) if streams else ():
                for frame in packet.decode():
                    if packet.stream is audio_stream:
                        track.add(frame)
                        continue
                    time = float(frame.time) if frame.time is not None else frame_index / frame_rate
                    frame_index += 1
                    last_time = max(last_time, time + 1.0 / frame_rate)
                    wanted = [sampler.fps for sampler in samplers if sampler.wants(time)]
                    if wanted and on_frame is not None:
                        rgb = _upright(to_rgb.reformat(frame, format="rgb24", threads=1).to_ndarray(), frame.rotation)
                        for fps in wanted:
                            on_frame(fps, time, rgb)
            track.add(None)
        except (av.FFmpegError, ValueError) as error:
            raise ClipError(f"cannot decode: {_reason(error)}") from None
        audio = None
        if audio_stream is not None:
            audio = track.samples()
            if audio_formats:
                last_time = max(last_time, max(len(samples) / f.sample_rate for f, samples in audio.items()))
        duration = float(container.duration / av.time_base) if container.duration else last_time
        return DecodedClip(audio=audio, has_video=video_stream is not None, duration=duration)
