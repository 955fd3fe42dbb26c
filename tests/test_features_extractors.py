"""Decoding and each extractor: shapes, names, frame rates, clips without audio / face, broken files, OpenFace CSVs."""

import os
import stat
from pathlib import Path

import av
import numpy as np
import pytest
from skimage.data import astronaut
from skimage.transform import resize

from robustmm.features.audio import LIBROSA_RECIPES, _check_recipe_arguments, _recipe_features
from robustmm.features.base import create_extractor
from robustmm.features.decode import AudioFormat, ClipError, decode_clip
from robustmm.features.extract import extract_clip
from robustmm.features.video import OPENFACE_SETS, head_pose, parse_openface_csv, resolve_face_model

FACE = (resize(astronaut(), (128, 128)) * 255).astype(np.uint8)
BLANK = np.full((128, 128, 3), 90, np.uint8)
REPO = Path(__file__).resolve().parents[1]
# ../shared/media beside the repository (or beside the folder of worktrees)
OPENFACE_SAMPLE = next(
    (
        path
        for path in (
            REPO.parent / "shared" / "media" / "openface_sample.csv",
            REPO.parent.parent / "shared" / "media" / "openface_sample.csv",
        )
        if path.is_file()
    ),
    REPO.parent / "shared" / "media" / "openface_sample.csv",
)


def make_clip(
    path: Path, frames=(FACE,) * 5, fps: int = 5, audio_seconds: float | None = 1.0, tone: float = 220.0
) -> Path:
    """An mp4 with the given RGB frames and (unless audio_seconds is None) a mono 16 kHz tone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        video.bit_rate = 4_000_000  # sharp frames, so the face stays detectable after a cut
        audio = None
        if audio_seconds is not None:
            audio = container.add_stream("aac", rate=16000)
            audio.layout = "mono"
        for rgb in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(video.encode())
        if audio is not None:
            rate = 16000
            rng = np.random.default_rng(int(tone))
            t = np.arange(int(audio_seconds * rate)) / rate
            signal = (0.3 * np.sin(2 * np.pi * tone * t) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
            for start in range(0, len(signal), 1024):
                frame = av.AudioFrame.from_ndarray(signal[None, start : start + 1024], format="flt", layout="mono")
                frame.sample_rate, frame.pts = rate, start
                container.mux(audio.encode(frame))
            container.mux(audio.encode())
    return path


def speech_like(seconds: float, rate: int, seed: int, f0: float = 140.0) -> np.ndarray:
    """A voiced signal: 11 harmonics on a gliding pitch, in syllables with pauses between them, over faint noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.15 * np.sin(2 * np.pi * 0.7 * t))) / rate
    voiced = sum((0.5 / k) * np.sin(k * phase) for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * 1.5 * t), 0, None) ** 0.5
    return (0.25 * voiced * envelope + 0.003 * rng.standard_normal(len(t))).astype(np.float32)


def write_audio_clip(path: Path, channels: np.ndarray, rate: int, codec: str = "aac") -> Path:
    """A clip with a small video stream and `channels` (C, n) as its audio: AAC (lossy) or pcm_s16le (in .mkv)."""
    channels = np.atleast_2d(channels).astype(np.float32)
    layout = "mono" if len(channels) == 1 else "stereo"
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=5)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        audio = container.add_stream(codec, rate=rate)
        audio.layout = layout
        for index in range(int(channels.shape[1] / rate * 5)):
            container.mux(
                video.encode(av.VideoFrame.from_ndarray(np.full((32, 32, 3), 40 + index, np.uint8), format="rgb24"))
            )
        container.mux(video.encode())
        for start in range(0, channels.shape[1], 1024):
            chunk = channels[:, start : start + 1024]
            if codec == "pcm_s16le":
                frame = av.AudioFrame.from_ndarray(
                    np.round(chunk.T.reshape(1, -1) * 32767).astype(np.int16), format="s16", layout=layout
                )
            else:
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout=layout)
            frame.sample_rate, frame.pts = rate, start
            container.mux(audio.encode(frame))
        container.mux(audio.encode())
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    corrupt = root / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    empty = root / "empty.mp4"
    empty.touch()
    return {
        "face": make_clip(root / "face.mp4"),
        "silent": make_clip(root / "silent.mp4", audio_seconds=None),
        "noface": make_clip(root / "noface.mp4", frames=(BLANK,) * 5),
        "partial": make_clip(root / "partial.mp4", frames=(FACE, BLANK, FACE, BLANK, FACE)),
        "corrupt": corrupt,
        "empty": empty,
    }


@pytest.fixture(scope="module")
def mediapipe():
    extractor = create_extractor("mediapipe", {"fps": 5})
    extractor.load()
    yield extractor
    extractor.close()


def test_decode_resamples_audio_and_samples_frames(clips):
    seen = []
    formats = (AudioFormat(16000), AudioFormat(22050))
    decoded = decode_clip(
        clips["face"],
        audio_formats=formats,
        video_fps=(5, 2),
        on_frame=lambda fps, t, rgb: seen.append((fps, t, rgb.shape)),
    )
    assert set(decoded.audio) == set(formats)
    assert all(abs(len(decoded.audio[f]) / f.sample_rate - 1.0) < 0.1 for f in formats)
    assert decoded.audio[formats[0]].dtype == np.float32 and decoded.has_video
    assert [t for fps, t, _ in seen if fps == 5] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    assert [t for fps, t, _ in seen if fps == 2] == pytest.approx([0.0, 0.6])  # first frame at or after 0.0 and 0.5
    assert all(shape == (128, 128, 3) for _, _, shape in seen)
    assert decode_clip(clips["silent"], audio_formats=formats).audio is None


@pytest.mark.parametrize("name", ["corrupt", "empty"])
def test_broken_files_raise_clip_errors(clips, name):
    with pytest.raises(ClipError, match="cannot open as a video file"):
        decode_clip(clips[name], audio_formats=(AudioFormat(16000),))


@pytest.mark.parametrize("decode", ["pyav", "mmsa-fet"])
def test_stereo_is_mixed_by_the_channel_mean_without_a_sqrt2_gain(tmp_path, decode):
    # The same signal in both channels: the mean is the signal itself, PyAV's "mono" mix would be sqrt(2) louder.
    signal = speech_like(1.0, 22050, seed=3)
    mono = write_audio_clip(tmp_path / "mono.mkv", signal[None], 22050, codec="pcm_s16le")
    stereo = write_audio_clip(tmp_path / "stereo.mkv", np.stack([signal, signal]), 22050, codec="pcm_s16le")
    audio_format = AudioFormat(16000, decode)
    from_mono, from_stereo = (decode_clip(path, [audio_format]).audio[audio_format] for path in (mono, stereo))
    assert len(from_mono) == len(from_stereo) and np.sqrt(np.mean(from_mono**2)) > 0.05
    assert np.abs(from_stereo - from_mono).max() < 1e-6


def test_stereo_mean_of_different_channels(tmp_path):
    left, right = speech_like(1.0, 16000, seed=4), speech_like(1.0, 16000, seed=5, f0=220.0)
    clip = write_audio_clip(tmp_path / "lr.mkv", np.stack([left, right]), 16000, codec="pcm_s16le")
    audio_format = AudioFormat(16000, "mmsa-fet")
    samples = decode_clip(clip, [audio_format]).audio[audio_format]
    quantised = (
        np.round(np.stack([left, right]) * 32767) / 32768
    )  # the 16-bit PCM the clip holds, read as soundfile does
    assert np.abs(samples - quantised.mean(axis=0)).max() < 1e-7


def test_mmsa_fet_decoding_is_16_bit_and_every_format_comes_from_one_decode(tmp_path):
    clip = write_audio_clip(
        tmp_path / "tone.mp4", np.stack([speech_like(1.0, 44100, 6), speech_like(1.0, 44100, 7)]), 44100
    )
    formats = [
        AudioFormat(44100, "mmsa-fet"),
        AudioFormat(16000, "mmsa-fet", "soxr_hq"),
        AudioFormat(16000, "mmsa-fet", "kaiser_best"),
        AudioFormat(16000),
    ]
    assert AudioFormat(16000, "mmsa-fet") == formats[1]  # None means soxr_hq: one decode serves both
    audio = decode_clip(clip, formats).audio
    native = audio[formats[0]]
    # At the native rate no resampling happens: the mean of two 16-bit channels is a multiple of 1 / 65536.
    assert np.array_equal(native * 65536, np.round(native * 65536)) and native.std() > 0.01
    soxr, kaiser, pyav = audio[formats[1]], audio[formats[2]], audio[formats[3]]
    assert (
        len(soxr) == len(kaiser) == int(np.ceil(len(native) * 16000 / 44100)) and 0 < np.abs(soxr - kaiser).max() < 0.01
    )
    assert np.abs(pyav[: len(soxr)] - soxr).max() < 0.01  # different resamplers, same signal


def test_audio_decode_settings_are_checked():
    with pytest.raises(ValueError, match="audio decode 'ffmpeg' unknown; known: pyav, mmsa-fet"):
        create_extractor("librosa", {"decode": "ffmpeg"})
    with pytest.raises(ValueError, match="needs decode: mmsa-fet"):
        create_extractor("opensmile", {"resampler": "kaiser_best"})
    with pytest.raises(ValueError, match="audio resampler 'sinc_best' unknown"):
        create_extractor("mfcc", {"decode": "mmsa-fet", "resampler": "sinc_best"})
    assert create_extractor("librosa", {"decode": "mmsa-fet"}).audio_format == AudioFormat(22050, "mmsa-fet", "soxr_hq")


@pytest.mark.parametrize(
    ("name", "config", "dim", "rate"),
    [
        ("librosa", {}, 33, 22050 / 512),
        ("librosa", {"recipe": "mmsa-fet-default", "decode": "mmsa-fet"}, 70, 22050 / 128),
        ("opensmile", {}, 25, 100.0),
        ("opensmile", {"functionals": True}, 88, None),
        ("mfcc", {}, 39, 100.0),
    ],
)
def test_audio_extractors_shapes_and_names(clips, name, config, dim, rate):
    extractor = create_extractor(name, config, modality="audio")
    assert extractor.dim == dim == len(set(extractor.feature_names)) and extractor.frame_rate == rate
    ((result, cacheable),) = extract_clip(clips["face"], {0: extractor}).values()
    features = result.arrays["features"]
    assert result.failure is None and cacheable and features.dtype == np.float32 and features.shape[1] == dim
    expected_rows = 1 if rate is None else rate * 1.0
    assert (
        abs(len(features) - expected_rows) <= max(4, 0.05 * expected_rows)
        and np.isfinite(features).all()
        and features.std() > 0
    )
    assert (
        extractor.feature_names[:1]
        == {"librosa": [extractor.feature_names[0]], "opensmile": [extractor.feature_names[0]], "mfcc": ["mfcc_0"]}[
            name
        ]
    )


def test_librosa_memoized_cqt_filters_give_identical_features():
    import importlib

    constantq = importlib.import_module("librosa.core.constantq")
    builder = getattr(constantq, "__vqt_filter_fft")
    setattr(constantq, "__vqt_filter_fft", getattr(builder, "__wrapped__", builder))  # librosa's own, unmemoized
    rng = np.random.default_rng(0)
    tones = [
        np.sin(2 * np.pi * hz * np.arange(22050) / 22050).astype(np.float32)
        + 0.01 * rng.standard_normal(22050).astype(np.float32)
        for hz in (220.0, 233.0)
    ]
    extractor = create_extractor("librosa")
    unmemoized = [extractor.extract(tone) for tone in tones]
    extractor.load()  # memoizes; each bank is then built once and served again (vqt scales it in place: copies)
    assert getattr(constantq, "__vqt_filter_fft").__wrapped__ is getattr(builder, "__wrapped__", builder)
    for _ in range(2):
        for tone, expected in zip(tones, unmemoized):
            assert extractor.extract(tone).tobytes() == expected.tobytes()


@pytest.mark.parametrize("tuning", [-0.5, -0.13, 0.0, 0.27, 0.49])
def test_librosa_filter_banks_built_as_csr_are_librosas_own(tuning):
    """robustmm builds the constant-Q filter banks with its own sparsification: the same matrix, entry by entry."""
    import importlib

    import librosa

    from robustmm.features.audio import _vqt_filter_fft

    constantq = importlib.import_module("librosa.core.constantq")
    builder = getattr(constantq, "__vqt_filter_fft")
    librosa_builder = getattr(builder, "__wrapped__", builder)
    # chroma_cqt's bank: 7 octaves of 36 bins from C1 at the estimated tuning, an octave per halved sample rate.
    freqs = librosa.cqt_frequencies(252, fmin=librosa.note_to_hz("C1") * 2 ** (tuning / 12), bins_per_octave=36)
    for octave in range(7):
        args = (22050 / 2**octave, freqs[252 - 36 * (octave + 1) : 252 - 36 * octave], 1, 1, 0.01)
        expected, expected_n_fft, expected_lengths = librosa_builder(*args)
        built, n_fft, lengths = _vqt_filter_fft(*args)
        assert (n_fft, lengths.tobytes(), built.shape, built.dtype) == (
            expected_n_fft,
            expected_lengths.tobytes(),
            expected.shape,
            expected.dtype,
        )
        for part in ("data", "indices", "indptr"):
            have, want = getattr(built, part), getattr(expected, part)
            assert have.dtype == want.dtype and have.tobytes() == want.tobytes(), part


def test_librosa_recipes_names_and_checks():
    sims = create_extractor("librosa")
    assert sims.feature_names[:2] == ["zero_crossing_rate", "mfcc_0"] and sims.feature_names[-1] == "chroma_cqt_B"
    default = create_extractor("librosa", {"recipe": "mmsa-fet-default"}).feature_names
    assert (
        default[:1] == ["chroma_stft_C"]
        and default[36:38] == ["mfcc_0", "mfcc_1"]
        and default[-1] == "zero_crossing_rate"
    )
    assert default[52:59] == [f"spectral_contrast_{i}" for i in range(7)] and default[-7] == "tonnetz_fifth_x"
    explicit = create_extractor("librosa", {"recipe": ["rms", {"mfcc": {"n_mfcc": 5}}], "hop_length": 256})
    assert explicit.feature_names == ["rms"] + [f"mfcc_{i}" for i in range(5)] and explicit.frame_rate == 22050 / 256
    features = explicit.extract(speech_like(1.0, 22050, seed=8))
    assert features.shape == (1 + 22050 // 256, 6)
    for recipe, message in (
        ("nope", "unknown recipe 'nope'"),
        ([{"mfcc": {}, "rms": {}}], "neither a feature name"),
        (["stft"], "recipe feature 'stft' unsupported"),
        ([{"rms": {"n_mels": 3}}], "has no argument"),
        ([{"mfcc": {"hop_length": 3}}], "sets hop_length"),
    ):
        with pytest.raises(ValueError, match=message):
            create_extractor("librosa", {"recipe": recipe})
    # A named recipe's arguments are not checked against librosa when a config is made (that import takes
    # seconds in every stage): they must be right here.
    for recipe in LIBROSA_RECIPES.values():
        _check_recipe_arguments(_recipe_features(recipe["features"]))


def test_opensmile_lld_names_are_egemaps():
    names = create_extractor("opensmile").feature_names
    assert "Loudness_sma3" in names and "F0semitoneFrom27.5Hz_sma3nz" in names


def test_mediapipe_blendshapes_and_pose_per_frame(clips, mediapipe):
    assert (
        mediapipe.dim == 58
        and mediapipe.feature_names[0] == "_neutral"
        and mediapipe.feature_names[-6:][0] == "pose_pitch"
    )
    assert mediapipe.frame_rate == 5.0
    features = mediapipe.frame_features(FACE)
    assert features.shape == (58,) and features.dtype == np.float32
    assert (features[:52] >= 0).all() and (features[:52] <= 1).all()
    assert mediapipe.frame_features(BLANK) is None
    results = extract_clip(clips["partial"], {0: mediapipe})
    result, _ = results[0]
    # No-face frames are dropped: the valid prefix holds only detected faces; the share is in the quality report.
    assert result.failure is None and result.arrays["features"].shape == (3, 58)
    assert result.quality == {"frames": 5, "detected": 3}


def test_mediapipe_landmarks_option(mediapipe):
    extractor = create_extractor("mediapipe", {"landmarks": True, "fps": 5})
    extractor.load()
    try:
        assert extractor.dim == 58 + 478 * 3
        assert extractor.frame_features(FACE).shape == (58 + 478 * 3,)
    finally:
        extractor.close()


def test_head_pose_from_transformation_matrix():
    yaw = 0.3
    matrix = np.eye(4)
    matrix[:3, :3] = 2.0 * np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    matrix[:3, 3] = (1, 2, -30)
    assert head_pose(matrix) == pytest.approx([0.0, yaw, 0.0, 1, 2, -30], abs=1e-6)


def test_clip_failures_name_the_modality_and_reason(clips, mediapipe):
    mfcc = create_extractor("mfcc")
    reasons = {
        name: {i: r.failure for i, (r, _) in extract_clip(clips[name], {0: mfcc, 1: mediapipe}).items()}
        for name in ("silent", "noface", "corrupt", "empty")
    }
    assert reasons["silent"] == {0: "no audio stream", 1: None}
    assert reasons["noface"] == {0: None, 1: "no face in any of 5 sampled frames"}
    for name in ("corrupt", "empty"):
        assert all(reason.startswith("cannot open as a video file") for reason in reasons[name].values())


def test_face_model_resolution_order(tmp_path, monkeypatch):
    monkeypatch.delenv("ROBUSTMM_FACE_LANDMARKER", raising=False)
    assert resolve_face_model().name == "face_landmarker.task"
    model = tmp_path / "m.task"
    model.write_bytes(b"x")
    monkeypatch.setenv("ROBUSTMM_FACE_LANDMARKER", str(model))
    assert resolve_face_model() == model
    with pytest.raises(FileNotFoundError, match="from model_path not found"):
        resolve_face_model(str(tmp_path / "absent.task"))


def test_unknown_extractor_and_config_key():
    with pytest.raises(
        ValueError, match="unknown extractor 'nope'; registered: bert, librosa, mediapipe, mfcc, openface, opensmile"
    ):
        create_extractor("nope")
    with pytest.raises(ValueError, match="unknown config key\\(s\\) sr; known"):
        create_extractor("librosa", {"sr": 1})
    with pytest.raises(ValueError, match="extracts audio, not vision"):
        create_extractor("librosa", modality="vision")


def test_bert_batched_text_features():
    extractor = create_extractor("bert", {"max_length": 12, "batch_size": 2})
    texts = ["a happy day", "this is a much longer sentence that will certainly be cut at twelve tokens", ""]
    text_bert, text = extractor.extract_batch(texts)
    assert text_bert.shape == (3, 3, 12) and text.shape == (3, 12, 384) and text.dtype == np.float32
    assert extractor.dim == 384 and extractor.frame_rate is None
    sep = extractor.encoder.tokenizer.sep_token_id
    assert text_bert[1, 0, -1] == sep and text_bert[1, 1].all()  # truncation keeps the final [SEP]
    assert text_bert[2, 1].sum() == 2  # [CLS] [SEP] of the empty transcript
    assert not text[2, 2:].any() and np.abs(text[2, :2]).min() > 0  # zeros at padded positions only
    encoder_states = create_extractor("bert", {"max_length": 12, "padded_states": "encoder"}).extract_batch(texts)[1]
    assert np.abs(encoder_states[2, 2:]).max() > 0.1 and np.array_equal(encoder_states[2, :2], text[2, :2])


def test_bert_cut_truncation_keeps_the_first_positions_of_the_whole_transcript():
    long_text = "this is a much longer sentence that will certainly be cut at twelve tokens"
    cut = create_extractor("bert", {"max_length": 12, "truncation": "cut"})
    text_bert, text = cut.extract_batch([long_text, "short"])
    encoder = cut.encoder
    whole = encoder.tokenize([long_text], 32)
    length = int(whole[0, 1].sum())
    assert (
        length > 12
        and np.array_equal(text_bert[0], whole[0, :, :12])
        and text_bert[0, 0, -1] != encoder.tokenizer.sep_token_id
    )
    assert np.abs(text[0] - encoder.encode(whole)[0, :12]).max() < 1e-5
    assert text_bert[1, 1].sum() == 3 and not text[1, 3:].any()
    with pytest.raises(ValueError, match="bert: unknown truncation 'left'; known: keep-sep, cut"):
        create_extractor("bert", {"truncation": "left"})


def openface_header(face_id: bool = True) -> list[str]:
    meta = (
        ["frame", "face_id", "timestamp", "confidence", "success"]
        if face_id
        else ["frame", "timestamp", "confidence", "success"]
    )
    return meta + list(OPENFACE_SETS["all"])


def write_openface_csv(path: Path, success=(1, 0, 1), fps: float = 30.0) -> Path:
    header = openface_header()
    rows = []
    for index, ok in enumerate(success):
        values = [index + 1, 0, round(index / fps, 3), 0.9 if ok else 0.0, ok] + [index + j / 1000 for j in range(709)]
        rows.append(", ".join(str(value) for value in values))
    path.write_text(", ".join(header) + "\n" + "\n".join(rows) + "\n")
    return path


def test_openface_parser_on_a_22_csv(tmp_path):
    path = write_openface_csv(tmp_path / "of.csv")
    features, success, timestamps = parse_openface_csv(path, "all")
    assert features.shape == (3, 709) and success.tolist() == [True, False, True]
    assert features[2, 0] == pytest.approx(2.0) and timestamps.tolist() == pytest.approx([0, 0.033, 0.067])
    au_pose, _, _ = parse_openface_csv(path, "au_pose")
    assert au_pose.shape == (3, 49)
    assert au_pose[0, 0] == pytest.approx(features[0, OPENFACE_SETS["all"].index("pose_Tx")])


@pytest.mark.parametrize(
    ("feature_set", "flags", "dim"), [("mmsa-fet", ("pose", "2d", "aus"), 177), ("mmsa-fet-171", ("2d", "aus"), 171)]
)
def test_openface_mmsa_fet_sets_are_the_columns_mmsa_fet_keeps(tmp_path, feature_set, flags, dim):
    # MMSA-FET runs FeatureExtraction with only these outputs and keeps every column after the first five;
    # robustmm runs it with all outputs and picks the same columns by name.
    from robustmm.features.video import AU_COLUMNS, LANDMARK_2D_COLUMNS, POSE_COLUMNS

    written = {"pose": POSE_COLUMNS, "2d": LANDMARK_2D_COLUMNS, "aus": AU_COLUMNS}
    columns = [name for flag in flags for name in written[flag]]
    full = write_openface_csv(tmp_path / "all.csv")
    features, _, _ = parse_openface_csv(full, feature_set)
    index = {name: i for i, name in enumerate(OPENFACE_SETS["all"])}
    mmsa_fet_rows = np.stack([[5 + index[name] for name in columns]] * 3).astype(
        np.float32
    )  # values are col index + row
    expected = np.arange(3, dtype=np.float32)[:, None] + (mmsa_fet_rows - 5) / 1000
    assert features.shape == (3, dim) == expected.shape and np.allclose(features, expected)


@pytest.mark.skipif(not OPENFACE_SAMPLE.is_file(), reason="../shared/media/openface_sample.csv absent")
def test_openface_parser_on_the_real_early_2x_sample():
    features, success, _ = parse_openface_csv(OPENFACE_SAMPLE, "au_pose")
    assert features.shape == (100, 49) and success.all() and np.isfinite(features).all()
    pose_tz = features[:, 2]
    assert 500 < pose_tz.mean() < 700  # millimetres from the camera, read from the ` pose_Tz` column
    gaze_angle_x = features[:, 6 + 6]
    assert np.abs(gaze_angle_x).max() < 1.0  # derived from the gaze vectors (this version has no gaze_angle columns)
    with pytest.raises(ValueError, match="lacks: gaze_angle_x|lacks: eye_lmk"):
        parse_openface_csv(OPENFACE_SAMPLE, "all")
    mmsa_fet, _, _ = parse_openface_csv(OPENFACE_SAMPLE, "mmsa-fet")
    assert mmsa_fet.shape == (100, 177) and np.array_equal(mmsa_fet[:, :6], features[:, :6])  # pose first, as upstream


def fake_openface(tmp_path: Path, csv_source: Path | None, exit_status: int = 0) -> str:
    """A stand-in FeatureExtraction: copies a prepared CSV to <out_dir>/<of>.csv and exits with `exit_status`."""
    script = tmp_path / f"FeatureExtraction{exit_status}"
    copy = f'cp "{csv_source}" "$out/$name.csv"' if csv_source else ":"
    script.write_text(
        "#!/bin/sh\nwhile [ $# -gt 0 ]; do case $1 in -out_dir) out=$2; shift;; -of) name=$2; shift;; esac; shift; done\n"
        f"{copy}\necho 'landmark model missing' >&2\nexit {exit_status}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_openface_runs_the_binary_and_checks_its_exit_status(tmp_path, clips):
    csv_path = write_openface_csv(tmp_path / "prepared.csv", success=(1, 0, 1, 1))
    extractor = create_extractor("openface", {"binary": fake_openface(tmp_path, csv_path), "feature_set": "au_pose"})
    extractor.check()
    features, quality = extractor.extract_file(clips["face"])
    assert features.shape == (3, 49) and quality == {"frames": 4, "detected": 3}  # success == 0 frame dropped
    sampled = create_extractor("openface", {"binary": extractor.config.binary, "feature_set": "au_pose", "fps": 10})
    features, quality = sampled.extract_file(clips["face"])  # rows at 0, 1/30, 2/30, 3/30 s: slots 0 and 1 at 10 fps
    assert features.shape == (2, 49) and quality == {"frames": 2, "detected": 2}
    failing = create_extractor("openface", {"binary": fake_openface(tmp_path, csv_path, exit_status=1)})
    ((result, cacheable),) = extract_clip(clips["face"], {0: failing}).values()
    assert "exit status 1" in result.failure and "landmark model missing" in result.failure and not cacheable
    with pytest.raises(FileNotFoundError, match="OpenFace FeatureExtraction not found"):
        create_extractor("openface", {"binary": str(tmp_path / "absent")}).check()
    assert os.access(extractor.config.binary, os.X_OK)
