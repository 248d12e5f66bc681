"""Run the real consumer with one deterministic kill point: ``python -m tests.faults.crashpoint``.

``--point commit`` SIGKILLs the process inside the batch loop right before it commits the offsets of the
``--after``-th batch that published edge cases (outputs acknowledged, decision log written, offsets not
committed: the worst moment for duplicates). ``--point settle`` kills it right after the batch's edge
cases were handed to the producer and before they are flushed (or, with ``--exactly-once``, before the
transaction commits). Everything else is the unmodified service; the kill is a real SIGKILL, so no
``finally`` runs, nothing is flushed and the group only notices at the session timeout.

Before dying it writes ``--marker`` (JSON: point, batch, pid) so the test knows where the kill happened.

``--point stall`` kills nothing: it holds the ``--after``-th batch of frames for ``--stall-s`` seconds
before deciding it (processing slower than ``max.poll.interval.ms``, test 7). Its marker, written when the
stall starts, adds the batch's first offsets per partition and the wall-clock ``started``/``until``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from typing import Any

import orjson

from consumer import service


def install(point: str, after: int, marker: str, stall_s: float = 0.0) -> None:
    cls = service.ConsumerService
    publish, settle, commit, process = cls._publish_edge_cases, cls._settle, cls._commit_pending, cls.process
    state = {"published": False, "in_settle": False, "hits": 0, "frame_batches": 0}

    def die(self: Any) -> None:
        state["hits"] += 1
        if state["hits"] < after:
            return
        with open(marker, "wb") as out:
            out.write(orjson.dumps({"point": point, "batch": self.stats.batches + 1, "pid": os.getpid()}))
        if self._decision_log is not None:
            self._decision_log.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    def stall(msgs: Any) -> None:
        frames = [m for m in msgs if m.error() is None]
        if not frames:
            return
        state["frame_batches"] += 1
        if state["frame_batches"] != after:
            return
        first: dict[str, int] = {}
        for m in frames:
            first[str(m.partition())] = min(first.get(str(m.partition()), m.offset()), m.offset())
        now = time.time()
        with open(marker, "wb") as out:
            out.write(orjson.dumps({"point": point, "batch": after, "pid": os.getpid(), "first_offsets": first,
                                    "size": len(frames), "started": now, "until": now + stall_s}))  # fmt: skip
        time.sleep(stall_s)

    def process_(self: Any, msgs: Any) -> None:
        state["published"] = False
        if point == "stall":
            stall(msgs)
        process(self, msgs)

    def publish_(self: Any, *args: Any) -> None:
        publish(self, *args)
        state["published"] = True

    def settle_(self: Any, *args: Any) -> None:
        if point == "settle" and state["published"]:
            die(self)
        state["in_settle"] = True
        try:
            settle(self, *args)
        finally:
            state["in_settle"] = False

    def commit_(self: Any, *args: Any) -> None:
        if point == "commit" and state["in_settle"] and state["published"] and self._pending:
            die(self)
        commit(self, *args)

    cls.process = process_  # type: ignore[method-assign]
    cls._publish_edge_cases = publish_  # type: ignore[method-assign]
    cls._settle = settle_  # type: ignore[method-assign]
    cls._commit_pending = commit_  # type: ignore[method-assign]


def main() -> int:
    parser = argparse.ArgumentParser(prog="crashpoint")
    parser.add_argument("--point", choices=("commit", "settle", "stall"), required=True)
    parser.add_argument("--after", type=int, default=1, help="the n-th batch with edge cases (stall: with frames)")
    parser.add_argument("--marker", required=True)
    parser.add_argument("--stall-s", type=float, default=0.0, help="how long --point stall holds the batch")
    parser.add_argument("consumer_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    install(args.point, args.after, args.marker, args.stall_s)
    from consumer.__main__ import main as consumer_main

    rest = args.consumer_args[1:] if args.consumer_args[:1] == ["--"] else args.consumer_args
    return consumer_main(rest)


if __name__ == "__main__":
    sys.exit(main())
