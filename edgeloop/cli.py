"""The ``edgeloop`` console script: one subcommand per job, each in its own module."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# subcommand -> (module with a ``main(argv) -> int``, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "kafka": ("edgeloop.broker.cli", "start | stop | status the local single-node Apache Kafka broker"),
    "demo": ("edgeloop.demo", "run the whole loop end to end on the local broker and report"),
    "evaluate": ("edgeloop.evaluate", "accuracy of a published model version on a labelled file"),
    "report": ("edgeloop.report", "write the HTML/PNG report of a finished run"),
    "bench": ("edgeloop.bench", "the benchmark: figures, baselines and ratios in one run"),
}


def usage() -> str:
    lines = ["usage: edgeloop COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "Run `edgeloop COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"edgeloop: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
