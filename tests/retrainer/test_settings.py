"""Retrainer settings: flags over environment over defaults, and clear errors for what is missing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgeloop.datasets import DataPack
from edgeloop.errors import ConfigurationError
from edgeloop.settings import parse_settings
from retrainer.settings import RetrainerSettings

REPO = Path(__file__).resolve().parents[2]


def test_flags_override_environment_over_defaults(monkeypatch: pytest.MonkeyPatch, small_pack: DataPack) -> None:
    monkeypatch.setenv("EDGELOOP_RETRAIN_AFTER", "7")
    monkeypatch.setenv("EDGELOOP_POLICY", "better")
    monkeypatch.setenv("EDGELOOP_TRAINING_DATA", str(small_pack.training))
    settings = parse_settings(
        RetrainerSettings,
        ["--policy", "always", "--golden-data", str(small_pack.golden), "--master-annotations", str(small_pack.master),
         "--registry", "/tmp/reg", "--bootstrap-servers", "127.0.0.1:1"],
    )  # fmt: skip
    assert settings.retrain_after == 7
    assert settings.policy == "always"
    assert settings.metrics_port == 9103
    assert settings.edge_case_weight == 5.0
    assert settings.buffer_path() == Path("/tmp/reg/edge-cases.jsonl")
    settings.check()
    config = settings.retrain_config()
    assert (config.retrain_after, config.policy, config.training.features, config.initial.features) == (
        7, "always", "pose", "pose",
    )  # fmt: skip


def test_missing_data_paths_name_the_flag_and_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("EDGELOOP_TRAINING_DATA", "EDGELOOP_GOLDEN_DATA", "EDGELOOP_MASTER_ANNOTATIONS"):
        monkeypatch.delenv(name, raising=False)
    settings = RetrainerSettings(bootstrap_servers="127.0.0.1:1", golden_data=str(tmp_path / "absent.json"))
    with pytest.raises(ConfigurationError) as caught:
        settings.check()
    message = str(caught.value)
    assert "--training-data or EDGELOOP_TRAINING_DATA" in message
    assert f"--golden-data {tmp_path / 'absent.json'} does not exist" in message
    assert "--master-annotations (EDGELOOP_MASTER_ANNOTATIONS) and/or --labels-topic" in message


def test_the_entrypoint_refuses_to_start_without_data_and_says_why(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "retrainer", "--registry", str(tmp_path), "--bootstrap-servers", "127.0.0.1:1"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 2
    assert "--training-data or EDGELOOP_TRAINING_DATA" in done.stderr


def test_version_zero_is_the_same_model_whichever_service_bootstraps_it() -> None:
    # The consumer and the retrainer may both find the registry empty; the first one trains version 0.
    from consumer.settings import ConsumerSettings

    consumer = ConsumerSettings(bootstrap_servers="127.0.0.1:1")
    retrainer = RetrainerSettings(bootstrap_servers="127.0.0.1:1")
    initial = retrainer.retrain_config().initial
    assert (initial.features, initial.seed) == (consumer.model_features, consumer.seed)
    assert initial == type(initial)(features=consumer.model_features, seed=consumer.seed)
