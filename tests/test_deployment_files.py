"""docker-compose.yml, the Dockerfile and the Procfile agree with the settings module."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
SETTINGS_SOURCE = (ROOT / "rlagent_project" / "settings.py").read_text()
SPEC_VARIABLES = {
    "REDIS_HOST", "REDIS_PORT", "PROMETHEUS_URL", "MODEL_PATH", "NUM_REPLICAS", "RL_EXPLORATION",
}


def settings_variables() -> set[str]:
    return set(re.findall(r'env_\w+\(\s*"([A-Z_]+)"', SETTINGS_SOURCE))


def test_compose_has_every_service_of_the_design():
    assert set(SERVICES) == {"web", "worker", "beat", "redis", "postgres", "prometheus", "grafana"}
    for name in ("web", "worker", "redis", "postgres", "prometheus", "grafana"):
        assert "healthcheck" in SERVICES[name], name


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard():
    # source -> path in the container, from "./source:/target:ro"
    mounts = dict(volume.rsplit(":", 1)[0].split(":", 1) for volume in SERVICES["grafana"]["volumes"])
    for source in mounts:
        assert (ROOT / source).exists(), source
    folder = ROOT / next(s for s, target in mounts.items() if target == "/etc/grafana/provisioning")
    datasource = yaml.safe_load((folder / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((folder / "dashboards" / "rlagent.yml").read_text())["providers"][0]
    dashboard = next(target for s, target in mounts.items() if s.endswith("rlagent-dashboard.json"))
    assert dashboard.rsplit("/", 1)[0] == provider["options"]["path"]


def test_web_serves_gunicorn_on_port_5000():
    web = SERVICES["web"]
    assert "gunicorn rlagent_project.wsgi" in web["command"]
    assert "5000:5000" in web["ports"]
    assert web["environment"]["PORT"] == "5000"
    assert int(web["environment"]["WEB_CONCURRENCY"]) > 1


def test_worker_consumes_the_training_queue_with_concurrency_one():
    command = SERVICES["worker"]["command"].split()
    assert command[:4] == ["celery", "-A", "rlagent_project", "worker"]
    assert command[command.index("--queues") + 1] == "training"
    assert command[command.index("--concurrency") + 1] == "1"
    assert SERVICES["beat"]["command"].split()[:4] == ["celery", "-A", "rlagent_project", "beat"]


def test_agent_services_share_environment_known_to_settings():
    known = settings_variables() | {"SECRET_KEY", "WEB_CONCURRENCY", "PROMETHEUS_MULTIPROC_DIR"}
    for name in ("web", "worker", "beat"):
        env = SERVICES[name]["environment"]
        assert SPEC_VARIABLES <= set(env), name
        assert set(env) <= known, f"{name} sets variables settings never read: {set(env) - known}"
        assert env["REDIS_HOST"] == "redis" and env["DATABASE_URL"].startswith("postgres://")
        assert env["MODEL_PATH"].startswith("/models/")
        assert any(volume.endswith(":/models") for volume in SERVICES[name]["volumes"])


def test_settings_read_every_specification_variable_and_deployment_knob():
    expected = SPEC_VARIABLES | {
        "DATABASE_URL", "SECRET_KEY", "DEBUG", "ALLOWED_HOSTS", "CELERY_BROKER_URL",
        "TRAINING_INTERVAL_SECONDS", "PORT",
    }
    assert expected <= settings_variables()


def documented_variables() -> set[str]:
    """Variables with a row of their own in a table of docs/configuration.md."""
    page = (ROOT / "docs" / "configuration.md").read_text()
    return set(re.findall(r"^\| `([A-Z_]+)`", page, re.M))


def test_configuration_page_documents_every_setting():
    gunicorn = {"PORT", "WEB_CONCURRENCY", "PROMETHEUS_MULTIPROC_DIR"}  # deploy/gunicorn.conf.py
    missing = (settings_variables() | gunicorn) - documented_variables()
    assert not missing, f"docs/configuration.md lacks {sorted(missing)}"


def test_configuration_page_documents_every_client_variable():
    from rlagent_client.config import ENV_FIELDS

    missing = ({"USE_RL_AGENT"} | set(ENV_FIELDS)) - documented_variables()
    assert not missing, f"docs/configuration.md lacks {sorted(missing)}"


def test_readme_links_the_configuration_page():
    assert "(docs/configuration.md)" in (ROOT / "README.md").read_text()


def test_prometheus_scrapes_the_web_metrics():
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    job = config["scrape_configs"][0]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["web:5000"]


def test_procfile_runs_the_same_processes_as_compose():
    procfile = dict(
        line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line.strip()
    )
    assert set(procfile) == {"web", "worker", "beat"}
    assert procfile["worker"] == SERVICES["worker"]["command"]
    assert procfile["beat"] == SERVICES["beat"]["command"]
    assert "deploy/gunicorn.conf.py" in procfile["web"]
    assert "deploy/gunicorn.conf.py" in SERVICES["web"]["command"]


def test_dockerfile_pins_cpu_torch_and_exposes_the_port():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "torch==2.13.0" in dockerfile
    assert "EXPOSE 5000" in dockerfile
    assert re.search(r"^torch==2\.13\.0$", (ROOT / "requirements.txt").read_text(), re.M)


def test_the_replay_buffer_and_the_database_survive_a_restart_of_their_server():
    volumes = set(COMPOSE["volumes"])
    redis_command = SERVICES["redis"]["command"].split()
    assert redis_command[redis_command.index("--appendonly") + 1] == "yes"
    assert any(v.split(":")[0] in volumes and v.endswith(":/data") for v in SERVICES["redis"]["volumes"])
    assert any(v.split(":")[0] in volumes for v in SERVICES["postgres"]["volumes"])
