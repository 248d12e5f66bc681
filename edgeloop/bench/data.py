"""The benchmark's data: the real pack when present, else a generated one; frames encoded once.

Every measurement of one run reads the same frames: the stream's records, encoded exactly as the
producer encodes them (:func:`encode_frames`), pre-loaded once onto a bench topic.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from edgeloop.datasets import DataPack, default_data_dir, open_dataset, read_labelled, read_master_annotations
from edgeloop.errors import EdgeloopError
from edgeloop.frames import SCHEMA_VERSION
from producer.replay import FORWARDED_FIELDS

log = logging.getLogger(__name__)


class BenchError(EdgeloopError):
    """The benchmark could not run a measurement (missing data, a service that failed, a time-out)."""


@dataclass
class BenchData:
    """A data pack in memory: the stream's records and arrays, training, golden and master labels."""

    pack: DataPack
    real: bool
    stream_records: list[dict[str, Any]]
    stream_kps: np.ndarray
    stream_gt: np.ndarray
    stream_ids: np.ndarray
    train_kps: np.ndarray
    train_gt: np.ndarray
    golden_kps: np.ndarray
    golden_gt: np.ndarray
    master: dict[int, int]

    @property
    def description(self) -> str:
        kind = "real pack" if self.real else "synthetic pack (generated; says nothing about real accuracy)"
        return (
            f"{kind} {self.pack.root}: {len(self.train_gt)} training, {len(self.stream_ids)} stream, "
            f"{len(self.golden_gt)} golden frames"
        )

    @classmethod
    def load(cls, data_dir: Path | None, scratch: Path, synthetic_stream: int = 20_000) -> BenchData:
        """The pack in ``data_dir`` (default: ``$EDGELOOP_DATA_DIR`` or ``../shared/datasets/orientation``).

        Without one, a synthetic pack with ``synthetic_stream`` stream frames is written to ``scratch``.
        """
        root = data_dir or default_data_dir()
        if root is not None and Path(root).is_dir():
            pack, real = DataPack.from_dir(root), True
        else:
            if data_dir is not None:
                raise BenchError(f"--data-dir {data_dir} is not a directory")
            from edgeloop.synthetic import synthetic_pack

            log.warning("no data pack found (set EDGELOOP_DATA_DIR): generating a synthetic one")
            pack, real = synthetic_pack(scratch / "synthetic-pack", seed=7, stream=synthetic_stream), False
        started = time.perf_counter()
        records = list(open_dataset(pack.stream))
        train_kps, train_gt, _ = read_labelled(pack.training)
        golden_kps, golden_gt, _ = read_labelled(pack.golden)
        master = read_master_annotations(pack.master)
        kps = np.asarray([r["kps"] for r in records], dtype=np.float64)
        ids = np.fromiter((r["id"] for r in records), dtype=np.int64, count=len(records))
        gt = np.fromiter((master.get(int(i), r.get("gt", -1)) for i, r in zip(ids, records, strict=True)), np.int64)
        log.info("loaded %s in %.1f s", pack.root, time.perf_counter() - started)
        return cls(pack, real, records, kps, gt, ids, train_kps, train_gt, golden_kps, golden_gt, master)


def encode_frames(records: list[dict[str, Any]], n: int) -> tuple[list[bytes], list[bytes]]:
    """``n`` frame messages (values, keys) as :func:`producer.replay.replay` encodes them.

    The stream is repeated when ``n`` exceeds it; ``seq`` counts on; ``ts`` is the encoding time.
    """
    if not records:
        raise BenchError("the stream is empty: nothing to benchmark")
    values: list[bytes] = []
    keys: list[bytes] = []
    ts = int(time.time() * 1000)
    for seq in range(n):
        record = records[seq % len(records)]
        message: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "id": record["id"],
            "seq": seq,
            "kps": record["kps"],
            "ts": ts,
        }
        for name in FORWARDED_FIELDS:
            if name in record:
                message[name] = record[name]
        values.append(orjson.dumps(message))
        keys.append(str(record.get("sequence", "unsequenced")).encode())
    return values, keys


def write_reference_file(path: Path, kps: np.ndarray, gt: np.ndarray, id_start: int = 9_000_000_000) -> Path:
    """A labelled JSON list (``id, kps, gt``) the consumer can take as ``--training-data``."""
    rows = [
        {"id": id_start + i, "kps": k, "gt": int(g)}
        for i, (k, g) in enumerate(zip(kps.tolist(), gt.tolist(), strict=True))
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps(rows))
    os.replace(tmp, path)
    return path


def scaling_reference(data: BenchData, points: int, seed: int = 11) -> tuple[np.ndarray, np.ndarray]:
    """Reference frames for the scaling runs: training + golden + synthetic poses, ``points`` in all.

    The training pack has 1,000 frames, too few for 10,000 micro-clusters; the golden set and
    generated poses of every class fill it up. The same frames serve every cluster budget, so only the
    budget changes between the runs.
    """
    from edgeloop.synthetic import generate_poses

    kps = np.concatenate([data.train_kps, data.golden_kps])[:points]
    gt = np.concatenate([data.train_gt, data.golden_gt])[:points]
    missing = points - len(kps)
    if missing > 0:
        poses = generate_poses(missing, seed=seed)
        kps = np.concatenate([kps, poses["kps"]])
        gt = np.concatenate([gt, poses["gt"]])
    return kps, gt
