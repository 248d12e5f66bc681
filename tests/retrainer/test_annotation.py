"""Label sources: the in-memory label book, the master file (re-read when it grows), labels-topic messages."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import orjson
import pytest

from retrainer.annotation import UNLABELLED, LabelBook, MasterFileAnnotator, decode_label_messages
from retrainer.errors import AnnotationError


def test_label_book_lookup_is_vectorised_and_keeps_the_first_label() -> None:
    book = LabelBook()
    assert book.add(np.array([10, 3, 7]), np.array([1, 0, 1])) == 3
    assert book.add(np.array([3, 11]), np.array([1, 0])) == 1  # 3 keeps its first label
    assert book.lookup(np.array([3, 4, 10, 11, 7])).tolist() == [0, UNLABELLED, 1, 0, 1]
    with pytest.raises(AnnotationError, match=r"0 \(vertical\) or 1"):
        book.add(np.array([1]), np.array([2]))


def write_master(path: Path, labels: dict[int, int]) -> None:
    path.write_text(json.dumps([{"id": i, "gt": g} for i, g in labels.items()]))


def test_master_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "master.json"
    write_master(path, {1: 0, 2: 1})
    annotator = MasterFileAnnotator(path)
    assert annotator.lookup(np.array([1, 2, 3])).tolist() == [0, 1, UNLABELLED]
    assert annotator.refresh() is False  # unchanged
    write_master(path, {1: 0, 2: 1, 3: 1})
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    assert annotator.refresh() is True
    assert annotator.lookup(np.array([3])).tolist() == [1]


def test_master_file_that_breaks_later_keeps_the_labels_read_before(tmp_path: Path) -> None:
    path = tmp_path / "master.json"
    write_master(path, {5: 1})
    annotator = MasterFileAnnotator(path)
    path.write_text('[{"id": 5, "gt": "maybe"}]  ')
    assert annotator.refresh() is False
    assert annotator.lookup(np.array([5])).tolist() == [1]


def test_missing_master_file_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match="--master-annotations"):
        MasterFileAnnotator(tmp_path / "absent.json")


def test_label_messages_bad_input_is_data_not_an_exception() -> None:
    values = [
        orjson.dumps({"id": 1, "gt": 1}),
        orjson.dumps([{"id": 2, "gt": 0}, {"id": 3, "gt": 1}]),
        b"not json",
        orjson.dumps({"id": "4", "gt": 1}),
        orjson.dumps({"id": 5, "gt": 3}),
        None,
    ]
    ids, gts, errors = decode_label_messages(values)
    assert ids.tolist() == [1, 2, 3]
    assert gts.tolist() == [1, 0, 1]
    assert len(errors) == 4
