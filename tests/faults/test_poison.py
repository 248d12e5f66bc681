"""Test 5: poison frames at known offsets go to the DLQ exactly once each; every good frame is decided."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from edgeloop.datasets import DataPack, open_dataset
from tests.faults.ledger import ConsumerRun, Processes, expected_flags, read_decisions, read_topic, wait_committed
from tests.kafka_helpers import produce

GOOD_FRAMES = 600
KPS = [100.0 + i for i in range(34)]
KPS_JSON = orjson.dumps(KPS).decode()
# (payload, error.reason header expected on the dead letter)
POISON: list[tuple[bytes, str]] = [
    (b"this is not json {", "not_json"),
    (orjson.dumps({"id": 11, "kps": [1.0] * 10}), "bad_kps_length"),
    (b'{"id": 12, "kps": [NaN' + b", 1.0" * 33 + b"]}", "not_json"),
    (b'{"id": 13, "kps": [Infinity' + b", 1.0" * 33 + b"]}", "not_json"),
    (b"", "empty"),
    (orjson.dumps({"id": 14, "kps": KPS, "pad": "x" * 70_000}), "oversized"),
    (orjson.dumps({"id": "fourteen", "kps": KPS}), "bad_id"),
    (orjson.dumps({"id": 15, "kps": ["a"] * 34}), "non_numeric"),
    (orjson.dumps({"id": 16, "kps": KPS, "ts": "yesterday"}), "bad_ts"),
    (f'{{"id": {2**70}, "kps": {KPS_JSON}}}'.encode(), "bad_id"),
    (orjson.dumps({"id": 17, "kps": KPS, **{f"f{i}": i for i in range(40)}}), "too_many_fields"),
    (b"[1, 2, 3]", "not_object"),
    (orjson.dumps({"kps": KPS}), "missing_id"),
    (orjson.dumps({"id": 18}), "missing_kps"),
    (orjson.dumps({"id": 19, "kps": KPS, "schema": 99}), "unsupported_schema"),
]


@pytest.mark.timeout(180)
def test_poison_frames_each_once_on_the_dlq(
    make_run: Callable[..., ConsumerRun], procs: Processes, fault_pack: DataPack, kafka_config: dict[str, Any]
) -> None:
    run = make_run(partitions=1, batch_size=64)
    good = [
        orjson.dumps({"schema": 1, "id": r["id"], "seq": i, "kps": r["kps"], "ts": 0})
        for i, r in zip(range(GOOD_FRAMES), open_dataset(fault_pack.stream), strict=False)
    ]
    # Poison spread over the stream (several per batch, some at batch edges), at known offsets.
    every = GOOD_FRAMES // len(POISON)
    values: list[bytes] = []
    poison_at: dict[int, str] = {}
    for i, frame in enumerate(good):
        if i % every == 0 and len(poison_at) < len(POISON):
            payload, reason = POISON[len(poison_at)]
            poison_at[len(values)] = reason
            values.append(payload)
        values.append(frame)
    produce(kafka_config, run.topic, values, partition=0)
    good_at = {o: orjson.loads(v) for o, v in enumerate(values) if o not in poison_at}

    consumer = procs.start("consumer", run.argv())
    wait_committed(kafka_config, run.group, run.topic, timeout=120, procs=[consumer])
    assert consumer.alive(), "the consumer died on poison"
    consumer.signal(signal.SIGTERM)
    assert consumer.wait(30) == 0, consumer.output()[-3000:]

    dead = read_topic(kafka_config, run.dlq_topic)
    origins = []
    for m in dead:
        headers = {k: v.decode() for k, v in (m.headers() or [])}
        assert headers["source.topic"] == run.topic and headers["source.partition"] == "0"
        offset = int(headers["source.offset"])
        origins.append(offset)
        assert headers["error.reason"] == poison_at.get(offset), (offset, headers)
        assert headers["error.message"], "a dead letter must say what was wrong"
        assert (m.value() or b"") == values[offset], "the dead letter carries the original bytes"
    assert sorted(origins) == sorted(poison_at), f"DLQ origins {sorted(origins)} != poison offsets {sorted(poison_at)}"

    decisions = read_decisions(run.decision_log)
    decided = [d["offset"] for d in decisions]
    assert sorted(decided) == sorted(good_at), "every good frame decided exactly once, no poison decided"
    # The clustering is unaffected by the poison: each good frame flagged as a clean in-process run flags it.
    expected = expected_flags(run, {(0, o): f for o, f in good_at.items()})
    assert all(d["flagged"] == expected[(0, d["offset"])] for d in decisions)
    assert all(d["id"] == good_at[d["offset"]]["id"] for d in decisions)
    print(f"test5: {len(poison_at)} poison frames -> {len(dead)} dead letters; {len(decisions)} good decided")
