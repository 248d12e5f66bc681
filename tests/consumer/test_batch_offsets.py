"""The offsets a batch commits: first and next offset per partition, from runs of one partition."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from consumer.service import ConsumerService


@dataclass
class Record:
    """What _batch_offsets reads of a message (the three accessors of confluent_kafka.Message)."""

    t: str
    p: int
    o: int

    def topic(self) -> str:
        return self.t

    def partition(self) -> int:
        return self.p

    def offset(self) -> int:
        return self.o


def offsets(records: list[Record]) -> tuple[dict[Any, int], dict[Any, int]]:
    return ConsumerService._batch_offsets(records)  # type: ignore[arg-type]


def test_one_partition() -> None:
    first, following = offsets([Record("f", 0, o) for o in range(10, 15)])
    assert first == {("f", 0): 10} and following == {("f", 0): 15}


def test_interleaved_runs_of_several_partitions() -> None:
    batch = [Record("f", 0, 5), Record("f", 0, 6), Record("f", 1, 40), Record("f", 0, 7), Record("f", 1, 41)]
    batch += [Record("g", 1, 3)]
    first, following = offsets(batch)
    assert first == {("f", 0): 5, ("f", 1): 40, ("g", 1): 3}
    assert following == {("f", 0): 8, ("f", 1): 42, ("g", 1): 4}


def test_an_empty_batch() -> None:
    assert offsets([]) == ({}, {})
