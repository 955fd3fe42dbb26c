"""robustmm against MMSA-FET 0.4.1 itself (the test-only extra that .ci/run installs, with Debian's ffmpeg).

Same samples in -> identical features (librosa recipes, openSMILE LLD and functionals, BERT with MMSA-FET's
padding); a clip decoded with `decode: mmsa-fet` -> MMSA-FET's own run_single output: identical for 16-bit PCM
audio, within TOLERANCE for AAC (PyAV's bundled FFmpeg and Debian's decode AAC one 16-bit step apart at a few
samples in 10^4).
"""

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
from test_features_extractors import speech_like, write_audio_clip

from robustmm.features.audio import LIBROSA_RECIPES
from robustmm.features.base import create_extractor
from robustmm.features.extract import extract_clip

pytest.importorskip("MSA_FET", reason="the test-only extra mmsa-fet==0.4.1 is not installed (.ci/run installs it)")
from MSA_FET import FeatureExtractionTool  # noqa: E402
from MSA_FET.dataset import padding  # noqa: E402
from MSA_FET.extractors.audio.librosa import librosaExtractor  # noqa: E402
from MSA_FET.extractors.audio.opensmile import opensmileExtractor  # noqa: E402
from MSA_FET.extractors.text.bert import bertExtractor  # noqa: E402

# AAC clips: every column within this share of MMSA-FET's column standard deviation, and correlated above
# CORRELATION. Measured on these clips: 0.11 for the top spectral-contrast band (next to Nyquist, where they hold
# almost no energy, so one 16-bit step moves its log ratio most), 0.012 or less for every other column.
TOLERANCE = 0.25
CORRELATION = 0.9999
LOGGER = logging.getLogger("mmsa-fet-compat")


def librosa_config(recipe: str) -> dict:
    """MMSA-FET's librosa config for one of robustmm's named recipes."""
    spec = LIBROSA_RECIPES[recipe]
    return {
        "tool": "librosa",
        "sample_rate": 22050,
        "n_fft": spec["n_fft"],
        "hop_length": spec["hop_length"],
        "features": {name: dict(args) for feature in spec["features"] for name, args in feature.items()},
    }


def opensmile_config(level: str) -> dict:
    return {
        "tool": "opensmile",
        "sample_rate": 16000,
        "args": {"feature_set": "eGeMAPSv02", "feature_level": level, "start": None, "end": None},
    }


# (robustmm extractor, its config, MMSA-FET's config)
EXTRACTORS = {
    "librosa-sims": ("librosa", {"recipe": "sims"}, lambda: librosa_config("sims")),
    "librosa-mmsa-fet-default": ("librosa", {"recipe": "mmsa-fet-default"}, lambda: librosa_config("mmsa-fet-default")),
    "opensmile-lld": ("opensmile", {}, lambda: opensmile_config("LowLevelDescriptors")),
    "opensmile-functionals": ("opensmile", {"functionals": True}, lambda: opensmile_config("Functionals")),
}
UPSTREAM_CLASSES = {"librosa": librosaExtractor, "opensmile": opensmileExtractor}


def test_mmsa_fet_default_recipe_is_the_package_librosa_json():
    import json

    import MSA_FET

    shipped = json.loads((Path(MSA_FET.__file__).parent / "example_configs" / "librosa.json").read_text())["audio"]
    ours = LIBROSA_RECIPES["mmsa-fet-default"]
    assert [name for feature in ours["features"] for name in feature] == list(shipped["features"])
    assert [args for feature in ours["features"] for args in feature.values()] == list(shipped["features"].values())
    assert ours["n_fft"] == shipped["n_fft"] and shipped["sample_rate"] == 22050
    assert "hop_length" not in shipped and ours["hop_length"] == 128  # "hop_lenth" there: MMSA-FET's default applies


@pytest.mark.parametrize("key", list(EXTRACTORS))
def test_same_samples_give_identical_features(tmp_path, key):
    name, config, upstream_config = EXTRACTORS[key]
    extractor = create_extractor(name, config)
    samples = speech_like(2.0, extractor.sample_rate, seed=11)
    wav = tmp_path / "samples.wav"
    soundfile.write(wav, samples, extractor.sample_rate, subtype="FLOAT")  # librosa.load gives these samples back
    # MMSA-FET's librosa rows are float64 where a feature is (zero-crossing rate); the format stores float32.
    theirs = UPSTREAM_CLASSES[name](upstream_config(), LOGGER).extract(str(wav)).astype(np.float32)
    ours = extractor.extract(samples)
    assert theirs.shape == ours.shape and np.array_equal(ours, theirs)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("fet-clips")
    left, right = speech_like(2.0, 44100, seed=12), speech_like(2.0, 44100, seed=13, f0=210.0)
    stereo = np.stack([left, 0.6 * right + 0.4 * left])
    return {
        "stereo-pcm": write_audio_clip(root / "stereo.mkv", stereo, 44100, codec="pcm_s16le"),
        "stereo-aac": write_audio_clip(root / "stereo.mp4", stereo, 44100),
        "mono-aac": write_audio_clip(root / "mono.mp4", speech_like(2.0, 22050, seed=14)[None], 22050),
    }


@pytest.fixture(scope="module")
def mmsa_fet_output(tmp_path_factory):
    """MMSA-FET's run_single: ffmpeg -vn -acodec pcm_s16le to a wav, librosa.load(wav, sr), its extractor."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("MMSA-FET decodes with the ffmpeg command (Debian: apt-get install ffmpeg)")
    root = tmp_path_factory.mktemp("fet-run")
    tools = {}

    def run(key: str, clip: Path) -> np.ndarray:
        if key not in tools:
            tools[key] = FeatureExtractionTool(
                {"audio": EXTRACTORS[key][2]()}, tmp_dir=root / key, log_dir=root / "log", verbose=0
            )
        return np.asarray(tools[key].run_single(clip)["audio"], np.float32)

    return run


def robustmm_output(key: str, clip: Path) -> np.ndarray:
    name, config, _ = EXTRACTORS[key]
    ((result, _),) = extract_clip(clip, {0: create_extractor(name, {**config, "decode": "mmsa-fet"})}).values()
    return result.arrays["features"]


@pytest.mark.parametrize("key", list(EXTRACTORS))
def test_mmsa_fet_decoding_of_16_bit_pcm_gives_mmsa_fet_features(clips, mmsa_fet_output, key):
    theirs, ours = mmsa_fet_output(key, clips["stereo-pcm"]), robustmm_output(key, clips["stereo-pcm"])
    assert np.array_equal(ours, theirs)


@pytest.mark.parametrize("clip", ["stereo-aac", "mono-aac"])
@pytest.mark.parametrize("key", ["librosa-sims", "librosa-mmsa-fet-default", "opensmile-lld"])
def test_mmsa_fet_decoding_of_aac_is_within_tolerance(clips, mmsa_fet_output, key, clip):
    theirs, ours = mmsa_fet_output(key, clips[clip]), robustmm_output(key, clips[clip])
    assert ours.shape == theirs.shape
    scale = theirs.std(axis=0)
    varied = scale > 0
    assert np.all(np.abs(ours - theirs).max(axis=0)[varied] <= TOLERANCE * scale[varied])
    assert np.array_equal(ours[:, ~varied], theirs[:, ~varied])
    assert min(np.corrcoef(ours[:, c], theirs[:, c])[0, 1] for c in np.flatnonzero(varied)) > CORRELATION


def test_pyav_decoding_is_not_mmsa_fet(clips, mmsa_fet_output):
    # The guard of the tests above: PyAV's resampler alone already moves the features past the tolerance.
    theirs = mmsa_fet_output("librosa-sims", clips["stereo-pcm"])
    ((result, _),) = extract_clip(clips["stereo-pcm"], {0: create_extractor("librosa", {"decode": "pyav"})}).values()
    assert np.abs(result.arrays["features"] - theirs).max() > TOLERANCE * theirs.std(axis=0).min()


def test_bert_cut_with_zeros_matches_mmsa_fet_text_and_padding():
    from robustmm.text_encoder import OFFLINE_ENCODER, resolve_encoder_path

    texts = ["a happy day", "this is a much longer sentence that will certainly be cut at twelve tokens"]
    upstream = bertExtractor({"pretrained": resolve_encoder_path(OFFLINE_ENCODER)}, LOGGER)
    ours = create_extractor("bert", {"model": OFFLINE_ENCODER, "max_length": 12, "truncation": "cut"})
    text_bert, text = ours.extract_batch(texts)
    for index, transcript in enumerate(texts):
        # MMSA-FET encodes each transcript alone, then its dataset padding cuts or zero-pads to the length.
        hidden = padding(upstream.extract(transcript), 12)
        tokens = padding(upstream.tokenize(transcript), 12).T
        assert np.array_equal(text_bert[index], tokens.astype(np.int64))
        assert np.abs(text[index] - hidden).max() < 1e-5
        assert np.array_equal(text[index] == 0, hidden == 0)
