"""The demo dataset: synthetic talking-face clips whose words, voice and face all follow a sentiment label.

Every clip is a real mp4 (H.264 video, AAC audio) in the community layout (SPEC section 2), made offline
from sources the project can rely on:
- the transcript is a sentence built from a fixed opinion lexicon, and the label is the lexicon score of
  its adjective (in [-3, 3], plus a little annotator noise);
- the speech is that sentence spoken by Debian's `espeak-ng`, higher and faster for positive clips;
- the face is scikit-image's `astronaut` portrait, warped per frame: mouth corners up or down, head
  tilted, brightness, with the jaw opening to the loudness of the speech.
The voice and the face each follow the label through their own noise, so every modality alone is an
imperfect witness and losing one hurts: the demo is above chance at missing rate 0 and degrades with it.

The clips are committed under `raw/demo/`; this module rebuilds them (`robustmm make-demo --out raw/demo`).
The same arguments give the same labels and text everywhere, and the same bytes with the same espeak-ng,
FFmpeg (inside PyAV) and x264 builds.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

FPS = 12
FRAME_SIZE = 256
SAMPLE_RATE = 22050  # espeak-ng's native rate
LEAD_SECONDS = 0.25  # silence before the sentence
# Every clip lasts the same: with lengths that vary with the speaking rate (which follows the label), a
# model could read the label from the number of frames even when every frame is missing.
CLIP_SECONDS = 4.0
HELD_OUT_SHARE = 0.2  # of the videos, for valid and for test: speaker-independent splits, as MOSI

# Opinion lexicon: adjective -> sentiment on the MOSI scale, symmetric, evenly spread over [-3, 3].
ADJECTIVES = {
    "brilliant": 3.0, "wonderful": 2.6, "great": 2.2, "lovely": 1.8, "good": 1.4, "nice": 1.0,
    "pleasant": 0.6, "fine": 0.2, "ordinary": -0.2, "bland": -0.6, "dull": -1.0, "weak": -1.4,
    "boring": -1.8, "bad": -2.2, "terrible": -2.6, "awful": -3.0,
}  # fmt: skip
SUBJECTS = (
    "the movie", "the story", "the acting", "the music", "the ending", "the dialogue",
    "the camera work", "the lead actor", "the plot", "the soundtrack", "the script", "the finale",
)  # fmt: skip
TEMPLATES = (
    "I thought {subject} was {adjective}.",
    "Honestly, {subject} was {adjective}.",
    "To me {subject} felt {adjective}.",
    "I have to say {subject} is {adjective}.",
    "Overall {subject} was {adjective}.",
    "In the end {subject} seemed {adjective}.",
)
LABEL_NOISE = 0.25  # annotator disagreement, in label units
CUE_NOISE = 0.3  # how loosely voice and face follow the label, in units of label / 3


@dataclass(frozen=True)
class Speaker:
    voice: str  # espeak-ng voice + variant
    mirror: bool
    tint: tuple[float, float, float]  # per-channel gain: a different camera and light per video
    zoom: float


SPEAKERS = (
    Speaker("en-us+m3", False, (1.00, 1.00, 1.00), 1.00),
    Speaker("en-us+f3", True, (1.05, 0.98, 0.92), 0.95),
    Speaker("en-us+m1", False, (0.94, 1.00, 1.06), 1.05),
    Speaker("en-us+f2", True, (1.00, 0.95, 0.95), 1.00),
    Speaker("en-us+m5", False, (1.08, 1.02, 0.95), 0.92),
    Speaker("en-us+f4", True, (0.96, 0.96, 1.04), 1.03),
    Speaker("en-us+m2", True, (1.02, 1.04, 0.98), 0.97),
    Speaker("en-us+f1", False, (0.98, 1.00, 1.02), 1.02),
    Speaker("en-us+m4", True, (1.04, 1.00, 0.96), 0.98),
    Speaker("en-us+f5", False, (0.97, 1.03, 1.00), 1.01),
)

# The face: a crop of the astronaut portrait around the head, resized to FRAME_SIZE. Mouth landmarks of
# that crop (row, col), measured once with MediaPipe FaceLandmarker (points 61, 291 and 14).
FACE_CROP = (slice(0, 230), slice(110, 340))
MOUTH_CORNERS = ((155.2, 102.8), (156.6, 149.5))
LOWER_LIP = (166.6, 125.3)


@dataclass(frozen=True)
class ClipPlan:
    video_id: str
    clip_id: str
    mode: str
    text: str
    label: float
    voice_cue: float  # in [-1, 1]: drives pitch and speed
    face_cue: float  # in [-1, 1]: drives mouth, tilt and brightness
    speaker: Speaker
    phase: float  # head motion phase, so clips of one video do not move in lockstep


def plan_clips(videos: int = 10, clips_per_video: int = 10, seed: int = 0) -> list[ClipPlan]:
    """The transcript, label and cues of every clip; a pure function of its arguments."""
    if not 3 <= videos <= len(SPEAKERS):
        raise ValueError(f"videos must be between 3 and {len(SPEAKERS)} (one per split at least), got {videos}")
    if clips_per_video < 1:
        raise ValueError(f"clips_per_video must be at least 1, got {clips_per_video}")
    rng = np.random.default_rng(seed)
    adjectives = list(ADJECTIVES)
    held_out = max(1, round(HELD_OUT_SHARE * videos))
    modes = ["train"] * (videos - 2 * held_out) + ["valid"] * held_out + ["test"] * held_out
    plans = []
    for video in range(videos):
        # Each video walks through the lexicon in its own order, so every split spans the label range.
        order = np.concatenate(
            [rng.permutation(len(adjectives)) for _ in range(-(-clips_per_video // len(adjectives)))]
        )
        for clip in range(clips_per_video):
            adjective = adjectives[order[clip]]
            subject = SUBJECTS[rng.integers(len(SUBJECTS))]
            template = TEMPLATES[rng.integers(len(TEMPLATES))]
            label = float(np.clip(round(ADJECTIVES[adjective] + rng.normal(0, LABEL_NOISE), 1), -3.0, 3.0))
            voice_cue, face_cue = np.clip(label / 3.0 + rng.normal(0, CUE_NOISE, size=2), -1.0, 1.0)
            plans.append(
                ClipPlan(
                    video_id=f"demo{video + 1:02d}",
                    clip_id=f"{clip + 1:02d}",
                    mode=modes[video],
                    text=template.format(subject=subject, adjective=adjective),
                    label=label,
                    voice_cue=float(voice_cue),
                    face_cue=float(face_cue),
                    speaker=SPEAKERS[video],
                    phase=float(rng.uniform(0, 2 * np.pi)),
                )
            )
    return plans


def espeak_path() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise RuntimeError(
            "espeak-ng not found: the demo clips are spoken by it (Debian: apt-get install -y espeak-ng). "
            "The committed clips under raw/demo/ need no rebuild."
        )
    return path


def speak(text: str, voice: str, cue: float) -> np.ndarray:
    """CLIP_SECONDS of int16 mono speech at SAMPLE_RATE: positive clips higher and faster, negative lower and slower."""
    pitch = round(50 + 25 * cue)  # espeak-ng pitch 0..99
    speed = round(165 + 35 * cue)  # words per minute
    with tempfile.TemporaryDirectory() as tmp:
        wav_path = Path(tmp) / "speech.wav"
        command = [espeak_path(), "-v", voice, "-p", str(pitch), "-s", str(speed), "-w", str(wav_path), text]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"espeak-ng failed on {text!r}: {result.stderr.strip()}")
        with wave.open(str(wav_path)) as speech:
            if speech.getframerate() != SAMPLE_RATE or speech.getnchannels() != 1 or speech.getsampwidth() != 2:
                raise RuntimeError(f"espeak-ng wrote an unexpected format: {speech.getparams()}")
            samples = np.frombuffer(speech.readframes(speech.getnframes()), dtype=np.int16)
    lead = round(LEAD_SECONDS * SAMPLE_RATE)
    total = round(CLIP_SECONDS * SAMPLE_RATE)
    if lead + len(samples) > total:
        raise RuntimeError(
            f"{text!r} takes {len(samples) / SAMPLE_RATE:.2f} s to say, longer than a {CLIP_SECONDS} s clip"
        )
    clip = np.zeros(total, dtype=np.int16)
    clip[lead : lead + len(samples)] = samples
    return clip


def base_face() -> np.ndarray:
    """The astronaut's head as a (FRAME_SIZE, FRAME_SIZE, 3) float image in [0, 1]."""
    try:
        from skimage.data import astronaut
    except ImportError as error:
        raise RuntimeError("the demo face comes from scikit-image: pip install scikit-image") from error
    from scipy.ndimage import zoom

    crop = astronaut()[FACE_CROP].astype(np.float64) / 255.0
    factor = FRAME_SIZE / crop.shape[0]
    return np.clip(zoom(crop, (factor, factor, 1), order=1), 0.0, 1.0)


def _bump(rows: np.ndarray, cols: np.ndarray, centre: tuple[float, float], sigma: float) -> np.ndarray:
    return np.exp(-((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2) / (2 * sigma**2))


def render_frame(face: np.ndarray, plan: ClipPlan, seconds: float, loudness: float) -> np.ndarray:
    """One uint8 RGB frame: the face under this clip's expression, head motion and the speaker's camera."""
    from scipy.ndimage import map_coordinates

    cue = plan.face_cue
    roll = np.radians(8.0 * cue + 2.0 * np.sin(2 * np.pi * 0.7 * seconds + plan.phase))
    nod = 3.0 * np.sin(2 * np.pi * 1.1 * seconds + plan.phase)
    centre = (FRAME_SIZE - 1) / 2
    rows, cols = np.mgrid[0:FRAME_SIZE, 0:FRAME_SIZE].astype(np.float64)
    # Output pixel -> face pixel: undo the camera (nod, zoom, roll, mirror) ...
    y = (rows - centre - nod) / plan.speaker.zoom
    x = (cols - centre) / plan.speaker.zoom
    source_rows = centre + np.cos(roll) * y - np.sin(roll) * x
    source_cols = centre + np.sin(roll) * y + np.cos(roll) * x
    if plan.speaker.mirror:
        source_cols = 2 * centre - source_cols
    # ... then the expression: sampling below a mouth corner lifts it (a smile), above lowers it, and
    # sampling above the lower lip opens the jaw.
    corner_lift = -3.0 + 7.0 * cue
    expression = sum(_bump(source_rows, source_cols, corner, 14.0) for corner in MOUTH_CORNERS) * corner_lift
    expression -= _bump(source_rows, source_cols, LOWER_LIP, 16.0) * 6.0 * loudness
    source_rows = source_rows + expression
    gain = np.asarray(plan.speaker.tint) * (1.0 + 0.12 * cue)
    frame = np.stack(
        [map_coordinates(face[..., c], [source_rows, source_cols], order=1, mode="nearest") for c in range(3)], axis=-1
    )
    return np.clip(np.round(frame * gain * 255.0), 0, 255).astype(np.uint8)


def loudness_per_frame(speech: np.ndarray, frames: int) -> np.ndarray:
    """RMS of the speech under each video frame, scaled to [0, 1] per clip."""
    hop = SAMPLE_RATE / FPS
    values = np.array(
        [
            np.sqrt(np.mean(speech[int(i * hop) : int((i + 1) * hop)].astype(np.float64) ** 2) + 1e-12)
            for i in range(frames)
        ]
    )
    return values / values.max()


def write_clip(path: Path, frames: list[np.ndarray], speech: np.ndarray) -> None:
    """An mp4 with H.264 video and AAC audio, written to a temporary name and renamed when complete."""
    import av

    partial = path.with_name(path.name + ".partial")
    with av.open(str(partial), "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=FPS, options={"crf": "28", "preset": "medium"})
        video.width = video.height = FRAME_SIZE
        video.pix_fmt = "yuv420p"
        video.thread_count = 1  # x264 output is byte-identical only single-threaded
        audio = container.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        audio.bit_rate = 48000
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            frame.time_base = Fraction(1, FPS)
            container.mux(video.encode(frame))
        container.mux(video.encode())
        chunk = 1024
        for start in range(0, len(speech), chunk):
            frame = av.AudioFrame.from_ndarray(speech[None, start : start + chunk], format="s16", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            frame.pts = start
            frame.time_base = Fraction(1, SAMPLE_RATE)
            container.mux(audio.encode(frame))
        container.mux(audio.encode())
    partial.replace(path)


def make_clip(plan: ClipPlan, face: np.ndarray, path: Path) -> None:
    speech = speak(plan.text, plan.speaker.voice, plan.voice_cue)
    frames = round(CLIP_SECONDS * FPS)
    loudness = loudness_per_frame(speech, frames)
    images = [render_frame(face, plan, index / FPS, loudness[index]) for index in range(frames)]
    write_clip(path, images, speech)


LABEL_COLUMNS = ("video_id", "clip_id", "text", "label", "mode", "annotation")


def annotation(label: float) -> str:
    return "Positive" if label > 0 else "Negative" if label < 0 else "Neutral"


def make_demo(out: str | Path, videos: int = 10, clips_per_video: int = 10, seed: int = 0) -> list[ClipPlan]:
    """Write `label.csv` and `Raw/<video_id>/<clip_id>.mp4` under `out`; returns the clip plans."""
    out = Path(out)
    espeak_path()  # fail before writing anything
    plans = plan_clips(videos, clips_per_video, seed)
    face = base_face()
    for plan in plans:
        clip_dir = out / "Raw" / plan.video_id
        clip_dir.mkdir(parents=True, exist_ok=True)
        make_clip(plan, face, clip_dir / f"{plan.clip_id}.mp4")
    with open(out / "label.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(LABEL_COLUMNS)
        for plan in plans:
            writer.writerow(
                (plan.video_id, plan.clip_id, plan.text, f"{plan.label:.1f}", plan.mode, annotation(plan.label))
            )
    return plans


def cmd_make_demo(args: argparse.Namespace) -> int:
    plans = make_demo(args.out, videos=args.videos, clips_per_video=args.clips_per_video, seed=args.seed)
    counts = {mode: sum(plan.mode == mode for plan in plans) for mode in ("train", "valid", "test")}
    print(f"wrote {len(plans)} clips to {args.out} ({', '.join(f'{k} {v}' for k, v in counts.items())})")
    return 0


def register(commands) -> None:
    parser = commands.add_parser(
        "make-demo", help="build the synthetic demo dataset (needs espeak-ng and scikit-image)"
    )
    parser.add_argument("--out", required=True, help="dataset folder to write (label.csv and Raw/)")
    parser.add_argument(
        "--videos", type=int, default=10, help="videos (one speaker each), 3-10; 20%% valid, 20%% test (default 10)"
    )
    parser.add_argument("--clips-per-video", type=int, default=10, help="clips per video (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of transcripts, labels and cues (default 0)")
    parser.set_defaults(handler=cmd_make_demo)
