"""The frame schema: round trip, and one precise error per kind of bad input."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from edgeloop.frames import (
    N_COORDS,
    FrameError,
    FrameLimits,
    decode_batch,
    decode_frame,
    encode_frame,
)


def good_frame(**extra: object) -> dict[str, object]:
    return {"id": 7, "kps": [float(i) for i in range(N_COORDS)], "ts": 1_700_000_000_000, **extra}


def test_round_trip_adds_schema_and_keeps_unknown_fields() -> None:
    frame = good_frame(sequence="video-3", camera={"zoom": 2})
    decoded = decode_frame(encode_frame(frame))
    assert decoded["schema"] == 1
    assert decoded["camera"] == {"zoom": 2}
    assert decoded["kps"] == frame["kps"]
    assert "schema" not in frame  # input not mutated


BAD_INPUTS = [
    (b"", "empty"),
    (b"x" * 70_000, "oversized"),
    (b"{not json", "not_json"),
    (b"[1, 2, 3]", "not_object"),
    (b'"frame"', "not_object"),
    (orjson.dumps({"kps": [0.0] * 34}), "missing_id"),
    (orjson.dumps({"id": -1, "kps": [0.0] * 34}), "bad_id"),
    (orjson.dumps({"id": "12", "kps": [0.0] * 34}), "bad_id"),
    (orjson.dumps({"id": True, "kps": [0.0] * 34}), "bad_id"),
    (orjson.dumps({"id": 1.5, "kps": [0.0] * 34}), "bad_id"),
    (b'{"id": 100000000000000000000000, "kps": []}', "bad_id"),  # parsed as a float by orjson
    (orjson.dumps({"id": 2**63, "kps": [0.0] * 34}), "bad_id"),
    (orjson.dumps({"id": 1}), "missing_kps"),
    (orjson.dumps({"id": 1, "kps": [0.0] * 33}), "bad_kps_length"),
    (orjson.dumps({"id": 1, "kps": "0,0"}), "bad_kps_length"),
    (orjson.dumps({"id": 1, "kps": [0.0] * 33 + ["1"]}), "non_numeric"),
    (orjson.dumps({"id": 1, "kps": [0.0] * 33 + [None]}), "non_numeric"),
    (orjson.dumps({"id": 1, "kps": [0.0] * 33 + [True]}), "non_numeric"),
    (b'{"id": 1, "kps": [' + b"0.0," * 33 + b"NaN]}", "not_json"),  # JSON has no NaN literal
    (orjson.dumps({"id": 1, "kps": [0.0] * 34, "ts": -5}), "bad_ts"),
    (orjson.dumps({"id": 1, "kps": [0.0] * 34, "ts": "now"}), "bad_ts"),
    (orjson.dumps({"id": 1, "kps": [0.0] * 34, "scores": [1.0] * 3}), "bad_scores"),
    (orjson.dumps({"id": 1, "kps": [0.0] * 34, "schema": 2}), "unsupported_schema"),
    (orjson.dumps({"id": 1, "kps": [0.0] * 34, **{f"f{i}": i for i in range(40)}}), "too_many_fields"),
]


@pytest.mark.parametrize(("raw", "reason"), BAD_INPUTS, ids=[r for _, r in BAD_INPUTS])
def test_bad_input_gives_precise_error(raw: bytes, reason: str) -> None:
    with pytest.raises(FrameError) as info:
        decode_frame(raw)
    assert info.value.reason == reason
    assert str(info.value)  # a message a person can read


def test_error_message_names_the_culprit() -> None:
    with pytest.raises(FrameError, match=r"'kps'\[33\] is not a number: '1'"):
        decode_frame(orjson.dumps({"id": 1, "kps": [0.0] * 33 + ["1"]}))
    with pytest.raises(FrameError, match="must have 34 numbers, got 33"):
        decode_frame(orjson.dumps({"id": 1, "kps": [0.0] * 33}))


def test_non_finite_values_are_refused() -> None:
    # orjson never produces inf from JSON text, but a frame built in Python can carry one.
    from edgeloop.frames import validate_frame

    with pytest.raises(FrameError) as info:
        validate_frame({"id": 1, "kps": [0.0] * 33 + [float("inf")]})
    assert info.value.reason == "non_finite"


def test_limits_are_configurable() -> None:
    raw = encode_frame(good_frame(note="x" * 500))
    assert decode_frame(raw)["note"]
    with pytest.raises(FrameError) as info:
        decode_frame(raw, FrameLimits(max_message_bytes=200))
    assert info.value.reason == "oversized"


def test_decode_batch_splits_good_and_bad_in_order() -> None:
    raws = [
        encode_frame(good_frame(id=1)),
        b"garbage",
        encode_frame(good_frame(id=2)),
        None,
        orjson.dumps({"id": 3, "kps": [1.0] * 30}),
        encode_frame(good_frame(id=4)),
    ]
    batch, errors = decode_batch(raws)
    assert batch.ids.tolist() == [1, 2, 4]
    assert batch.positions == [0, 2, 5]
    assert batch.kps.shape == (3, N_COORDS)
    reasons = [(pos, err.reason) for pos, err in errors]
    assert reasons == [(1, "not_json"), (3, "empty"), (4, "bad_kps_length")]


def test_decode_batch_of_nothing() -> None:
    batch, errors = decode_batch([])
    assert len(batch) == 0 and batch.kps.shape == (0, N_COORDS) and errors == []


@pytest.mark.parametrize(("raw", "reason"), BAD_INPUTS, ids=[r for _, r in BAD_INPUTS])
def test_the_batch_fast_path_refuses_what_the_validator_refuses(raw: bytes, reason: str) -> None:
    # decode_batch type-checks in C (msgspec) and falls back to decode_frame to name the problem.
    batch, errors = decode_batch([encode_frame(good_frame(id=1)), raw, encode_frame(good_frame(id=2))])
    assert batch.ids.tolist() == [1, 2]
    assert [(pos, err.reason) for pos, err in errors] == [(1, reason)]


def test_the_batch_keeps_every_field_and_the_hot_path_arrays() -> None:
    frames = [good_frame(id=i, seq=10 + i, camera={"zoom": i}, scores=[0.5] * 17) for i in range(3)]
    frames[1].pop("ts")
    batch, errors = decode_batch([encode_frame(f) for f in frames])
    assert errors == []
    assert batch.seqs == [10, 11, 12]
    assert batch.ts_ms.tolist() == [1_700_000_000_000, -1, 1_700_000_000_000]
    assert np.array_equal(batch.kps, np.asarray([f["kps"] for f in frames], dtype=np.float64))
    assert batch.record(2)["camera"] == {"zoom": 2} and batch.records[1]["schema"] == 1


def test_frames_the_fast_path_cannot_judge_still_pass_when_valid() -> None:
    # Many string values with '":' inside look like many keys to the pre-check: the slow path decides.
    frame = good_frame(id=9, **{f"note{i}": 'a":b' for i in range(20)})
    batch, errors = decode_batch([encode_frame(frame)])
    assert errors == [] and batch.ids.tolist() == [9]


def test_colons_inside_values_do_not_refuse_a_frame_and_real_extra_fields_still_do() -> None:
    # The pre-check counts single colons first (faster); a timestamp-like string has many of them.
    stamped = good_frame(
        id=3,
        source="cam:01:02:03:04:05:06:07:08:09:10:11:12:13:14:15:16:17:18:19:20:21:22:23:24:25:26:27:28:29:30:31:32:33:34:35",
    )
    too_many = good_frame(id=4, **{f"x{i}": i for i in range(33)})
    batch, errors = decode_batch([encode_frame(stamped), encode_frame(too_many)])
    assert batch.ids.tolist() == [3]
    assert [(pos, err.reason) for pos, err in errors] == [(1, "too_many_fields")]
