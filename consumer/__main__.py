"""``python -m consumer``: the monitor service."""
# ruff: noqa: E402 - the thread settings below must precede the imports that load numpy and torch

from __future__ import annotations

import os

# One consumer process uses one core: scaling is by processes in the group. Multi-threaded BLAS on the
# small per-batch matrices only adds contention (measured 10-50x slower scoring on a loaded 2-core
# machine). Set before numpy/torch load; an explicit setting in the environment wins.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import logging
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from consumer.settings import ConsumerSettings
from edgeloop.errors import EdgeloopError
from edgeloop.metrics import serve_metrics
from edgeloop.settings import configure_logging, parse_settings

log = logging.getLogger("consumer")


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_settings(ConsumerSettings, sys.argv[1:] if argv is None else argv, prog="consumer")
    configure_logging(settings.log_level)
    stop = threading.Event()

    def handle(signum: int, _frame: Any) -> None:
        log.info("received %s: finishing the batch, flushing, committing", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    from consumer.service import ConsumerService  # after logging: building the reference logs

    try:
        service = ConsumerService(settings, stop)
    except EdgeloopError as exc:
        log.error("%s", exc)
        return 2
    serve_metrics(settings.metrics_host, settings.metrics_port)
    service.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
