"""Signal corruption: each noise does what its level says and is deterministic by seed; corrupted clips keep the
layout and the other stream; the `robustmm corrupt` command and its errors; clean models tested on corrupted files."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path

import av
import numpy as np
import pytest

from robustmm import cli, data, demo, synthetic
from robustmm.corruption.clips import clip_rng, corrupt_clip
from robustmm.corruption.evaluate import CorruptedSet, evaluate_corruptions
from robustmm.corruption.noises import NOISES, create_noise, signal_to_noise_db
from robustmm.features.dataset import read_dataset
from robustmm.features.decode import AudioFormat, decode_clip
from robustmm.presets import custom_preset
from robustmm.settings import SettingsError, load_params
from robustmm.text_encoder import OFFLINE_ENCODER

RATE = 16000
SECONDS = 2.0


def speech_like(seconds: float = SECONDS, rate: int = RATE) -> np.ndarray:
    """(1, n) float32: harmonics under a syllable-rate envelope, loud enough to clip and quiet in places."""
    time = np.arange(round(seconds * rate)) / rate
    voice = sum(np.sin(2 * np.pi * 150 * k * time) / k for k in range(1, 8))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 3 * time))
    return (0.3 * voice * envelope)[None].astype(np.float32)


def textured_frames(count: int = 12, size: int = 64) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    base = rng.integers(40, 200, size=(size, size, 3)).astype(np.uint8)
    return [np.roll(base, shift, axis=1) for shift in range(count)]


def gradient_energy(frame: np.ndarray) -> float:
    image = frame.astype(np.float64).mean(axis=2)
    return float(np.mean(np.diff(image, axis=0) ** 2) + np.mean(np.diff(image, axis=1) ** 2))


def apply_video(name: str, level: float, frames: list[np.ndarray], seed: int = 0, **options) -> list[np.ndarray]:
    return list(create_noise(name, level, options).apply(iter(frames), len(frames), np.random.default_rng(seed)))


def apply_audio(name: str, level: float, samples: np.ndarray, seed: int = 0, **options) -> np.ndarray:
    return create_noise(name, level, options).apply(samples, RATE, np.random.default_rng(seed))


# ------------------------------------------------------------------------------------------------ noises


RANDOM_NOISES = {
    "white_noise": 10,
    "pink_noise": 10,
    "brown_noise": 10,
    "mute": 0.4,
    "occlusion": 0.2,
    "blank_frames": 0.5,
    "dropped_frames": 0.5,
}
FIXED_NOISES = {"lowpass": 1000, "clipping": 0.1, "blur": 2.0, "brightness": 0.6}


def corrupted(name: str, level: float, seed: int):
    if NOISES[name].modality == "audio":
        return apply_audio(name, level, speech_like(), seed)
    return np.stack(apply_video(name, level, textured_frames(), seed))


@pytest.mark.parametrize("name", sorted(NOISES))
def test_every_noise_is_deterministic_by_seed_and_random_ones_follow_it(name):
    assert set(NOISES) == set(RANDOM_NOISES) | set(FIXED_NOISES)
    level = {**RANDOM_NOISES, **FIXED_NOISES}[name]
    first, again, other = corrupted(name, level, 1), corrupted(name, level, 1), corrupted(name, level, 2)
    assert np.array_equal(first, again)
    assert np.array_equal(first, other) == (name in FIXED_NOISES)
    clean = speech_like() if NOISES[name].modality == "audio" else np.stack(textured_frames())
    assert first.shape == clean.shape and first.dtype == clean.dtype and not np.array_equal(first, clean)


@pytest.mark.parametrize("name, exponent", [("white_noise", 0), ("pink_noise", 1), ("brown_noise", 2)])
@pytest.mark.parametrize("snr", [20.0, 10.0, 0.0, -5.0])
def test_coloured_noise_is_added_at_the_snr_with_its_spectrum(name, exponent, snr):
    clean = speech_like()
    noisy = apply_audio(name, snr, clean)
    assert abs(signal_to_noise_db(clean, noisy - clean) - snr) < 0.5
    # The noise's power spectrum falls as 1/f^exponent: the slope of log power over log frequency.
    noise = (noisy - clean)[0].astype(np.float64)
    power = np.abs(np.fft.rfft(noise)) ** 2
    frequencies = np.fft.rfftfreq(len(noise), 1 / RATE)
    band = (frequencies > 20) & (frequencies < 4000)
    slope = np.polyfit(np.log(frequencies[band]), np.log(power[band]), 1)[0]
    assert abs(slope + exponent) < 0.3


def test_a_silent_track_stays_silent():
    silence = np.zeros((1, 800), np.float32)
    assert np.array_equal(apply_audio("white_noise", 10, silence), silence)


@pytest.mark.parametrize("share", [0.0, 0.25, 0.5, 1.0])
def test_mute_silences_the_share_of_the_track_in_spans(share):
    clean = speech_like() + 0.01  # no sample is zero before muting
    muted = apply_audio("mute", share, clean, span_seconds=0.25)
    silent = muted[0] == 0
    assert silent.mean() == pytest.approx(share, abs=1e-9)
    span = round(0.25 * RATE)
    spans = silent.reshape(-1, span)
    assert np.all(spans.all(axis=1) | ~spans.any(axis=1))  # whole spans, never parts
    assert np.array_equal(muted[0][~silent], clean[0][~silent])


def test_lowpass_removes_what_lies_above_the_cutoff_and_keeps_what_lies_below():
    time = np.arange(RATE) / RATE
    low, high = np.sin(2 * np.pi * 300 * time), np.sin(2 * np.pi * 4000 * time)
    filtered = apply_audio("lowpass", 1000, (low + high)[None].astype(np.float32))[0]
    middle = slice(RATE // 4, 3 * RATE // 4)  # away from the edges
    spectrum = np.abs(np.fft.rfft(filtered[middle]))
    reference = np.abs(np.fft.rfft((low + high)[middle]))
    bins = np.fft.rfftfreq(RATE // 2, 1 / RATE)
    at = {frequency: int(np.argmin(np.abs(bins - frequency))) for frequency in (300, 4000)}
    assert spectrum[at[300]] / reference[at[300]] == pytest.approx(1.0, abs=0.01)
    assert 20 * math.log10(spectrum[at[4000]] / reference[at[4000]]) < -60


def test_lowpass_refuses_a_cutoff_at_or_above_half_the_sample_rate():
    with pytest.raises(ValueError, match="not below half the clip's sample rate 16000"):
        apply_audio("lowpass", 8000, speech_like())


@pytest.mark.parametrize("share", [0.01, 0.1, 0.3])
def test_clipping_cuts_the_share_of_samples_at_a_threshold(share):
    clean = speech_like()
    clipped = apply_audio("clipping", share, clean)
    threshold = np.abs(clipped).max()
    assert np.mean(np.abs(clipped) >= threshold) == pytest.approx(share, abs=0.005)
    below = np.abs(clean) < threshold
    assert np.array_equal(clipped[below], clean[below])


def test_blur_lowers_the_gradient_energy_more_as_sigma_grows():
    frames = textured_frames()
    energies = [gradient_energy(apply_video("blur", sigma, frames)[0]) for sigma in (0.0, 0.5, 1.0, 2.0, 4.0)]
    assert energies[0] == gradient_energy(frames[0])
    assert all(later < earlier for earlier, later in zip(energies, energies[1:]))
    assert energies[-1] < 0.05 * energies[0]


@pytest.mark.parametrize("share", [0.0, 0.1, 0.25, 0.6])
def test_occlusion_covers_the_share_of_the_frame_at_one_place_per_clip(share):
    frames = textured_frames()  # no pixel is black before occlusion
    covered = np.stack(apply_video("occlusion", share, frames))
    black = (covered == 0).all(axis=3)
    assert black.mean() == pytest.approx(share, abs=0.02)
    assert all(np.array_equal(mask, black[0]) for mask in black)  # the same place in every frame
    centred = apply_video("occlusion", 0.25, frames, position="centre", fill=[255, 0, 0])[0]
    assert (centred[16:48, 16:48] == [255, 0, 0]).all() and not (centred[:16] == [255, 0, 0]).all(axis=2).any()


@pytest.mark.parametrize("share", [0.0, 0.25, 0.5, 1.0])
def test_blank_frames_are_black_and_the_rest_untouched(share):
    frames = textured_frames()
    out = apply_video("blank_frames", share, frames)
    blank = [index for index, frame in enumerate(out) if not frame.any()]
    assert len(blank) == round(share * len(frames))
    assert all(np.array_equal(out[index], frames[index]) for index in range(len(frames)) if index not in blank)


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_dropped_frames_show_the_last_frame_kept(share):
    frames = textured_frames()
    out = apply_video("dropped_frames", share, frames)
    assert np.array_equal(out[0], frames[0])
    frozen = [index for index in range(1, len(out)) if np.array_equal(out[index], out[index - 1])]
    assert len(frozen) == round(share * (len(frames) - 1))
    shown = [
        next(k for k, frame in enumerate(frames) if np.array_equal(frame, out[index])) for index in range(len(out))
    ]
    assert shown == sorted(shown)  # time never runs backwards


@pytest.mark.parametrize("gain", [0.0, 0.5, 1.0, 1.2])
def test_brightness_scales_every_pixel(gain):
    frame = textured_frames()[0]  # values 40..199: nothing saturates at these gains
    out = apply_video("brightness", gain, [frame])[0]
    assert np.abs(out.astype(float) - frame * gain).max() <= 0.5


@pytest.mark.parametrize(
    "name, level, message",
    [
        ("mute", 1.5, "level 1.5 is not allowed for mute (the level is the share of the track silenced, in [0, 1])"),
        ("blur", -1, "level -1 is not allowed for blur"),
        ("white_noise", math.inf, "level inf is not allowed for white_noise"),
    ],
)
def test_a_level_outside_the_noise_meaning_is_refused(name, level, message):
    with pytest.raises(
        ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")
    ):
        create_noise(name, level)


def test_unknown_options_and_bad_option_values_are_refused():
    with pytest.raises(ValueError, match=r"mute: unknown option\(s\) spn \(its options: span_seconds\)"):
        create_noise("mute", 0.5, {"spn": 1})
    with pytest.raises(ValueError, match="span_seconds 0 is not allowed"):
        create_noise("mute", 0.5, {"span_seconds": 0})
    with pytest.raises(ValueError, match="position 'left' is not allowed"):
        create_noise("occlusion", 0.5, {"position": "left"})


# ------------------------------------------------------------------------------------------------ clips


def write_test_clip(path: Path, seconds: float = 1.0) -> None:
    """A real mp4 of the demo's layout: H.264 at the demo's fps, AAC at its sample rate."""
    frames = textured_frames(round(seconds * demo.FPS), size=demo.FRAME_SIZE // 4)
    speech = (speech_like(seconds, demo.SAMPLE_RATE)[0] * 32767 * 0.8).astype(np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    demo.write_clip(path, frames, speech)


def decoded(path: Path) -> tuple[np.ndarray, np.ndarray]:
    frames = []
    clip = decode_clip(path, [AudioFormat(demo.SAMPLE_RATE)], [demo.FPS], lambda fps, time, rgb: frames.append(rgb))
    return clip.audio[AudioFormat(demo.SAMPLE_RATE)], np.stack(frames)


def layout(path: Path) -> dict:
    with av.open(str(path)) as container:
        audio, video = container.streams.audio[0], container.streams.video[0]
        return {
            "streams": [stream.type for stream in container.streams],
            "sample_rate": audio.sample_rate,
            "channels": audio.channels,
            "fps": video.average_rate,
            "size": (video.width, video.height),
        }


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "source.mp4"
    write_test_clip(path)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name, level", [("white_noise", 10.0), ("blur", 2.0)])
def test_a_corrupted_clip_keeps_the_layout_and_the_same_seed_gives_the_same_bytes(clip, tmp_path, name, level):
    noise = create_noise(name, level)
    for target, seed in (("a.mp4", 0), ("b.mp4", 0), ("c.mp4", 1)):
        assert corrupt_clip(clip, tmp_path / target, noise, clip_rng(seed, "v$_$c"))
    assert sha256(tmp_path / "a.mp4") == sha256(tmp_path / "b.mp4")
    assert (sha256(tmp_path / "a.mp4") != sha256(tmp_path / "c.mp4")) == (name == "white_noise")
    assert layout(tmp_path / "a.mp4") == layout(clip)
    clean_audio, clean_frames = decoded(clip)
    audio, frames = decoded(tmp_path / "a.mp4")
    assert len(audio) == len(clean_audio) and frames.shape == clean_frames.shape
    if name == "white_noise":
        assert np.array_equal(frames, clean_frames)  # the video packets are copied as they are
        assert abs(signal_to_noise_db(clean_audio, audio - clean_audio) - level) < 0.5  # through AAC coding too
    else:
        assert np.array_equal(audio, clean_audio)
        assert gradient_energy(frames[3]) < 0.5 * gradient_energy(clean_frames[3])


def test_blank_frames_survive_encoding(clip, tmp_path):
    corrupt_clip(clip, tmp_path / "blank.mp4", create_noise("blank_frames", 0.5), clip_rng(0, "x"))
    _, frames = decoded(tmp_path / "blank.mp4")
    darkest = np.sort(frames.reshape(len(frames), -1).max(axis=1))
    assert (darkest <= 2).sum() == round(0.5 * len(frames))


def test_clip_seeds_depend_on_the_seed_and_the_clip_only():
    assert clip_rng(3, "a$_$1").integers(1 << 30) == clip_rng(3, "a$_$1").integers(1 << 30)
    assert clip_rng(3, "a$_$1").integers(1 << 30) != clip_rng(3, "a$_$2").integers(1 << 30)
    assert clip_rng(3, "a$_$1").integers(1 << 30) != clip_rng(4, "a$_$1").integers(1 << 30)


# ------------------------------------------------------------------------------------------------ the command


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, clip) -> Path:
    root = tmp_path_factory.mktemp("raw") / "tiny"
    rows = [("v1", "1", "train"), ("v1", "2", "train"), ("v2", "1", "valid"), ("v3", "1", "test")]
    for video_id, clip_id, _ in rows:
        (root / "Raw" / video_id).mkdir(parents=True, exist_ok=True)
        (root / "Raw" / video_id / f"{clip_id}.mp4").write_bytes(clip.read_bytes())
    with open(root / "label.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("video_id", "clip_id", "text", "label", "mode"))
        writer.writerows((video_id, clip_id, "it was fine", "0.4", mode) for video_id, clip_id, mode in rows)
    return root


def test_the_corrupt_command_writes_a_dataset_of_the_same_layout(dataset, tmp_path, capsys):
    out = tmp_path / "tiny-mute-0.5"
    assert (
        cli.main(
            [
                "corrupt",
                "--dataset",
                str(dataset),
                "--noise",
                "mute",
                "--level",
                "0.5",
                "--seed",
                "3",
                "--out",
                str(out),
                "--set",
                "span_seconds=0.1",
                "--no-progress",
            ]
        )
        == 0
    )
    assert f"wrote 4 clips to {out} (mute at level 0.5, seed 3)" in capsys.readouterr().out
    assert (out / "label.csv").read_bytes() == (dataset / "label.csv").read_bytes()
    clips = read_dataset(out)
    assert [(c.video_id, c.clip_id, c.path.name) for c in clips] == [
        ("v1", "1", "1.mp4"),
        ("v1", "2", "2.mp4"),
        ("v2", "1", "1.mp4"),
        ("v3", "1", "1.mp4"),
    ]
    assert json.loads((out / "corruption.json").read_text()) | {"robustmm": None} == {
        "source": str(dataset),
        "noise": "mute",
        "level": 0.5,
        "seed": 3,
        "options": {"span_seconds": 0.1},
        "robustmm": None,
    }
    audio = [decoded(clip.path)[0] for clip in clips]
    assert not np.array_equal(audio[0], audio[1])  # each clip draws its own spans, though the sources are equal


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--noise", "white_nois", "--level", "10"], "--noise: 'white_nois' is not allowed (a registered noise: "),
        (
            ["--noise", "mute", "--level", "2"],
            "--level: level 2.0 is not allowed for mute (the level is the share of the track silenced, in [0, 1])",
        ),
        (
            ["--noise", "mute", "--level", "0.5", "--set", "spn=1"],
            "--set: mute: unknown option(s) spn (its options: span_seconds)",
        ),
    ],
)
def test_the_corrupt_command_names_a_bad_setting_in_one_line(dataset, tmp_path, capsys, arguments, message):
    assert cli.main(["corrupt", "--dataset", str(dataset), "--out", str(tmp_path / "out"), *arguments]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"robustmm corrupt: error: {message}") and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_the_corrupt_command_names_a_clip_it_cannot_read_and_leaves_no_half_dataset(dataset, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "label.csv").write_bytes((dataset / "label.csv").read_bytes())
    for clip in read_dataset(dataset):
        target = broken / clip.path.relative_to(dataset)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(clip.path.read_bytes())
    (broken / "Raw" / "v2" / "1.mp4").write_bytes(b"not a video")
    out = tmp_path / "out"
    assert (
        cli.main(
            ["corrupt", "--dataset", str(broken), "--noise", "blur", "--level", "1", "--out", str(out), "--no-progress"]
        )
        == 2
    )
    error = capsys.readouterr().err.strip()
    assert error.startswith(
        f"robustmm corrupt: error: {broken / 'Raw' / 'v2' / '1.mp4'}: cannot corrupt with blur at level 1: "
    )
    assert len(error.splitlines()) == 1 and not out.exists()
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert cli.main(["corrupt", "--dataset", str(dataset), "--noise", "blur", "--level", "1", "--out", str(out)]) == 2
    assert "the output folder exists and is not empty" in capsys.readouterr().err
    assert [path.name for path in out.iterdir()] == ["keep.txt"]


# ------------------------------------------------------------------------------------------------ settings


def write_params(tmp_path: Path, corruptions: dict, extract_datasets: list[str], evaluated=("demo",)) -> Path:
    import yaml

    repository = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    repository["corruptions"] = corruptions
    repository["extract"]["datasets"] = extract_datasets
    repository["evaluate_corruptions"]["datasets"] = list(evaluated)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(repository))
    return path


def test_corruptions_in_params_are_checked_with_the_datasets_they_need(tmp_path):
    entry = {"dataset": "demo", "noise": "white_noise", "level": 10}
    params = load_params(write_params(tmp_path, {"demo-white_noise-10": entry}, ["demo", "demo-white_noise-10"]))
    assert params.corruptions["demo-white_noise-10"].seed == 0
    with pytest.raises(SettingsError) as raised:
        load_params(
            write_params(
                tmp_path,
                {
                    "demo-white_noise-10": entry,
                    "bad": {**entry, "noise": "blurr", "level": 1},
                    "demo-mute-2": {**entry, "noise": "mute", "level": 2},
                },
                ["demo"],
            )
        )
    path = tmp_path / "params.yaml"
    assert raised.value.problems == [
        f"{path}: corruptions.bad.noise: 'blurr' is not allowed (a registered noise: {', '.join(sorted(NOISES))}; did you mean 'blur'?)",
        f"{path}: corruptions.demo-mute-2.level: level 2 is not allowed for mute (the level is the share of the track silenced, in [0, 1])",
    ]
    with pytest.raises(SettingsError, match="corruptions.demo-mute-0.5: a name with '.' cannot be a DVC params key"):
        load_params(
            write_params(
                tmp_path, {"demo-mute-0.5": {**entry, "noise": "mute", "level": 0.5}}, ["demo", "demo-mute-0.5"]
            )
        )
    with pytest.raises(SettingsError) as raised:
        load_params(
            write_params(
                tmp_path,
                {"demo-white_noise-10": entry, "other": {**entry, "dataset": "nope"}},
                ["demo"],
                evaluated=["demo", "nope"],
            )
        )
    assert raised.value.problems == [
        f"{path}: corruptions.demo-white_noise-10: 'demo-white_noise-10' is not in extract.datasets: add it, so that its clips are extracted",
        f"{path}: corruptions.other: 'other' is not in extract.datasets: add it, so that its clips are extracted",
        f"{path}: corruptions.other: 'nope' is not in extract.datasets: add it, so that its clips are extracted",
        f"{path}: corruptions.other.dataset: 'nope' is not in datasets: its clean model is trained on datasets.nope",
    ]


def test_evaluate_corruptions_lists_exactly_the_datasets_with_corrupted_copies(tmp_path):
    entry = {"dataset": "demo", "noise": "white_noise", "level": 10}
    path = tmp_path / "params.yaml"
    assert load_params(write_params(tmp_path, {}, ["demo"], evaluated=[])).evaluate_corruptions.datasets == []

    with pytest.raises(SettingsError) as raised:
        load_params(write_params(tmp_path, {"demo-white_noise-10": entry}, ["demo", "demo-white_noise-10"], []))
    assert raised.value.problems == [
        f"{path}: evaluate_corruptions.datasets: 'demo' has corrupted copies (demo-white_noise-10) but is not listed: "
        "add it, so that evaluate_corruptions@demo tests its clean models on them"
    ]
    with pytest.raises(SettingsError) as raised:
        load_params(write_params(tmp_path, {}, ["demo"], evaluated=["demo"]))
    assert raised.value.problems == [
        f"{path}: evaluate_corruptions.datasets: 'demo' has no corrupted copies (no corruptions entry with "
        "dataset: demo): remove it, or add one"
    ]

    import yaml

    raw = yaml.safe_load(
        write_params(tmp_path, {"demo-white_noise-10": entry}, ["demo", "demo-white_noise-10"]).read_text()
    )
    raw["datasets"]["demo"]["data"] = "./data/demo.pkl"  # the same file
    path.write_text(yaml.safe_dump(raw))
    assert load_params(path).evaluate_corruptions.datasets == ["demo"]
    raw["datasets"]["demo"]["data"] = "published/demo.pkl"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SettingsError) as raised:
        load_params(path)
    assert raised.value.problems == [
        f"{path}: datasets.demo.data: 'published/demo.pkl': a dataset with corrupted copies is trained on "
        "data/demo.pkl, the features of raw/demo/ that its copies are compared with (evaluate_corruptions@demo "
        "depends on that file)"
    ]


def test_the_stage_of_a_dataset_not_listed_stops_naming_the_key(tmp_path, monkeypatch, capsys):
    import runpy

    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, {}, ["demo"], evaluated=[])
    monkeypatch.setattr("sys.argv", ["evaluate_corruptions.py", "demo"])
    script = Path(__file__).resolve().parents[1] / "pipeline" / "evaluate_corruptions.py"
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(script), run_name="__main__")
    assert exited.value.code != 0
    assert "params.yaml: evaluate_corruptions.datasets: no entry 'demo' (entries: none)" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ evaluation


FAST = {
    "text_mode": "frozen",
    "text_encoder": OFFLINE_ENCODER,
    "device": "cpu",
    "epochs": 2,
    "progress": False,
    "seeds": [1, 2],
    "overwrite": True,
}


@pytest.fixture(scope="module")
def feature_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("features")
    preset = custom_preset("tiny", seq_lens=(8, 12, 10), feature_dims=(384, 5, 7))
    clean = synthetic.make_dataset(preset, sizes=(32, 8, 8), seed=4)
    noisy = {name: {key: np.array(value, copy=True) for key, value in split.items()} for name, split in clean.items()}
    noisy["test"]["audio"] = noisy["test"]["audio"] + np.random.default_rng(0).normal(
        0, 3, noisy["test"]["audio"].shape
    ).astype(np.float32)
    shorter = synthetic.make_dataset(preset, sizes=(32, 8, 8), seq_lens=(8, 6, 10), seed=4)
    files = {"clean": root / "clean.pkl", "noisy": root / "noisy.pkl", "shorter": root / "shorter.pkl"}
    for name, content in (("clean", clean), ("noisy", noisy), ("shorter", shorter)):
        data.write(content, files[name])
    return files


@pytest.mark.usefixtures("single_torch_thread")
def test_clean_models_are_tested_on_each_corrupted_file(feature_files, tmp_path):
    out = tmp_path / "results"
    corrupted = [
        CorruptedSet("tiny-white_noise-0", "white_noise", 0.0, str(feature_files["noisy"])),
        CorruptedSet("tiny-white_noise-20", "white_noise", 20.0, str(feature_files["clean"])),
    ]
    rows = evaluate_corruptions(
        feature_files["clean"], "custom", corrupted, out, out / "corruption_models", ("MAE", "Corr"), **FAST
    )
    assert [row["corruption"] for row in rows] == ["clean", "tiny-white_noise-0", "tiny-white_noise-20"]
    clean = rows[0]
    # The clean row is the rate-0 models' own test result, and a copy equal to the clean file scores the same.
    trained = [
        json.loads((out / "corruption_models" / "runs" / f"rate_0.0_seed_{seed}" / "result.json").read_text())["test"]
        for seed in (1, 2)
    ]
    assert clean["MAE_mean"] == pytest.approx(np.mean([run["MAE"] for run in trained]))
    assert rows[2]["MAE_mean"] == clean["MAE_mean"] and rows[0]["seeds"] == 2
    assert rows[1]["MAE_mean"] != clean["MAE_mean"]
    table = list(csv.DictReader(open(out / "corruptions.csv", encoding="utf-8")))
    assert [row["corruption"] for row in table] == [row["corruption"] for row in rows]
    assert {"noise", "level", "seeds", "MAE_mean", "MAE_std", "Has0_acc_2_mean"} <= set(table[0])
    flat = json.loads((out / "corruptions.json").read_text())
    assert flat["tiny-white_noise-0/MAE_mean"] == rows[1]["MAE_mean"]
    assert (out / "corruptions.png").stat().st_size > 0
    checkpoints = sorted((out / "corruption_models" / "runs").glob("*/best.pt"))
    assert len(checkpoints) == 2
    before = [path.stat().st_mtime_ns for path in checkpoints]
    evaluate_corruptions(
        feature_files["clean"], "custom", corrupted[:1], out, out / "corruption_models", ("MAE",), **FAST
    )
    assert [path.stat().st_mtime_ns for path in checkpoints] == before  # the clean models are reused


def test_a_corrupted_file_of_other_lengths_is_refused_before_training(feature_files, tmp_path):
    shorter = CorruptedSet("tiny-shorter", "white_noise", 0.0, str(feature_files["shorter"]))
    with pytest.raises(
        data.FormatError,
        match=r"test/audio has shape \(N, 6, 5\), .* \(N, 12, 5\): assemble both with the same lengths",
    ):
        evaluate_corruptions(feature_files["clean"], "custom", [shorter], tmp_path, tmp_path / "models", **FAST)
    assert list((tmp_path / "models").iterdir()) == []


def test_no_corruptions_write_empty_outputs_and_train_nothing(feature_files, tmp_path):
    assert evaluate_corruptions(feature_files["clean"], "custom", [], tmp_path, tmp_path / "models", **FAST) == []
    assert (tmp_path / "corruptions.csv").read_text().strip() == "corruption,noise,level,seeds"
    assert json.loads((tmp_path / "corruptions.json").read_text()) == {}
    assert list((tmp_path / "models").iterdir()) == []
