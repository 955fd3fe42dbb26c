"""Corrupting clips: decode with PyAV, apply a noise to the samples or frames, write an mp4 of the same layout.

The stream the noise changes is re-encoded (audio: AAC at the clip's sample rate and channel layout; video:
H.264 at a high quality, the clip's frame timestamps kept, frames upright); the other stream is copied packet
for packet, so an audio noise leaves the pictures bit-identical and a video noise the sound. A stream that an
mp4 cannot hold as it is, or a video whose display matrix says to turn it (the matrix cannot be copied), is
re-encoded unchanged instead. x264 runs single-threaded, so the same clip, noise and seed give the same bytes.

`corrupt_dataset` writes a dataset folder of the raw layout (label.csv copied, Raw/<video_id>/<clip_id>.mp4)
and `corruption.json`, what made it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from robustmm import __version__
from robustmm.corruption.noises import Noise
from robustmm.errors import UserError
from robustmm.features.dataset import read_dataset
from robustmm.features.decode import _upright

VIDEO_CRF = "16"  # x264 quality of a re-encoded video: near transparent, so the noise is what changes
AUDIO_BIT_RATE_PER_CHANNEL = 96000  # AAC bit rate of a re-encoded track, high so that coding noise stays small
AUDIO_FRAME = 1024  # samples per AAC frame
# Codecs an mp4 takes as they are: a stream of another codec is re-encoded, unchanged.
MP4_COPYABLE = {"video": ("h264", "hevc", "mpeg4", "av1", "vp9"), "audio": ("aac", "mp3", "opus", "alac", "flac")}
RECORD = "corruption.json"


class CorruptionError(UserError):
    """A clip that cannot be corrupted (undecodable, a format the encoder refuses); the message names the file."""


def clip_rng(seed: int, clip_id: str) -> np.random.Generator:
    """The random numbers of one clip: a function of the seed and the clip's id only (not of the order or the level)."""
    return np.random.default_rng([seed, int.from_bytes(hashlib.sha256(clip_id.encode("utf-8")).digest()[:8], "big")])


def _decoded_audio(source: Path) -> tuple[np.ndarray, int]:
    """(channels, n) float32 samples at the track's own rate and layout, and the first sample's index."""
    with av.open(str(source)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=stream.sample_rate)
        chunks, first = [], None
        for frame in container.decode(stream):
            if first is None:
                first = round(frame.pts * frame.time_base * stream.sample_rate) if frame.pts is not None else 0
            chunks.extend(out.to_ndarray() for out in resampler.resample(frame))
        chunks.extend(out.to_ndarray() for out in resampler.resample(None))
        samples = np.concatenate(chunks, axis=1) if chunks else np.zeros((stream.channels, 0))
    return samples.astype(np.float32, copy=False), first or 0


def _encode_audio(output, stream, samples: np.ndarray, first: int) -> None:
    rate, layout = stream.sample_rate, stream.layout.name
    for start in range(0, samples.shape[1], AUDIO_FRAME):
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples[:, start : start + AUDIO_FRAME]), format="fltp", layout=layout
        )
        frame.sample_rate, frame.pts, frame.time_base = rate, first + start, Fraction(1, rate)
        output.mux(stream.encode(frame))
    output.mux(stream.encode(None))


def _copy_packets(container, stream, copied, output) -> None:
    for packet in container.demux(stream):
        if packet.dts is not None:  # the demuxer's final empty packet
            packet.stream = copied
            output.mux(packet)


@dataclass(frozen=True)
class _VideoShape:
    width: int  # upright, cut to even sides (yuv420p needs them)
    height: int
    rotation: int
    frames: int
    rate: Fraction
    time_base: Fraction


def _video_shape(source: Path) -> _VideoShape:
    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        time_base = stream.time_base or 1 / Fraction(rate)
        frames = sum(1 for packet in container.demux(stream) if packet.size)
    with av.open(str(source)) as container:
        first = next(container.decode(video=0), None)
    rotation = first.rotation if first is not None else 0
    width, height = (stream.codec_context.width, stream.codec_context.height)
    if round(rotation / 90) % 2:
        width, height = height, width
    return _VideoShape(width // 2 * 2, height // 2 * 2, rotation, frames, rate, time_base)


def _add_video_encoder(output, shape: _VideoShape):
    encoded = output.add_stream("libx264", rate=shape.rate, options={"crf": VIDEO_CRF, "preset": "medium"})
    encoded.width, encoded.height = shape.width, shape.height
    encoded.pix_fmt = "yuv420p"
    encoded.thread_count = 1  # x264 output is byte-identical only single-threaded
    encoded.codec_context.time_base = shape.time_base
    return encoded


def _encode_video(
    source: Path,
    shape: _VideoShape,
    output,
    encoded,
    transform: Callable[[Iterator[np.ndarray], int], Iterator[np.ndarray]],
) -> None:
    """Every frame of `source`'s video upright, through `transform`, encoded with the source's timestamps."""
    with av.open(str(source)) as container:
        timestamps: list[int] = []
        to_rgb = VideoReformatter()

        def upright_frames() -> Iterator[np.ndarray]:
            for index, frame in enumerate(container.decode(video=0)):
                timestamps.append(frame.pts if frame.pts is not None else round(index / shape.rate / shape.time_base))
                yield _upright(to_rgb.reformat(frame, format="rgb24", threads=1).to_ndarray(), frame.rotation)

        for index, rgb in enumerate(transform(upright_frames(), shape.frames)):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[: shape.height, : shape.width]), format="rgb24")
            frame.pts, frame.time_base = timestamps[index], shape.time_base
            output.mux(encoded.encode(frame))
        output.mux(encoded.encode(None))


def corrupt_clip(source: str | Path, destination: str | Path, noise: Noise, rng: np.random.Generator) -> bool:
    """Write `destination` (an mp4): `source` with `noise` applied to its audio or video. Returns False when the
    clip has no stream of the noise's modality (it is written unchanged). Raises CorruptionError naming the file."""
    source, destination = Path(source), Path(destination)
    partial = destination.with_name(destination.name + ".partial")
    noisy = "audio" if noise.modality == "audio" else "video"
    try:
        with av.open(str(source)) as probe:
            # In the source's stream order, so that the copy lists its streams as the clip does.
            firsts = sorted(
                (streams[0] for streams in (probe.streams.audio, probe.streams.video) if streams),
                key=lambda stream: stream.index,
            )
            codecs = {("audio" if stream.type == "audio" else "video"): stream.codec_context.name for stream in firsts}
        shape = _video_shape(source) if "video" in codecs else None
        encode = {
            "audio": "audio" in codecs and (noisy == "audio" or codecs["audio"] not in MP4_COPYABLE["audio"]),
            "video": "video" in codecs
            and (noisy == "video" or shape.rotation % 360 != 0 or codecs["video"] not in MP4_COPYABLE["video"]),
        }
        destination.parent.mkdir(parents=True, exist_ok=True)
        # Every output stream exists before the first packet is written (the mp4 header lists them).
        with av.open(str(source)) as copying, av.open(str(partial), "w", format="mp4") as output:
            streams = {}
            for kind in codecs:
                template = copying.streams.audio[0] if kind == "audio" else copying.streams.video[0]
                if kind == "audio" and encode["audio"]:
                    streams["audio"] = output.add_stream("aac", rate=template.sample_rate, layout=template.layout.name)
                    streams["audio"].bit_rate = AUDIO_BIT_RATE_PER_CHANNEL * template.channels
                elif kind == "video" and encode["video"]:
                    streams["video"] = _add_video_encoder(output, shape)
                else:
                    streams[kind] = output.add_stream_from_template(template)
            if "audio" in codecs:
                if encode["audio"]:
                    samples, first = _decoded_audio(source)
                    if noisy == "audio":
                        samples = noise.apply(samples, streams["audio"].sample_rate, rng)
                    _encode_audio(output, streams["audio"], samples, first)
                else:
                    _copy_packets(copying, copying.streams.audio[0], streams["audio"], output)
            if "video" in codecs:
                if encode["video"]:
                    transform = (
                        (lambda frames, count: noise.apply(frames, count, rng))
                        if noisy == "video"
                        else (lambda frames, count: frames)
                    )
                    _encode_video(source, shape, output, streams["video"], transform)
                else:
                    _copy_packets(copying, copying.streams.video[0], streams["video"], output)
    except (av.FFmpegError, OSError, ValueError) as error:
        partial.unlink(missing_ok=True)
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise CorruptionError(
            f"{source}: cannot corrupt with {noise.name} at level {noise.level:g}: {reason}"
        ) from None
    partial.replace(destination)
    return noisy in codecs


@dataclass(frozen=True)
class CorruptionRecord:
    """What made a corrupted dataset folder (its corruption.json)."""

    source: str
    noise: str
    level: float
    seed: int
    options: dict
    robustmm: str


def corrupt_dataset(dataset: str | Path, noise: Noise, seed: int, out: str | Path, progress: bool = True) -> dict:
    """Every clip of the raw dataset `dataset` corrupted into `out` (same layout, clips as .mp4), label.csv copied.
    Returns a summary: clips, and those without a stream of the noise's modality (written unchanged)."""
    from tqdm import tqdm

    dataset, out = Path(dataset), Path(out)
    if out.resolve() == dataset.resolve():
        raise CorruptionError(f"{out}: the output folder is the dataset itself; choose another --out")
    clips = read_dataset(dataset)
    if out.exists() and any(out.iterdir()):
        raise CorruptionError(f"{out}: the output folder exists and is not empty; remove it or choose another --out")
    unchanged, created = [], not out.exists()
    try:
        for clip in tqdm(clips, desc=f"{noise.name} {noise.level:g}", unit="clip", disable=not progress):
            destination = out / "Raw" / clip.video_id / f"{clip.clip_id}.mp4"
            if not corrupt_clip(clip.path, destination, noise, clip_rng(seed, clip.id)):
                unchanged.append(clip.id)
    except BaseException:
        if created:  # no half-written dataset left behind to be mistaken for a whole one
            shutil.rmtree(out, ignore_errors=True)
        raise
    shutil.copyfile(dataset / "label.csv", out / "label.csv")
    record = CorruptionRecord(str(dataset), noise.name, noise.level, seed, asdict(noise.config), __version__)
    (out / RECORD).write_text(json.dumps(asdict(record), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return {"clips": len(clips), "unchanged": unchanged}
