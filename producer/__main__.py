"""``python -m producer``: replay a dataset onto the frames topic."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Sequence

from edgeloop.metrics import serve_metrics
from edgeloop.settings import configure_logging, parse_settings
from producer.replay import install_signal_handlers, replay
from producer.settings import ProducerSettings

log = logging.getLogger("producer")


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_settings(ProducerSettings, sys.argv[1:] if argv is None else argv, prog="producer")
    configure_logging(settings.log_level)
    serve_metrics(settings.metrics_host, settings.metrics_port)
    stop = threading.Event()
    install_signal_handlers(stop)
    log.info("replaying %s onto %s at %s", settings.data or "a synthetic stream", settings.topic,
             f"{settings.rate:g} frames/s" if settings.rate else "full speed")  # fmt: skip
    result = replay(settings, stop)
    rate = result.sent / result.elapsed_s if result.elapsed_s else 0.0
    print(
        f"sent {result.sent} frames ({result.bytes / 1e6:.1f} MB) in {result.elapsed_s:.1f}s "
        f"({rate:,.0f} frames/s): acked {result.acked}, failed {result.failed}"
        + (" (interrupted)" if result.interrupted else "")
    )
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
