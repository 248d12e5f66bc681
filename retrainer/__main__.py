"""``python -m retrainer``: collect edge cases, annotate, retrain at the threshold, publish new versions.

SIGTERM / SIGINT finish the current step (a retrain in progress included), announce, commit, and exit 0.
A second signal while stopping exits at once (the buffer is durable; at worst the last batch is read again).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from edgeloop.errors import EdgeloopError
from edgeloop.metrics import serve_metrics
from edgeloop.settings import configure_logging, parse_settings
from retrainer.service import RetrainerService
from retrainer.settings import RetrainerSettings

log = logging.getLogger("retrainer")


def install_signal_handlers(stop: threading.Event) -> None:
    def handle(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            log.warning("second %s: exiting now", signal.Signals(signum).name)
            raise SystemExit(1)
        log.info("%s: finishing the current step, then stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_settings(RetrainerSettings, sys.argv[1:] if argv is None else argv, prog="retrainer")
    configure_logging(settings.log_level)
    stop = threading.Event()
    install_signal_handlers(stop)
    try:
        service = RetrainerService(settings, stop)
    except EdgeloopError as exc:
        print(f"retrainer: {exc}", file=sys.stderr)
        return 2
    serve_metrics(settings.metrics_host, settings.metrics_port)
    try:
        service.run()
    except EdgeloopError as exc:
        log.error("retrainer stopped on an error: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
