"""The AVEC2019 importer on tiny files written in the distributed E-DAIC format."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
import torch

import robustmm
from robustmm import avec2019, cli, data, missing
from robustmm.presets import get_preset

MFCC_HEADER = ["name", "frameTime"] + [
    f"pcm_fftMag_mfcc{order}[{index}]" for order in ("", "_de", "_de_de") for index in range(13)
]
FACE_FEATURES = (
    "pose_Tx pose_Ty pose_Tz pose_Rx pose_Ry pose_Rz gaze_0_x gaze_0_y gaze_0_z gaze_1_x gaze_1_y gaze_1_z "
    "gaze_angle_x gaze_angle_y AU01_r AU02_r AU04_r AU05_r AU06_r AU07_r AU09_r AU10_r AU12_r AU14_r AU15_r "
    "AU17_r AU20_r AU23_r AU25_r AU26_r AU45_r AU01_c AU02_c AU04_c AU05_c AU06_c AU07_c AU09_c AU10_c AU12_c "
    "AU14_c AU15_c AU17_c AU20_c AU23_c AU25_c AU26_c AU28_c AU45_c"
).split()
FACE_HEADER = ["frame", "timestamp", "confidence", "success"] + FACE_FEATURES
WINDOW = 1.0
TEXT_LENGTH = 16


def mfcc_csv(seconds: float, offset: float = 0.0, separator: str = ";") -> str:
    """100 frames/s; every MFCC column equals offset + the frame time (so a window mean is its centre)."""
    lines = [separator.join(MFCC_HEADER)]
    for frame in range(int(seconds * 100)):
        time = frame / 100
        lines.append(separator.join(["'unknown'", f"{time:.6f}"] + [f"{offset + time:.6f}"] * 39))
    return "\n".join(lines) + "\n"


def face_csv(rows: list[tuple[float, float, int, float]], columns: list[str] = FACE_HEADER) -> str:
    """OpenFace layout with its spaced header; each row is (timestamp, confidence, success, feature value)."""
    lines = [", ".join(columns)]
    for frame, (time, confidence, success, value) in enumerate(rows, start=1):
        fields = [str(frame), f"{time:.3f}", f"{confidence:.2f}", str(success)] + [f"{value:.4f}"] * (len(columns) - 4)
        lines.append(", ".join(fields))
    return "\n".join(lines) + "\n"


def transcript_csv(utterances: list[tuple[float, str]]) -> str:
    lines = ["Start_Time,End_Time,Text,Confidence"]
    lines += [f'{start},{start + 1.5},"{text}",0.93' for start, text in utterances]
    return "\n".join(lines) + "\n"


def participant_files(pid: int, offset: float, seconds: float = 3.0) -> dict[str, str]:
    face_rows = [(frame / 30, 0.98, 1, offset) for frame in range(int(seconds * 30))]
    return {
        f"{pid}_Transcript.csv": transcript_csv([(2.0, f"second words of {pid}, really"), (0.5, "hello there")]),
        f"features/{pid}_OpenSMILE2.3.0_mfcc.csv": mfcc_csv(seconds, offset),
        f"features/{pid}_OpenFace2.1.0_Pose_gaze_AUs.csv": face_csv(face_rows),
    }


def write_folder(root, pid: int, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / f"{pid}_P" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def write_archive(path, pid: int, files: dict[str, str]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            payload = text.encode()
            member = tarfile.TarInfo(f"{pid}_P/{name}")
            member.size = len(payload)
            tar.addfile(member, io.BytesIO(payload))


def write_splits(root, train: str, dev: str, test: str) -> None:
    (root / "labels").mkdir(exist_ok=True)
    (root / "labels" / "train_split.csv").write_text(train)
    (root / "labels" / "dev_split.csv").write_text(dev)
    (root / "labels" / "test_split.csv").write_text(test)


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """Train 300-307 (good, archive, missing file, wrong separator, missing columns, truncated archive, failed
    face frames, tab-separated transcript), dev 310 (older PHQ8_Score spelling) and 311 (no folder), test 320."""
    root = tmp_path_factory.mktemp("edaic")
    write_folder(root, 300, participant_files(300, offset=1.0))
    write_archive(root / "301_P.tar.gz", 301, participant_files(301, offset=3.0))

    files = participant_files(302, offset=5.0)
    del files["features/302_OpenSMILE2.3.0_mfcc.csv"]
    write_folder(root, 302, files)

    files = participant_files(303, offset=7.0)
    files["features/303_OpenSMILE2.3.0_mfcc.csv"] = mfcc_csv(3.0, 7.0, separator=",")
    write_folder(root, 303, files)

    files = participant_files(304, offset=9.0)
    files["features/304_OpenFace2.1.0_Pose_gaze_AUs.csv"] = face_csv([(0.0, 0.98, 1, 9.0)], FACE_HEADER[:-3])
    write_folder(root, 304, files)

    # Truncated inside the face file, the archive's last and largest member.
    files = participant_files(305, offset=11.0, seconds=2.0)
    files["features/305_OpenFace2.1.0_Pose_gaze_AUs.csv"] = face_csv([(t / 30, 0.98, 1, 11.0) for t in range(3000)])
    write_archive(root / "305_P.tar.gz", 305, files)
    payload = (root / "305_P.tar.gz").read_bytes()
    (root / "305_P.tar.gz").write_bytes(payload[: len(payload) * 7 // 10])

    # Window 0: values 2 and 4 valid, 100 failed, 200 low confidence; window 1: only failures (missing);
    # window 2: value 8. Lower-case file names, in a data/ subfolder.
    face_rows = [
        (0.0, 0.98, 1, 2.0),
        (0.5, 0.95, 1, 4.0),
        (0.6, 0.98, 0, 100.0),
        (0.7, 0.3, 1, 200.0),
        (1.2, 0.0, 0, 300.0),
        (2.4, 0.99, 1, 8.0),
    ]
    (root / "data").mkdir()
    write_folder(
        root / "data",
        306,
        {
            "306_transcript.csv": transcript_csv([(0.0, "only words")]),
            "features/306_opensmile2.3.0_mfcc.csv": mfcc_csv(3.0, 0.0),
            "features/306_openface2.1.0_pose_gaze_aus.csv": face_csv(face_rows),
        },
    )
    files = participant_files(307, offset=13.0)
    files["307_Transcript.csv"] = "start_time\tstop_time\tspeaker\tvalue\n36.5\t39.7\tParticipant\tyeah\n"
    write_folder(root, 307, files)
    write_folder(root, 310, participant_files(310, offset=20.0))
    write_folder(root, 320, participant_files(320, offset=30.0))
    write_folder(root, 399, participant_files(399, offset=0.0))  # in no split file

    write_splits(
        root,
        "Participant_ID,Gender,PHQ_Binary,PHQ_Score\n300,1,0,3\n301,0,1,12\n302,1,0,5\n303,0,0,7\n304,1,1,20\n"
        "305,0,1,15\n306,1,0,1\n307,0,0,9\n",
        "Participant_ID,PHQ8_Binary,PHQ8_Score,Gender\n310,1,18,0\n311,0,2,1\n",
        "Participant_ID,Gender,PHQ_Binary,PHQ_Score\n320,1,0,4\n",
    )
    out = tmp_path_factory.mktemp("out") / "avec.pkl"
    report = avec2019.import_avec2019(
        root,
        out,
        window_seconds=WINDOW,
        text_length=TEXT_LENGTH,
        audio_length=5,
        vision_length=4,
        device="cpu",
    )
    return root, out, report, data.load(out)


def rows_by_pid(split: dict) -> dict[str, int]:
    return {identifier.split("$_$")[0]: row for row, identifier in enumerate(split["id"])}


def problems_of(report, pid: str) -> dict[str, str]:
    return {p["part"]: p["reason"] for p in report.problems if p["participant"] == pid}


def test_window_pool_arithmetic_by_hand():
    pool = avec2019.WindowPool(window_seconds=1.0, max_windows=5, dim=1)
    pool.add(np.array([0.0, 0.5, 1.0]), np.array([[1.0], [3.0], [5.0]]))
    pool.add(np.array([1.5, 3.2, np.nan, 7.0]), np.array([[9.0], [7.0], [50.0], [60.0]]))  # NaN time, past the crop
    pooled, gaps = pool.pooled(("mean", "std"))
    np.testing.assert_allclose(pooled, [[2.0, 1.0], [7.0, 2.0], [7.0, 0.0]])
    assert gaps == 1  # window 2 had no frame and was dropped
    assert pool.pooled(("std",))[0][:, 0].tolist() == [1.0, 2.0, 0.0]


def test_frame_on_a_window_boundary_opens_the_next_window():
    pool = avec2019.WindowPool(window_seconds=0.1, max_windows=4, dim=1)
    pool.add(np.array([0.3]), np.array([[1.0]]))
    assert pool.count.tolist() == [0, 0, 0, 1]


def test_output_shapes_labels_and_meta(imported):
    _, _, report, loaded = imported
    train, valid, test = loaded["train"], loaded["valid"], loaded["test"]
    assert list(rows_by_pid(train)) == ["300", "301", "302", "303", "304", "305", "306", "307"]
    assert list(rows_by_pid(valid)) == ["310"] and list(rows_by_pid(test)) == ["320"]
    assert train["regression_labels"].tolist() == [3, 12, 5, 7, 20, 15, 1, 9]
    assert valid["regression_labels"].tolist() == [18]  # read from PHQ8_Score
    assert train["audio"].shape == (8, 5, 78) and train["vision"].shape == (8, 4, 98)
    assert train["text_bert"].shape == (8, 3, TEXT_LENGTH) and train["text"].shape == (8, TEXT_LENGTH, 384)
    meta = loaded["meta"]
    assert meta["feature_names"]["audio"][0] == "mean(pcm_fftMag_mfcc[0])"
    assert meta["feature_names"]["vision"][-1] == "std(AU45_c)" and len(meta["feature_names"]["vision"]) == 98
    assert meta["importer"]["window_seconds"] == WINDOW and meta["importer"]["statistics"] == ["mean", "std"]
    assert meta["importer"]["split_files"]["valid"] == "labels/dev_split.csv"
    assert meta["import_report"]["participants"] == {"train": 8, "valid": 1, "test": 1}
    assert report.participants == {"train": 8, "valid": 1, "test": 1}


def test_transcript_is_ordered_by_start_time(imported):
    _, _, _, loaded = imported
    train = loaded["train"]
    row = rows_by_pid(train)["300"]
    assert train["raw_text"][row] == "hello there second words of 300, really"
    ids, mask = train["text_bert"][row, 0], train["text_bert"][row, 1]
    assert mask.sum() == 10 and ids[0] == 101 and ids[9] == 102  # [CLS] 8 word pieces [SEP]


def test_pooled_audio_is_normalised_with_training_statistics(imported):
    _, _, _, loaded = imported
    meta = loaded["meta"]["normalisation"]["audio"]
    mean, std = np.array(meta["mean"]), np.array(meta["std"])
    train = loaded["train"]
    valid = np.concatenate([train["audio"][row, :length] for row, length in enumerate(train["audio_lengths"])])
    np.testing.assert_allclose(valid.mean(axis=0), 0.0, atol=1e-5)  # fitted on exactly these windows
    # 300's MFCC columns equal 1 + t at 100 frames/s: window k holds t = k .. k + 0.99, mean 1 + k + 0.495.
    row = rows_by_pid(train)["300"]
    assert train["audio_lengths"][row] == 3
    raw = train["audio"][row, :3] * std + mean
    np.testing.assert_allclose(raw[:, 0], [1.495, 2.495, 3.495], atol=1e-4)
    np.testing.assert_allclose(raw[:, 39], np.std(np.arange(100) / 100), atol=1e-4)
    # Dev and test use the training statistics, not their own.
    dev = loaded["valid"]
    np.testing.assert_allclose(dev["audio"][0, :3, 0] * std[0] + mean[0], [20.495, 21.495, 22.495], atol=1e-3)
    assert np.all(dev["audio"][0, 3:] == 0) and dev["audio_lengths"][0] == 3


def test_failed_and_low_confidence_face_frames_leave_the_pool(imported):
    _, _, _, loaded = imported
    train = loaded["train"]
    stats = loaded["meta"]["normalisation"]["vision"]
    row = rows_by_pid(train)["306"]
    assert train["vision_lengths"][row] == 2  # window 1 had only failed frames: dropped
    raw = train["vision"][row, :2] * np.array(stats["std"]) + np.array(stats["mean"])
    np.testing.assert_allclose(raw[:, 0], [3.0, 8.0], atol=1e-4)  # means of {2, 4} and {8}
    np.testing.assert_allclose(raw[:, 49], [1.0, 0.0], atol=1e-4)  # stds
    assert train["raw_text"][row] == "only words"


def test_participant_without_mfcc_keeps_its_row_with_audio_missing(imported):
    _, _, report, loaded = imported
    train = loaded["train"]
    row = rows_by_pid(train)["302"]
    assert train["audio_lengths"][row] == 0 and np.all(train["audio"][row] == 0)
    assert train["vision_lengths"][row] == 3
    assert "no openSMILE MFCC file" in problems_of(report, "302")["audio"]


def test_wrong_separator_and_missing_columns_are_reported(imported):
    _, _, report, loaded = imported
    rows = rows_by_pid(loaded["train"])
    assert "wrong separator: expected ';'" in problems_of(report, "303")["audio"]
    assert loaded["train"]["audio_lengths"][rows["303"]] == 0
    reason = problems_of(report, "304")["vision"]
    assert "missing columns AU26_c, AU28_c, AU45_c" in reason and "304_OpenFace2.1.0_Pose_gaze_AUs.csv" in reason
    assert loaded["train"]["vision_lengths"][rows["304"]] == 0 and loaded["train"]["audio_lengths"][rows["304"]] == 3
    assert "transcript lacks columns Start_Time, Text (separator must be ',')" in problems_of(report, "307")["text"]
    assert np.all(loaded["train"]["text_bert"][rows["307"]] == 0) and loaded["train"]["raw_text"][rows["307"]] == ""


def test_truncated_archive_keeps_what_was_read(imported):
    _, _, report, loaded = imported
    train = loaded["train"]
    row = rows_by_pid(train)["305"]
    assert "ended" in problems_of(report, "305")["vision"]
    assert train["vision_lengths"][row] == 0
    assert train["audio_lengths"][row] == 2 and train["raw_text"][row].startswith("hello there")
    assert train["audio_lengths"][rows_by_pid(train)["301"]] == 3  # the intact archive is complete


def test_participant_without_folder_and_folder_without_split_are_reported(imported):
    _, _, report, _ = imported
    dropped = {d["participant"]: d["reason"] for d in report.dropped}
    assert "dev_split.csv but no 311_P folder or 311_P.tar.gz" in dropped["311"]
    assert "in no split file" in dropped["399"]
    summary = report.summary()
    assert "participant 311:" in summary and "participant 303 audio: " in summary


def test_cli_imports_and_prints_the_summary(imported, tmp_path, capsys):
    root, out, _, _ = imported
    second = tmp_path / "again.pkl"
    code = cli.main(
        [
            "import-avec2019",
            str(root),
            "--out",
            str(second),
            "--window-seconds",
            "1",
            "--statistics",
            "mean",
            "std",
            "--text-length",
            str(TEXT_LENGTH),
            "--audio-length",
            "5",
            "--vision-length",
            "4",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    assert "imported 10 participants (train 8, valid 1, test 1)" in capsys.readouterr().out
    assert second.read_bytes() == out.read_bytes()  # deterministic, and independent of where it is written


def test_missing_transcript_is_an_empty_text_row(tmp_path):
    files = participant_files(300, offset=1.0)
    del files["300_Transcript.csv"]
    write_folder(tmp_path, 300, files)
    write_folder(tmp_path, 301, participant_files(301, offset=2.0))
    header = "Participant_ID,Gender,PHQ8_Binary,PHQ8_Score\n"
    write_splits(tmp_path, header + "300,1,0,3\n", header + "301,1,0,4\n", header)
    report = avec2019.import_avec2019(
        tmp_path,
        tmp_path / "out.pkl",
        text_length=8,
        statistics=("mean",),
        audio_length=4,
        vision_length=4,
        device="cpu",
    )
    loaded = data.load(tmp_path / "out.pkl")
    assert np.all(loaded["train"]["text_bert"][0] == 0) and np.all(loaded["train"]["text"][0] == 0)
    assert loaded["train"]["audio"].shape == (1, 4, 39) and len(loaded["test"]["id"]) == 0
    assert "no transcript" in problems_of(report, "300")["text"]


def test_unusable_settings_and_label_files_are_refused(tmp_path):
    with pytest.raises(ValueError, match="statistics"):
        avec2019.ImportSettings(statistics=("median",))
    with pytest.raises(ValueError, match="window length"):
        avec2019.ImportSettings(window_seconds=0)
    with pytest.raises(FileNotFoundError, match="no train split file"):
        avec2019.import_avec2019(tmp_path, tmp_path / "out.pkl")
    write_splits(
        tmp_path, "Participant_ID;PHQ_Score\n300;3\n", "Participant_ID,PHQ_Score\n", "Participant_ID,PHQ_Score\n"
    )
    with pytest.raises(
        ValueError, match="train_split.csv: needs columns Participant_ID and one of PHQ_Score, PHQ8_Score"
    ):
        avec2019.import_avec2019(tmp_path, tmp_path / "out.pkl")


def test_default_import_has_the_dims_and_lengths_of_the_preset(imported):
    _, _, _, loaded = imported
    preset = get_preset("avec2019")
    train = loaded["train"]
    assert (train["text"].shape[-1], train["audio"].shape[-1], train["vision"].shape[-1]) == preset.feature_dims
    defaults = avec2019.ImportSettings()
    assert (defaults.text_length, defaults.audio_length, defaults.vision_length) == preset.seq_lens
    assert defaults.text_encoder == preset.text_encoder


def test_rows_with_a_missing_modality_go_through_the_missing_protocol(imported):
    _, _, _, loaded = imported
    train = loaded["train"]
    corrupted = missing.simulate_missing(train, rates=(0.5, 0.5, 0.5), seeds=(111, 1111, 11111))
    empty_audio = train["audio_lengths"] == 0
    assert empty_audio.any() and corrupted["audio_keep"][empty_audio].sum() == 0
    assert np.all(corrupted["text_bert_m"][train["text_bert"][:, 1].sum(axis=1) == 0] == 0)


def test_columns_are_selected_by_name_in_any_order_with_crlf_lines():
    columns = FACE_HEADER[:4] + ["face_id"] + list(reversed(FACE_FEATURES))
    row = ["1", "0.5", "0.98", "1", "0"] + [str(index) for index in reversed(range(len(FACE_FEATURES)))]
    text = "\r\n".join([", ".join(columns), ", ".join(row)]) + "\r\n"
    settings = avec2019.ImportSettings(statistics=("mean",), vision_length=2)
    pooled, gaps = avec2019.pool_stream(io.BytesIO(text.encode()), avec2019.FACE, settings)
    assert pooled.tolist() == [list(range(49))] and gaps == 0


def test_an_import_with_no_usable_participant_names_each_one(tmp_path):
    (tmp_path / "300_P").mkdir()
    write_splits(
        tmp_path, "Participant_ID,PHQ_Score\n300,3\n301,4\n", "Participant_ID,PHQ_Score\n", "Participant_ID,PHQ_Score\n"
    )
    with pytest.raises(RuntimeError, match="no participant could be imported") as raised:
        avec2019.import_avec2019(tmp_path, tmp_path / "out.pkl")
    message = str(raised.value)
    assert (
        "300: nothing usable (audio: no openSMILE MFCC file" in message and "301: in labels/train_split.csv" in message
    )
    assert not (tmp_path / "out.pkl").exists()


def test_an_imported_file_sweeps_with_the_avec2019_preset(imported, tmp_path):
    _, out, _, _ = imported
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors on a shared machine
    try:
        flat = robustmm.sweep(
            out,
            "avec2019",
            rates=[0.0, 0.5],
            seeds=[111],
            out=tmp_path / "sweep",
            text_mode="frozen",
            device="cpu",
            epochs=1,
            progress=False,
        )
    finally:
        torch.set_num_threads(threads)
    for metric in ("CCC", "RMSE", "MAE"):
        assert np.isfinite(flat[f"auilc/{metric}"]) and np.isfinite(flat[f"rate_0.5/{metric}_mean"])
    assert flat["auilc/MAE"] == pytest.approx(0.5 * (flat["rate_0.0/MAE_mean"] + flat["rate_0.5/MAE_mean"]) / 2)
