"""deploy/kubernetes: every manifest valid for Kubernetes 1.30 (schemas bundled, offline), and in step
with the Procfile, gunicorn's port and the settings module. There is no kustomize binary here:
`build` does what these kustomizations use (resources, generators, patches, images, replicas)."""

from __future__ import annotations

import copy
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy" / "kubernetes"
BASE, OVERLAY, EXAMPLES = KUBE / "base", KUBE / "overlays" / "example", KUBE / "examples"
KUBERNETES_VERSION = "1.30"
PROCFILE = dict(line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line.strip())
SETTINGS_SOURCE = (ROOT / "rlagent_project" / "settings.py").read_text()
SETTINGS_READ = set(re.findall(r'env_\w+\(\s*"([A-Z_]+)"', SETTINGS_SOURCE))
# Read by a library a process loads rather than by settings, each for a reason given in the manifest.
LIBRARY_VARIABLES = {"OMP_NUM_THREADS"}
REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
Doc = dict[str, Any]


def load(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def env_file(path: Path) -> dict[str, str]:
    lines = [line.strip() for line in path.read_text().splitlines()]
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def merge(target: Doc, patch: Doc) -> None:
    """A strategic merge patch as far as these patches go: maps merge, lists replace."""
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def containers(doc: Doc) -> list[Doc]:
    if doc["kind"] not in ("Deployment", "Job"):
        return []
    pod = doc["spec"]["template"]["spec"]
    return pod.get("initContainers", []) + pod["containers"]


def build(folder: Path) -> list[Doc]:
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
    docs: list[Doc] = []
    for entry in spec.get("resources", []):
        docs += build(folder / entry) if (folder / entry).is_dir() else load(folder / entry)
    generators = (("configMapGenerator", "ConfigMap", "data"), ("secretGenerator", "Secret", "stringData"))
    for key, kind, field in generators:
        for generator in spec.get(key, []):
            data = {k: v for env in generator.get("envs", []) for k, v in env_file(folder / env).items()}
            data |= dict(literal.split("=", 1) for literal in generator.get("literals", []))
            behavior = generator.get("behavior", "create")
            if behavior == "create":
                docs.append({"apiVersion": "v1", "kind": kind, "metadata": {"name": generator["name"]},
                             field: data} | ({"type": "Opaque"} if kind == "Secret" else {}))
            else:
                existing = find(docs, kind, generator["name"])
                existing[field] = (existing[field] | data) if behavior == "merge" else data
    for patch in spec.get("patches", []):
        for doc in load(folder / patch["path"]):
            merge(find(docs, doc["kind"], doc["metadata"]["name"]), doc)
    for image in spec.get("images", []):
        for container in (c for doc in docs for c in containers(doc)):
            if container["image"].split(":")[0] == image["name"]:
                container["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    for replicas in spec.get("replicas", []):
        find(docs, "Deployment", replicas["name"])["spec"]["replicas"] = replicas["count"]
    for group in spec.get("labels", []):
        for doc in docs:
            doc["metadata"].setdefault("labels", {}).update(group["pairs"])
    if "namespace" in spec:
        for doc in docs:
            if doc["kind"] != "Namespace":
                doc["metadata"]["namespace"] = spec["namespace"]
    return docs


BUILDS = {"base": build(BASE), "overlay": build(OVERLAY)}
BASE_DOCS = BUILDS["base"]


def deployment(docs: list[Doc], component: str) -> Doc:
    return find(docs, "Deployment", f"rl-agent-{component}")


def settings_of(docs: list[Doc]) -> dict[str, str]:
    secret = find(docs, "Secret", "rl-agent-secrets")["stringData"]
    return find(docs, "ConfigMap", "rl-agent-settings")["data"] | secret


def named(docs: list[Doc]) -> list[tuple[str, Doc]]:
    return [(f"{d['kind']}/{d['metadata']['name']}", d) for d in docs]


@pytest.mark.parametrize(("build_name", "name", "doc"),
                         [(b, n, d) for b, docs in BUILDS.items() for n, d in named(docs)])
def test_every_manifest_matches_the_kubernetes_schema(build_name, name, doc):
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_schema_check_catches_a_misspelt_field():
    broken = copy.deepcopy(deployment(BASE_DOCS, "beat"))
    broken["spec"]["template"]["spec"]["containers"][0]["comand"] = ["celery"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("folder", [BASE, OVERLAY], ids=["base", "overlay"])
def test_every_file_of_a_kustomization_is_listed_in_it(folder):
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
    listed = set(spec.get("resources", [])) | {p["path"] for p in spec.get("patches", [])}
    for key in ("configMapGenerator", "secretGenerator"):
        listed |= {env for generator in spec.get(key, []) for env in generator.get("envs", [])}
    files = {p.name for p in folder.iterdir() if p.is_file()} - {"kustomization.yaml"}
    assert files == {entry for entry in listed if not (folder / entry).is_dir()}


def test_the_base_is_namespace_agnostic():
    assert "namespace" not in yaml.safe_load((BASE / "kustomization.yaml").read_text())
    assert [n for n, d in named(BASE_DOCS) if "namespace" in d["metadata"]] == []
    overlay = {d["metadata"].get("namespace") for d in BUILDS["overlay"] if d["kind"] != "Namespace"}
    assert overlay == {"rl-agent"}


@pytest.mark.parametrize("docs", BUILDS.values(), ids=BUILDS.keys())
def test_beat_runs_once_and_only_web_autoscales(docs):
    beat = deployment(docs, "beat")
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"] == {"type": "Recreate"}
    targets = [d["spec"]["scaleTargetRef"]["name"] for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    assert targets == ["rl-agent-web"]
    assert "replicas" not in deployment(docs, "web")["spec"]  # the autoscaler owns it


def test_the_containers_run_the_procfile_processes():
    for process in ("web", "worker", "beat"):
        main = deployment(BASE_DOCS, process)["spec"]["template"]["spec"]["containers"]
        assert len(main) == 1
        assert main[0]["command"] + main[0].get("args", []) == shlex.split(PROCFILE[process]), process
    job = find(BASE_DOCS, "Job", "rl-agent-migrate")["spec"]["template"]["spec"]["containers"][0]
    assert job["command"] == ["python", "manage.py", "migrate", "--noinput"]


def test_web_worker_and_beat_wait_for_the_migrations():
    for process in ("web", "worker", "beat"):
        init = deployment(BASE_DOCS, process)["spec"]["template"]["spec"]["initContainers"]
        assert [c["name"] for c in init] == ["wait-for-migrations"]
        assert "python manage.py migrate --check" in init[0]["command"][-1]


def test_probes_and_scraping_use_the_port_gunicorn_listens_on():
    port = int(settings_of(BASE_DOCS)["PORT"])
    assert port == 5000  # the original specification's port, gunicorn's bind via settings.PORT
    pod = deployment(BASE_DOCS, "web")["spec"]["template"]
    web = pod["spec"]["containers"][0]
    assert web["ports"] == [{"name": "http", "containerPort": port}]
    probes = {kind: web[f"{kind}Probe"]["httpGet"] for kind in ("startup", "liveness", "readiness")}
    health, ready = {"path": "/health", "port": "http"}, {"path": "/ready", "port": "http"}
    assert probes == {"startup": health, "liveness": health, "readiness": ready}
    annotations = pod["metadata"]["annotations"]
    assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": str(port),
                           "prometheus.io/path": "/metrics"}
    service = find(BASE_DOCS, "Service", "rl-agent")["spec"]
    assert service["ports"] == [{"name": "http", "port": port, "targetPort": "http"}]


def test_selectors_pick_their_own_pods_only():
    templates = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
                 for d in BASE_DOCS if d["kind"] in ("Deployment", "Job")}
    for doc in BASE_DOCS:
        selector = doc.get("spec", {}).get("selector")
        if selector is None or doc["kind"] == "Job":
            continue
        wanted = selector.get("matchLabels", selector)
        picked = [name for name, labels in templates.items() if wanted.items() <= labels.items()]
        own = doc["kind"] not in ("Service", "PodDisruptionBudget")
        expected = [doc["metadata"]["name"]] if own else ["rl-agent-web"]
        assert picked == expected, doc["metadata"]["name"]


def test_every_container_has_requests_and_limits():
    for doc in BASE_DOCS:
        for container in containers(doc):
            resources = container["resources"]
            both = set(resources["requests"]) & set(resources["limits"])
            assert {"cpu", "memory"} <= both, container["name"]


@pytest.mark.parametrize("docs", BUILDS.values(), ids=BUILDS.keys())
def test_every_variable_set_is_one_the_settings_read(docs):
    generated = set(settings_of(docs))
    set_in_pods = {e["name"]: e for doc in docs for c in containers(doc) for e in c.get("env", [])}
    references = {ref for e in set_in_pods.values() for ref in REFERENCE.findall(e.get("value", ""))}
    assert references <= generated | set(set_in_pods), "a $(NAME) reference to nothing"
    expanded_only = references - SETTINGS_READ  # there to be expanded into another variable
    unread = (generated | set(set_in_pods)) - SETTINGS_READ - LIBRARY_VARIABLES - expanded_only
    assert not unread, f"variables the settings never read: {sorted(unread)}"


def test_the_worker_keeps_checkpoints_on_its_volume():
    model_dir = str(Path(settings_of(BASE_DOCS)["MODEL_PATH"]).parent)
    pod = deployment(BASE_DOCS, "worker")["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    claim = next(v for v in pod["volumes"] if v["name"] == mounts[model_dir])["persistentVolumeClaim"]
    find(BASE_DOCS, "PersistentVolumeClaim", claim["claimName"])
    assert deployment(BASE_DOCS, "worker")["spec"]["strategy"] == {"type": "Recreate"}


@pytest.mark.parametrize("folder", [BASE, OVERLAY], ids=["base", "overlay"])
def test_the_committed_secrets_are_placeholders(folder):
    secret = env_file(folder / "secrets.env")
    assert set(secret) == {"SECRET_KEY", "DATABASE_URL", "REDIS_HOST", "REDIS_PORT"}
    assert secret["SECRET_KEY"] == ""  # empty: settings refuse to start, see below
    database = urlsplit(secret["DATABASE_URL"])
    assert database.password == "CHANGE-ME" and database.hostname.endswith(".invalid")
    assert secret["REDIS_HOST"].endswith(".invalid")
    assert not [p for p in KUBE.rglob("*.yaml") if any(d.get("kind") == "Secret" for d in load(p))]


def load_settings(variables: dict[str, str]) -> subprocess.CompletedProcess:
    """Import the settings module in a clean interpreter with only these variables (and PATH)."""
    code = ("import json; from rlagent_project import settings as s; print(json.dumps({"
            "'embedded': s.EMBEDDED, 'engine': s.DATABASES['default']['ENGINE'], 'port': s.PORT, "
            "'broker': s.CELERY_BROKER_URL, 'replay': s.REPLAY_STORE, 'hosts': s.ALLOWED_HOSTS, "
            "'model': str(s.MODEL_PATH)}))")
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)} | variables
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def web_environment(docs: list[Doc], pod_ip: str) -> dict[str, str]:
    """What the kubelet gives the web container: envFrom, then env with $(NAME) expanded in order."""
    variables = settings_of(docs) | {"SECRET_KEY": "not-a-placeholder"}
    for item in deployment(docs, "web")["spec"]["template"]["spec"]["containers"][0]["env"]:
        value = pod_ip if "fieldRef" in item.get("valueFrom", {}) else item["value"]
        variables[item["name"]] = REFERENCE.sub(lambda m: variables.get(m[1], m[0]), value)
    return variables


@pytest.mark.parametrize("docs", BUILDS.values(), ids=BUILDS.keys())
def test_the_settings_accept_the_manifests_and_run_on_external_stores(docs):
    result = load_settings(web_environment(docs, pod_ip="10.1.2.3"))
    assert result.returncode == 0, result.stderr
    loaded = yaml.safe_load(result.stdout)
    assert loaded["embedded"] is False and loaded["engine"].endswith("postgresql")
    assert loaded["broker"].startswith("redis://redis.invalid:6379/") and loaded["replay"] == "redis"
    assert loaded["port"] == 5000 and loaded["model"] == "/models/rl_agent.pth"
    assert {"10.1.2.3", "rl-agent"} <= set(loaded["hosts"])  # probes and scrapes come by pod IP


def test_the_placeholder_secret_stops_start_up():
    result = load_settings(settings_of(BASE_DOCS))
    assert result.returncode != 0 and "SECRET_KEY is required" in result.stderr


def test_the_keda_example_scales_on_the_desired_replicas_gauge():
    (scaled,) = load(EXAMPLES / "keda-scaledobject.yaml")
    assert (scaled["apiVersion"], scaled["kind"]) == ("keda.sh/v1alpha1", "ScaledObject")
    spec = scaled["spec"]
    assert scaled["metadata"]["name"] and spec["scaleTargetRef"]["name"]
    assert not spec["scaleTargetRef"]["name"].startswith("rl-agent")  # it scales the LLM replicas
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    metadata = trigger["metadata"]
    assert all(isinstance(value, str) for value in metadata.values())  # KEDA reads strings only
    assert {"serverAddress", "query", "threshold"} <= set(metadata) and metadata["threshold"] == "1"
    assert 'rlagent_desired_replicas{pool="default"}' in metadata["query"]


def test_the_external_metric_example_is_a_valid_autoscaler():
    (hpa,) = load(EXAMPLES / "hpa-external-metric.yaml")
    kubernetes_validate.validate(hpa, KUBERNETES_VERSION, strict=True)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["external"]["metric"] == {"name": "rlagent_desired_replicas",
                                            "selector": {"matchLabels": {"pool": "default"}}}
    assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "1"}
