"""A tiny but complete benchmark run against the session broker: every report key, sane values, markdown.

It starts real ``python -m consumer`` / ``python -m producer`` processes, so it is a ``kafka`` test; the
profile is sized to stay well under a minute. Figures are never compared with thresholds (a shared
machine's timings mean nothing in a test); only their presence, consistency and ranges are checked.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import orjson
import pytest

from edgeloop.bench import Profile, build_parser, main, run_bench
from edgeloop.bench.report import REQUIRED_KEYS, REQUIRED_QUALITY_KEYS, missing_keys, render_markdown, render_table
from edgeloop.synthetic import synthetic_pack

TINY = Profile(
    name="tiny",
    frames=3_000,
    latency_rates=(1_000.0,),
    latency_duration_s=1.0,
    scaling_counts=(20, 60),
    scaling_points=1_500,
    scaling_time_box_s=1.0,
    drain_frames=2_000,
    producer_frames=2_000,
    river_frames=200,
    random_seeds=(0,),
    retrainer=False,
    timeout_s=90.0,
)


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory: pytest.TempPathFactory, kafka_broker: Any) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("bench")
    # Training without horizontal bodies: the stream's push-ups are then plainly out of distribution, so
    # the tiny run has edge cases to collect and versions to train.
    vertical_only = {"standing": 0.4, "squatting": 0.3, "lunging": 0.3}
    pack = synthetic_pack(root / "pack", seed=3, training=1000, stream=3000, golden=800, training_mix=vertical_only)
    argv = ["--data-dir", str(pack.root), "--bootstrap-servers", kafka_broker.bootstrap]
    return run_bench(build_parser().parse_args(argv), argv, profile=TINY)


def test_report_has_every_required_key(tiny_report: dict[str, Any]) -> None:
    assert missing_keys(tiny_report) == []
    assert set(REQUIRED_KEYS) <= set(tiny_report)
    assert set(REQUIRED_QUALITY_KEYS) <= set(tiny_report["quality"])
    for key in ("machine", "versions", "timestamp", "command"):
        assert tiny_report[key]
    assert tiny_report["machine"]["cores"] >= 1 and tiny_report["machine"]["cpu_model"]
    for name in ("python", "numpy", "torch", "confluent-kafka", "librdkafka", "river", "kafka broker"):
        assert tiny_report["versions"][name], name
    assert tiny_report["command"].startswith("uv run edgeloop bench --data-dir")


def test_throughput_figures_are_consistent(tiny_report: dict[str, Any]) -> None:
    r = tiny_report
    assert r["frames"]["topic_frames"] == TINY.frames
    assert sum(r["frames"]["partitions"]) == TINY.frames
    assert r["consumer_frames_per_s"] > 0 and r["limit_frames_per_s"] > 0
    assert r["ratio_vs_limit"] == pytest.approx(r["consumer_frames_per_s"] / r["limit_frames_per_s"])
    assert r["limit_frames_per_s"] == pytest.approx(statistics.median(r["limit_runs_frames_per_s"]))
    assert len(r["limit_runs_frames_per_s"]) == 4
    assert r["consumer_run"]["scored"] == TINY.frames  # every frame valid, every frame scored
    assert r["consumer_run"]["dead_letters"] == 0
    assert set(r["baselines"]) == {"river_dbstream_per_point", "original_tool_kmeans_l1"}
    assert all(v > 0 for v in r["baselines"].values())
    for name, fps in r["baselines"].items():
        assert r["ratios"][f"consumer_vs_{name}"] == pytest.approx(r["consumer_frames_per_s"] / fps)
    assert r["producer_frames_per_s"] > 0
    assert r["retrain_s"] > 0


def test_latency_scaling_and_processes(tiny_report: dict[str, Any]) -> None:
    r = tiny_report
    assert list(r["latency_ms"]) == ["1000"]
    lat = r["latency_ms"]["1000"]
    assert 0 <= lat["p50"] <= lat["p99"] <= lat["max"] and lat["p99_with_warmup"] <= lat["max"]
    assert 0 < lat["warmup_s"] <= 1.0
    assert lat["frames"] == 1000  # rate x duration, every frame decided
    assert list(r["scaling_micro_clusters"]) == ["20", "60"]
    for count, detail in r["scaling_details"].items():
        assert 0 < detail["n_clusters"] <= int(count)
        assert detail["reference_points"] == TINY.scaling_points
    assert set(r["consumer_processes"]) == {"1", "2"}
    for n, run in r["consumer_processes"].items():
        assert run["frames"] == TINY.drain_frames
        assert sum(run["partition_sizes"]) == TINY.drain_frames
        assert len(run["max_rss_mib"]) == int(n)
    speedup = r["consumer_processes"]["1"]["drain_s"] / r["consumer_processes"]["2"]["drain_s"]
    assert r["two_consumers_speedup"] == pytest.approx(speedup)
    rss = r["rss_mib"]
    # Children are measured on their own (VmHWM), not as copies of this process.
    assert rss["consumer"] > 0 and rss["producer"] > 0
    assert rss["producer"] < rss["bench process"]
    assert rss["retrainer"] is None  # not run in this profile, and said so
    assert any("retrainer" in note for note in r["notes"])


def test_quality_figures_are_in_range(tiny_report: dict[str, Any]) -> None:
    q = tiny_report["quality"]
    for key in ("v0_golden", "v1_golden", "random_prefix_v1_golden", "flag_rate", "v0_error_rate_stream"):
        assert 0.0 <= q[key] <= 1.0, key
    assert 1 <= q["labels"] <= 200
    assert q["collector"]["collected"] >= q["labels"]
    assert q["flag_rate"] > 0
    assert q["stream_frames"] == 3000
    assert q["flagged_frames"] == round(q["flag_rate"] * 3000)
    assert q["prefix_frames"] <= 3000
    assert len(q["random_prefix_v1_golden_by_seed"]) == 1
    assert q["original_rule_labels"] <= q["labels"]
    if q["original_rule_labels"]:
        assert 0.0 <= q["original_rule_v1_golden"] <= 1.0
    else:
        assert q["original_rule_v1_golden"] is None


def test_table_and_markdown_render_from_the_json(tiny_report: dict[str, Any], tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "report.json"
    path.write_bytes(orjson.dumps(tiny_report, option=orjson.OPT_SERIALIZE_NUMPY))
    assert main(["--markdown", str(path)]) == 0
    markdown = capsys.readouterr().out
    assert markdown == render_markdown(orjson.loads(path.read_bytes()))
    assert markdown.startswith("## Benchmarks")
    assert tiny_report["timestamp"] in markdown and tiny_report["command"] in markdown
    for title in (
        "Throughput over Kafka",
        "Baselines",
        "latency",
        "Scaling",
        "Consumer processes",
        "Detection quality",
    ):
        assert title in markdown
    assert f"{tiny_report['consumer_frames_per_s']:,.0f}" in markdown
    table = render_table(tiny_report)
    assert f"{tiny_report['limit_frames_per_s']:,.0f}" in table
