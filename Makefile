# Developer shortcuts; every target runs through uv.
DATA ?= ../shared/datasets/orientation

.PHONY: help sync lint format typecheck test test-fast demo demo-synthetic bench bench-quick kafka-start kafka-stop

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-16s %s\n", $$1, $$2}'

sync:  ## install the locked dependencies into .venv
	uv sync --frozen

lint:  ## ruff (lint + format check) and mypy
	uv run ruff check .
	uv run ruff format --check .
	uv run mypy

format:  ## apply ruff's formatting and safe fixes
	uv run ruff format .
	uv run ruff check --fix .

test:  ## the whole test suite (starts its own Kafka broker and Prometheus)
	uv run pytest

test-fast:  ## unit tests only (no broker)
	uv run pytest -m "not kafka and not prometheus and not faults"

demo:  ## the closed loop on the real data pack
	uv run edgeloop demo --data-dir $(DATA)

demo-synthetic:  ## the closed loop on generated data
	uv run edgeloop demo

bench:  ## the full benchmark (< 15 min), JSON report in bench-report.json
	uv run edgeloop bench --report bench-report.json

bench-quick:  ## the quick benchmark (< 2 min)
	uv run edgeloop bench --quick --report bench-quick.json

kafka-start:  ## start the local broker
	uv run edgeloop kafka start

kafka-stop:  ## stop the local broker
	uv run edgeloop kafka stop
