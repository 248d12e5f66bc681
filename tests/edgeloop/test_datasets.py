"""Readers of edgeloop.datasets on files the tests write, plus the real pack when it is present."""

from __future__ import annotations

import gzip
import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from edgeloop.datasets import (
    GOLDEN_FILE,
    MASTER_FILE,
    STREAM_FILE,
    TRAINING_FILE,
    DataPack,
    DatasetError,
    default_data_dir,
    detect_format,
    iter_json_list,
    open_dataset,
    read_labelled,
    read_master_annotations,
)
from edgeloop.errors import EdgeloopError


def frame(i: int, gt: int = 0, **extra: Any) -> dict[str, Any]:
    return {"id": i, "kps": [float(i + k) for k in range(34)], "gt": gt, **extra}


# Records whose strings hold every character that could fool a bracket counter.
TRICKY = [
    frame(1, 1, source='a "quoted" [list] {obj}', sequence="back\\slash\\"),
    frame(2, 0, note='\\"}]', nested={"a": [1, {"b": "]}"}], "c": []}, empty={}),
    frame(3, 1, unicode="déjà vu ✓ 🤸", escapes='\u0000\t\n"\\/', klass='x\\\\"{'),
    {"id": 4, "kps": [0.0] * 34, "gt": 0, "scores": None, "deep": [[[[{"k": "[["}]]]]},
]


def write_list(path: Path, records: list[dict[str, Any]], *, indent: int | None = None) -> Path:
    path.write_text(json.dumps(records, indent=indent, ensure_ascii=False), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------ JSON list


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 16, 64, 1 << 20])
@pytest.mark.parametrize("indent", [None, 2])
def test_json_list_round_trips_tricky_strings_at_any_chunk_size(tmp_path: Path, chunk: int, indent: int | None) -> None:
    path = write_list(tmp_path / "tricky.json", TRICKY, indent=indent)
    assert list(open_dataset(path, chunk_bytes=chunk)) == TRICKY


def test_json_list_record_much_longer_than_the_chunk(tmp_path: Path) -> None:
    records = [frame(i, blob="x" * 5000 + "]}" * 300) for i in range(5)]
    path = write_list(tmp_path / "long.json", records)
    assert list(iter_json_list(path, chunk_bytes=8)) == records


def test_json_list_matches_a_whole_file_parse_on_many_records(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    records = [
        {"id": i, "kps": np.round(rng.uniform(0, 1280, 34), 2).tolist(), "gt": int(i % 2), "sequence": f"s{i // 7}"}
        for i in range(2000)
    ]
    path = tmp_path / "many.json"
    path.write_bytes(orjson.dumps(records))
    assert list(open_dataset(path, chunk_bytes=4096)) == orjson.loads(path.read_bytes())


@pytest.mark.parametrize("text", ["[]", "  \n[ \n ]\n\n", "\ufeff[]"])
def test_json_list_empty(tmp_path: Path, text: str) -> None:
    path = tmp_path / "empty.json"
    path.write_text(text, encoding="utf-8")
    assert list(open_dataset(path, chunk_bytes=1)) == []


def test_json_list_with_bom_and_gzip(tmp_path: Path) -> None:
    raw = "\ufeff".encode() + json.dumps(TRICKY).encode()
    plain, packed = tmp_path / "bom.json", tmp_path / "bom.json.gz"
    plain.write_bytes(raw)
    packed.write_bytes(gzip.compress(raw))
    assert list(open_dataset(plain, chunk_bytes=3)) == TRICKY
    assert list(open_dataset(packed, chunk_bytes=3)) == TRICKY


def test_json_list_yields_records_before_the_file_is_complete(tmp_path: Path) -> None:
    """Through a named pipe: record 1 must arrive while the writer still holds the rest back."""
    fifo = tmp_path / "frames.pipe"
    os.mkfifo(fifo)
    first_seen = threading.Event()
    waited_in_vain: list[bool] = []

    def writer() -> None:
        with open(fifo, "wb") as f:
            f.write(b'[{"id": 1, "kps": [], "s": "[{"}, ')
            f.flush()
            waited_in_vain.append(not first_seen.wait(timeout=20))
            f.write(b'{"id": 2, "kps": []}]')

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    records = open_dataset(fifo, "json_list")
    assert next(records)["id"] == 1
    first_seen.set()
    assert [r["id"] for r in records] == [2]
    thread.join(timeout=5)
    assert waited_in_vain == [False]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('[{"id": 1}, {"id": 2},]', "before the closing ']'"),
        ('[{"id": 1} {"id": 2}]', "record 2"),
        ('[{"id": 1}, 5, {"id": 3}]', "record 2"),
        ('[{"id": 1}, [1, 2]]', "record 2 (byte 12) is an array"),
        ('[{"id": 1}, {"id": tru}]', "record 2 (byte 12) is not valid JSON"),
        ('[{"id": 1}, {"id": 2}', "truncated: the file ends after record 2"),
        ('[{"id": 1}, {"id": "2', "truncated: the file ends inside record 2"),
        ('[{"id": 1}] {"id": 2}', "after the closing ']'"),
        ('[{"id": 1}]]', "after the closing ']'"),
        ('{"id": 1}', "is not a JSON list"),
        ("   ", "empty"),
        ("[1, 2]", "before the closing ']'"),
        ('[{"id": 1}}', "closed by '}' at byte 10"),
    ],
)
def test_json_list_malformed(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    for chunk in (1, 4, 1 << 20):
        with pytest.raises(DatasetError) as info:
            list(iter_json_list(path, chunk_bytes=chunk))
        assert fragment in str(info.value)
        assert str(path) in str(info.value)


def test_json_list_error_comes_after_the_good_records(tmp_path: Path) -> None:
    path = tmp_path / "bad3.json"
    path.write_text('[{"id": 1}, {"id": 2}, {"id": }]')
    records = iter_json_list(path, chunk_bytes=2)
    assert [next(records)["id"], next(records)["id"]] == [1, 2]
    with pytest.raises(DatasetError, match="record 3"):
        next(records)


# ------------------------------------------------------------------------------------------ JSON Lines


def test_json_lines_skips_blank_lines_and_keeps_every_field(tmp_path: Path) -> None:
    path = tmp_path / "frames.jsonl"
    lines = [json.dumps(r) for r in TRICKY]
    path.write_bytes(("\n\n" + lines[0] + "\r\n   \n" + "\n".join(lines[1:])).encode())  # no final newline
    assert list(open_dataset(path)) == TRICKY


def test_json_lines_detected_from_content_without_the_extension(tmp_path: Path) -> None:
    path = tmp_path / "frames.json"
    path.write_text("\n".join(json.dumps(r) for r in TRICKY) + "\n")
    assert detect_format(path) == "jsonl"
    assert list(open_dataset(path)) == TRICKY


@pytest.mark.parametrize(
    ("line", "fragment"), [('{"id": 2,', "line 3 is not valid JSON"), ("[1]", "line 3 is a JSON list")]
)
def test_json_lines_malformed_line_is_named(tmp_path: Path, line: str, fragment: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": 1}\n\n' + line + "\n")
    records = open_dataset(path)
    assert next(records) == {"id": 1}
    with pytest.raises(DatasetError, match=fragment):
        next(records)


# ------------------------------------------------------------------------------------------------ COCO


def coco_document() -> dict[str, Any]:
    full = [v for k in range(17) for v in (10.0 + k, 20.0 + k, 2)]
    partial = [v for k in range(17) for v in ((30.0 + k, 40.0 + k, 1) if k % 2 else (0, 0, 0))]
    return {
        "images": [
            {"id": 7, "file_name": "000007.jpg", "width": 640, "height": 480},
            {"id": 8, "file_name": "000008.jpg", "width": 320, "height": 240},
        ],
        "annotations": [
            {"id": 101, "image_id": 7, "category_id": 1, "keypoints": full, "num_keypoints": 17},
            {"id": 102, "image_id": 7, "category_id": 1, "keypoints": partial, "num_keypoints": 8},
            {"id": 103, "image_id": 8, "category_id": 1, "keypoints": [0] * 51, "num_keypoints": 0},
            {"id": 104, "image_id": 9, "category_id": 1, "keypoints": full, "num_keypoints": 17},
        ],
        "categories": [{"id": 1, "name": "person", "keypoints": [], "skeleton": []}],
    }


def test_coco_frames(tmp_path: Path) -> None:
    path = tmp_path / "person_keypoints.json"
    path.write_text(json.dumps(coco_document()))
    assert detect_format(path) == "coco"
    frames = list(open_dataset(path))
    # 103 has no labelled keypoint and is skipped.
    assert [f["id"] for f in frames] == [101, 102, 104]
    first, second, orphan = frames
    assert first["kps"][:4] == [10.0, 20.0, 11.0, 21.0]
    assert first["scores"] == [1.0] * 17
    assert first["sequence"] == "000007.jpg" and first["frame_idx"] == 0 and first["frame_wh"] == [640, 480]
    assert first["source"] == "coco" and first["class"] == "person" and first["image_id"] == 7
    kps = np.array(second["kps"]).reshape(17, 2)
    missing = np.arange(17) % 2 == 0
    assert (kps[missing] == 0).all() and (kps[~missing] > 0).all()
    assert np.array_equal(np.array(second["scores"]), np.where(missing, 0.0, 0.5))
    assert second["frame_idx"] == 1
    assert orphan["sequence"] == "coco/9" and "frame_wh" not in orphan


def test_coco_bad_keypoints_are_named(tmp_path: Path) -> None:
    doc = coco_document()
    doc["annotations"][1]["keypoints"] = [1, 2, 2]
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=r"annotation 2 \(id 102\) needs 'keypoints' with 51 numbers"):
        list(open_dataset(path, "coco"))


# ------------------------------------------------------------------------------------ detection, errors


def test_missing_file_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        list(open_dataset(tmp_path / "nope.json"))
    with pytest.raises(DatasetError, match="is a directory"):
        list(open_dataset(tmp_path, "jsonl"))
    path = write_list(tmp_path / "ok.json", TRICKY)
    with pytest.raises(DatasetError, match="unknown data format 'csv'"):
        open_dataset(path, "csv")
    text = tmp_path / "frames.csv"
    text.write_text("id,kps\n1,2\n")
    with pytest.raises(DatasetError, match="cannot tell the format"):
        list(open_dataset(text))
    assert issubclass(DatasetError, EdgeloopError)


def test_format_aliases_and_extensions(tmp_path: Path) -> None:
    path = write_list(tmp_path / "x.json", TRICKY)
    assert detect_format(path) == "json_list"
    assert list(open_dataset(path, "uptrain")) == TRICKY
    lines = tmp_path / "x.ndjson"
    lines.write_text(json.dumps(TRICKY[0]) + "\n")
    assert detect_format(lines) == "jsonl"


# ------------------------------------------------------------------------------------------ as arrays


def test_read_labelled_arrays(tmp_path: Path) -> None:
    records = [frame(10 + i, gt=i % 2) for i in range(5)]
    for path in (write_list(tmp_path / "l.json", records), tmp_path / "l.jsonl"):
        if path.suffix == ".jsonl":
            path.write_text("\n".join(json.dumps(r) for r in records))
        kps, gt, ids = read_labelled(path)
        assert kps.dtype == np.float64 and kps.shape == (5, 34)
        assert gt.dtype == np.int64 and ids.dtype == np.int64
        assert np.array_equal(kps, np.array([r["kps"] for r in records]))
        assert gt.tolist() == [0, 1, 0, 1, 0] and ids.tolist() == [10, 11, 12, 13, 14]


def test_read_labelled_empty_file(tmp_path: Path) -> None:
    kps, gt, ids = read_labelled(write_list(tmp_path / "e.json", []))
    assert kps.shape == (0, 34) and gt.shape == (0,) and ids.shape == (0,)


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ({"id": 3, "kps": [1.0] * 34}, "record 3 has no 'gt'"),
        ({"id": 3, "kps": [1.0] * 33, "gt": 0}, "record 3 needs 'kps' with 34 numbers"),
        ({"id": 3, "kps": ["a"] * 34, "gt": 0}, "record 3 needs 'kps' with 34 numbers"),
        ({"id": 3, "kps": [1.0] * 34, "gt": 2}, "record 3 has gt 2"),
        ({"id": "3", "kps": [1.0] * 34, "gt": 0}, "record 3 has id '3'"),
    ],
)
def test_read_labelled_names_the_bad_record(tmp_path: Path, bad: dict[str, Any], fragment: str) -> None:
    path = write_list(tmp_path / "bad.json", [frame(1), frame(2), bad, frame(4)])
    with pytest.raises(DatasetError, match=fragment):
        read_labelled(path)


def test_master_annotations(tmp_path: Path) -> None:
    labels = [{"id": 5, "gt": 1}, {"id": 6, "gt": 0}, {"id": 5, "gt": 1}]
    path = write_list(tmp_path / MASTER_FILE, labels)
    assert read_master_annotations(path) == {5: 1, 6: 0}
    lines = tmp_path / "master.jsonl"
    lines.write_text("\n".join(json.dumps(r) for r in labels))
    assert read_master_annotations(lines) == {5: 1, 6: 0}
    write_list(path, [*labels, {"id": 6, "gt": 1}])
    with pytest.raises(DatasetError, match="id 6 is annotated both 0 and 1"):
        read_master_annotations(path)
    write_list(path, [{"id": 1, "gt": "yes"}])
    with pytest.raises(DatasetError, match="record 1 needs an integer 'id' and 'gt' 0 or 1"):
        read_master_annotations(path)


def test_data_pack_names_the_missing_files(tmp_path: Path) -> None:
    write_list(tmp_path / TRAINING_FILE, [])
    with pytest.raises(DatasetError) as info:
        DataPack.from_dir(tmp_path)
    for name in (STREAM_FILE, GOLDEN_FILE, MASTER_FILE):
        assert name in str(info.value)
    assert TRAINING_FILE not in str(info.value).split("not a data pack:")[1].split("missing")[0]


# ---------------------------------------------------------------------------------------- real data

REAL_DIR = default_data_dir()


@pytest.mark.realdata
@pytest.mark.skipif(
    REAL_DIR is None or not (REAL_DIR / STREAM_FILE).is_file(), reason="../shared/datasets/orientation absent"
)
def test_real_pack_counts() -> None:
    assert REAL_DIR is not None
    pack = DataPack.from_dir(REAL_DIR)
    stream = list(open_dataset(pack.stream))
    assert len(stream) == 35888
    assert stream == orjson.loads(pack.stream.read_bytes())
    gt = np.array([r["gt"] for r in stream])
    assert int((gt == 0).sum()) == 9486 and int((gt == 1).sum()) == 26402
    master = read_master_annotations(pack.master)
    assert master == {r["id"]: r["gt"] for r in stream}
    _, golden_gt, _ = read_labelled(pack.golden)
    assert np.bincount(golden_gt).tolist() == [2707, 6375]
    kps, train_gt, ids = read_labelled(pack.training)
    assert kps.shape == (1000, 34) and np.bincount(train_gt).tolist() == [606, 394]
    assert len(np.unique(ids)) == 998  # the pack's README: 2 ids are used twice
