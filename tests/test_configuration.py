"""Settings come from the environment, are validated at start-up and pass Django's deploy check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_manage(*args: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in _AGENT_VARS}
    clean.update({"DATA_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "rlagent_project.settings"})
    clean.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=clean, capture_output=True, text=True,
        timeout=120,
    )


_AGENT_VARS = {
    "DATABASE_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_DB", "SECRET_KEY", "DEBUG", "MODEL_PATH",
    "NUM_REPLICAS", "RL_EXPLORATION", "CELERY_BROKER_URL", "REPLAY_STORE", "REPLICA_NAMES",
}


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("NUM_REPLICAS", "three"),
        ("NUM_REPLICAS", "1"),
        ("RL_EXPLORATION", "maybe"),
        ("REDIS_PORT", "70000"),
        ("TRAINING_INTERVAL_SECONDS", "nan"),
        ("RL_DEVICE", "tpu"),
    ],
)
def test_bad_value_stops_startup_naming_the_variable(tmp_path, variable, value):
    result = run_manage("check", env={variable: value}, tmp_path=tmp_path)
    assert result.returncode != 0
    assert variable in result.stderr


def test_production_mode_requires_a_secret_key(tmp_path):
    result = run_manage("check", env={"DATABASE_URL": "postgres://x@127.0.0.1/x"}, tmp_path=tmp_path)
    assert result.returncode != 0
    assert "SECRET_KEY is required" in result.stderr


def test_embedded_mode_needs_no_environment(tmp_path):
    result = run_manage(
        "shell", "-c",
        "from django.conf import settings as s; print(s.DATABASES['default']['ENGINE'], "
        "s.CELERY_BROKER_URL, s.REPLAY_STORE, s.NUM_REPLICAS, s.MODEL_PATH, s.RL_EXPLORATION)",
        env={}, tmp_path=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    engine, broker, store, replicas, model_path, exploration = result.stdout.strip().splitlines()[-1].split()
    assert engine.endswith("sqlite3")
    assert broker == "filesystem://"
    assert store == "database"
    assert replicas == "3"
    assert model_path == str(tmp_path / "models" / "rl_agent.pth")
    assert exploration == "True"


def test_specification_defaults_apply_when_services_are_configured(tmp_path):
    result = run_manage(
        "shell", "-c",
        "from django.conf import settings as s; print(s.MODEL_PATH, s.PROMETHEUS_URL, s.REDIS_PORT, "
        "s.CELERY_BROKER_URL, s.REPLAY_STORE)",
        env={"REDIS_HOST": "redis", "SECRET_KEY": "k" * 50}, tmp_path=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].split() == [
        "/models/rl_agent.pth", "http://prometheus:9090", "6379", "redis://redis:6379/0", "redis",
    ]


def test_deploy_check_is_clean_with_production_settings(tmp_path):
    result = run_manage(
        "check", "--deploy", "--fail-level", "WARNING",
        env={"DEBUG": "false", "SECRET_KEY": "a-real-secret-" + "z7Q" * 20}, tmp_path=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
