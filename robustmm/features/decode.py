"""Decoding a clip once with PyAV: the audio track resampled to every rate asked for, frames at every fps asked for."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

# A frame is taken at grid time k / fps when its own time reaches it; this slack absorbs rounding of timestamps.
_TIME_SLACK = 1e-6


class ClipError(Exception):
    """A problem of the clip itself (undecodable, no audio stream, no face): reported per clip, never fatal.

    `cache=False` for failures that a rerun may not repeat (a crashed external tool), so they are retried.
    """

    def __init__(self, reason: str, cache: bool = True):
        super().__init__(reason)
        self.cache = cache


@dataclass
class DecodedClip:
    audio: dict[int, np.ndarray] | None  # mono float32 samples per sample rate; None when there is no audio stream
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


def decode_clip(
    path: str | Path,
    audio_rates: Iterable[int] = (),
    video_fps: Iterable[float] = (),
    on_frame: Callable[[float, float, np.ndarray], None] | None = None,
) -> DecodedClip:
    """Decode `path` in one pass. `on_frame(fps, time, rgb)` receives each sampled RGB frame (H, W, 3) uint8.

    Raises ClipError when the file cannot be opened or decoded.
    """
    audio_rates, video_fps = sorted(set(audio_rates)), sorted(set(video_fps))
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as error:
        raise ClipError(f"cannot open as a video file: {_reason(error)}") from None
    with container:
        audio_stream = container.streams.audio[0] if container.streams.audio else None
        video_stream = container.streams.video[0] if container.streams.video else None
        streams = [stream for stream, wanted in ((audio_stream, audio_rates), (video_stream, video_fps)) if stream and wanted]
        resamplers = {rate: av.AudioResampler(format="flt", layout="mono", rate=rate) for rate in audio_rates}
        chunks: dict[int, list[np.ndarray]] = {rate: [] for rate in audio_rates}
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
                        for rate, resampler in resamplers.items():
                            chunks[rate].extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
                        continue
                    time = float(frame.time) if frame.time is not None else frame_index / frame_rate
                    frame_index += 1
                    last_time = max(last_time, time + 1.0 / frame_rate)
                    wanted = [sampler.fps for sampler in samplers if sampler.wants(time)]
                    if wanted and on_frame is not None:
                        rgb = _upright(to_rgb.reformat(frame, format="rgb24", threads=1).to_ndarray(), frame.rotation)
                        for fps in wanted:
                            on_frame(fps, time, rgb)
            for rate, resampler in resamplers.items():
                chunks[rate].extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
        except (av.FFmpegError, ValueError) as error:
            raise ClipError(f"cannot decode: {_reason(error)}") from None
        audio = None
        if audio_stream is not None:
            audio = {
                rate: np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros(0, np.float32)
                for rate, parts in chunks.items()
            }
            if audio_rates:
                last_time = max(last_time, max(len(samples) / rate for rate, samples in audio.items()))
        duration = float(container.duration / av.time_base) if container.duration else last_time
        return DecodedClip(audio=audio, has_video=video_stream is not None, duration=duration)
