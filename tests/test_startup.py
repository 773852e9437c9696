"""What starting a process reads and writes: importing settings writes nothing, the first process to
start makes the embedded mode's files, gunicorn takes its port and workers from validated settings."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What tests/settings.py puts in this process's environment, and what these tests set themselves.
_OWN_VARS = {
    "DATABASE_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_DB", "REDIS_KEY_PREFIX", "SECRET_KEY", "DEBUG",
    "DATA_DIR", "MODEL_PATH", "PORT", "WEB_CONCURRENCY", "PROMETHEUS_MULTIPROC_DIR", "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND", "REPLAY_STORE", "DJANGO_SETTINGS_MODULE",
}


def environment(**variables: str) -> dict[str, str]:
    """This process's environment without the service's variables (embedded mode), plus `variables`."""
    return {k: v for k, v in os.environ.items() if k not in _OWN_VARS} | variables


def python(code: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(process: subprocess.Popen) -> str:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    return out.strip().splitlines()[-1]


def test_importing_settings_writes_nothing(tmp_path):
    data_dir = tmp_path / "var"
    code = "import rlagent_project.settings as s; print(s.EMBEDDED, s.SECRET_KEY_FILE)"
    assert finish(python(code, environment(DATA_DIR=str(data_dir)))) == f"True {data_dir / 'secret_key'}"
    assert not data_dir.exists()


def test_processes_starting_together_make_the_embedded_files_and_share_one_secret_key(tmp_path):
    data_dir = tmp_path / "var"
    env = environment(DATA_DIR=str(data_dir), DJANGO_SETTINGS_MODULE="rlagent_project.settings")
    code = "import django; django.setup(); from django.conf import settings; print(settings.SECRET_KEY)"
    keys = {finish(process) for process in [python(code, env) for _ in range(2)]}  # e.g. web and worker
    key_file = data_dir / "secret_key"
    assert keys == {key_file.read_text().strip()} and len(keys.pop()) >= 50
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert sorted(p.name for p in data_dir.iterdir()) == ["broker", "secret_key"]  # SQLite's folder too
    assert (data_dir / "broker" / "control").is_dir()
    assert finish(python(code, env)) == key_file.read_text().strip()  # a restart keeps the key


@pytest.mark.parametrize(
    ("variable", "value"), [("PORT", "abc"), ("PORT", "70000"), ("WEB_CONCURRENCY", "0")]
)
def test_gunicorn_refuses_a_bad_port_or_worker_count_with_a_message_naming_it(tmp_path, variable, value):
    env = environment(DATA_DIR=str(tmp_path), **{variable: value})
    result = subprocess.run([Path(sys.executable).parent / "gunicorn", "rlagent_project.wsgi", "--config",
                             "deploy/gunicorn.conf.py"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    assert result.stderr.startswith(f"gunicorn: Environment variable {variable}=") and value in result.stderr
    assert len(result.stderr.splitlines()) == 1  # the message, no traceback


CONFIG = ("import os, runpy; conf = runpy.run_path('deploy/gunicorn.conf.py'); "
          "print(conf['bind'], conf['workers'], os.environ['PROMETHEUS_MULTIPROC_DIR'])")


def test_gunicorn_serves_the_settings_port_and_workers_with_prometheus_files_under_data_dir(tmp_path):
    env = environment(DATA_DIR=str(tmp_path), PORT="5057", WEB_CONCURRENCY="3")
    assert finish(python(CONFIG, env)) == f"0.0.0.0:5057 3 {tmp_path / 'prometheus-multiproc'}"


def test_the_prometheus_folder_defaults_to_the_default_data_dir():
    assert finish(python(CONFIG, environment())) == f"0.0.0.0:5000 2 {ROOT / 'var' / 'prometheus-multiproc'}"
