"""Reading label.csv + Raw/: every problem reported at once, with file and row."""

from pathlib import Path

import pytest

from robustmm.features.dataset import DatasetError, read_dataset


def write_dataset(root: Path, csv_text: str, files: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "label.csv").write_text(csv_text)
    for name in files:
        path = root / "Raw" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    return root


def test_reads_clips_sorted_by_id_with_extra_labels(tmp_path):
    root = write_dataset(
        tmp_path / "d",
        (
            "video_id,clip_id,text,label,mode,label_T,label_A,label_V,annotation\n"
            "vb,2,hello there,0.5,train,0.1,0.2,0.3,Positive\n"
            'va,1,"comma, inside",-1,test,0,0,0,Negative\n'
        ),
        ["vb/2.mp4", "va/1.flv"],
    )
    clips = read_dataset(root)
    assert [clip.id for clip in clips] == ["va$_$1", "vb$_$2"]
    assert clips[0].text == "comma, inside" and clips[0].label == -1.0 and clips[0].mode == "test"
    assert clips[1].extra_labels == {"label_T": 0.1, "label_A": 0.2, "label_V": 0.3}
    assert clips[1].annotation == "Positive" and clips[1].path == root / "Raw" / "vb" / "2.mp4"


def test_every_problem_is_reported_at_once_with_row(tmp_path):
    root = write_dataset(
        tmp_path / "d",
        (
            "video_id,clip_id,text,label,mode\n"
            "v,1,a,0.5,train\n"
            "v,2,b,abc,train\n"  # row 3: non-numeric label
            "v,3,c,,valid\n"  # row 4: missing label
            "v,4,d,1,dev\n"  # row 5: unknown mode
            "v,1,e,1,test\n"  # row 6: duplicate
            "v,5,f,1,test\n"  # row 7: file absent
        ),
        ["v/1.mp4", "v/2.mp4", "v/3.mp4", "v/4.mp4", "v/9.mkv"],
    )
    with pytest.raises(DatasetError) as caught:
        read_dataset(root)
    problems = caught.value.problems
    label_csv = root / "label.csv"
    assert any(f"{label_csv}:3" in p and "'abc'" in p for p in problems)
    assert any(f"{label_csv}:4" in p and "label" in p for p in problems)
    assert any(f"{label_csv}:5" in p and "unknown mode 'dev'" in p for p in problems)
    assert any(f"{label_csv}:6" in p and "duplicate clip v$_$1 (first listed at row 2)" in p for p in problems)
    assert any(f"{label_csv}:7" in p and "no video file" in p for p in problems)
    assert any("9.mkv" in p and "not listed" in p for p in problems)
    assert len(problems) == 6


def test_missing_columns_and_missing_files(tmp_path):
    root = write_dataset(tmp_path / "d", "video_id,clip_id,text\nv,1,a\n", ["v/1.mp4"])
    with pytest.raises(DatasetError, match="missing column\\(s\\) label, mode"):
        read_dataset(root)
    with pytest.raises(DatasetError, match="label.csv: file not found"):
        read_dataset(tmp_path / "absent")


def test_a_label_csv_that_is_not_utf8_is_refused_naming_the_file_and_line(tmp_path):
    root = write_dataset(tmp_path / "d", "", ["v/1.mp4", "v/2.mp4"])
    (root / "label.csv").write_bytes(
        "video_id,clip_id,text,label,mode\nv,1,fine,0.5,train\nv,2,très bien,1,test\n".encode("latin-1")
    )
    with pytest.raises(DatasetError, match=r"label.csv:3: not UTF-8 text \(byte 0xe8 .*save label.csv as UTF-8"):
        read_dataset(root)
    (root / "label.csv").write_bytes(
        "video_id,clip_id,text,label,mode\nv,1,fine,0.5,train\nv,2,très bien,1,test\n".encode("utf-8-sig")
    )
    assert [clip.text for clip in read_dataset(root)] == ["fine", "très bien"]
