"""docs/design.md, decision 4: web workers never import torch. Training, checkpoint writes and restores and
the admin's rollback run on the Celery training worker; a fresh interpreter holding the WSGI
application proves that nothing the web side imports or serves loads torch (or the tasks)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Run only where torch is loaded: the worker's tasks and `manage.py` commands call them.
WORKER_SIDE = {"agent_app.services.training", "agent_app.services.rollback", "agent_app.services.checkpoints"}
# The RL core may use torch, except its NumPy serving path, which web workers do import.
SERVING_CORE = {"agent_app.rl.inference", "agent_app.rl.state", "agent_app.rl.reward", "agent_app.rl.config"}
LOADED = (
    "mods = sorted(sys.modules)\n"
    "print(json.dumps({'torch': [m for m in mods if m.split('.')[0] == 'torch'],\n"
    "                  'tasks': [m for m in mods if m.split('.')[0] == 'tasks'], **OUT}))\n"
)


def web_side_modules() -> list[str]:
    names = []
    for path in sorted((ROOT / "agent_app").rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        rl_core = name.startswith("agent_app.rl.") and name not in SERVING_CORE
        if not (rl_core or name in WORKER_SIDE or ".management.commands." in name):
            names.append(name)
    return names


def run_web_process(code: str, tmp_path: Path) -> dict:
    """Run `code` in a new interpreter on the embedded defaults, as `make run`'s web process."""
    inherited = ("DJANGO_", "DATABASE_URL", "REDIS_", "CELERY_", "PYTEST", "TEST_BACKENDS", "DATA_DIR",
                 "MODEL_PATH", "SECRET_KEY")
    env = {k: v for k, v in os.environ.items() if not k.startswith(inherited)}
    env.update(
        DATA_DIR=str(tmp_path / "var"), MODEL_PATH=str(tmp_path / "models" / "rl_agent.pth"),
        SECRET_KEY="web-process-" + "k" * 40, PYTHONPATH=str(ROOT), POLICY_SYNC_THREAD="false",
        PROMETHEUS_URL="http://127.0.0.1:9",  # nothing listens: the host's figures are used
        TRAIN_TIMEOUT_SECONDS="1",  # no worker runs: what is sent to it times out at once
    )
    result = subprocess.run([sys.executable, "-c", f"import json, sys\nOUT = {{}}\n{code}\n{LOADED}"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-6000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_web_side_modules_import_neither_torch_nor_the_tasks(tmp_path):
    names = web_side_modules()
    assert "agent_app.admin" in names and "agent_app.services.dispatch" in names
    loaded = run_web_process(
        "import importlib\n"
        "from rlagent_project.wsgi import application\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n",
        tmp_path,
    )
    assert loaded["torch"] == [] and loaded["tasks"] == []


SERVE_EVERYTHING = """
from rlagent_project.wsgi import application
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.contrib.auth import get_user_model
from django.test import Client
from django.test.utils import setup_test_environment
from agent_app.api.auth import create_api_key
from agent_app.models import Checkpoint
from agent_app.services.schedule import set_training_interval
from tests import web_tour

setup_test_environment()  # responses carry their context (the admin's messages)
user = get_user_model().objects.create_superuser("operator", "operator@example.com", "pw")
browser = Client(SERVER_NAME="localhost", HTTP_AUTHORIZATION="Bearer " + create_api_key(name="tour")[1])
browser.force_login(user)
set_training_interval(60, username="operator")  # beat's "train" task, for the periodic task pages
checkpoint = Checkpoint.objects.create(version=1, steps_done=5, epsilon=0.5, path="/nowhere/v1.pth")
messages = []

def call(method, path, data, form):
    if method == "GET":
        response = browser.get(path)
    elif form:
        response = browser.post(path, data, follow=True)
        messages.extend(str(m) for m in response.context["messages"])
    else:
        response = browser.post(path, data, content_type="application/json")
    return response.status_code

statuses = web_tour.use_the_api(call, runs=1)
rows = web_tour.admin_rows()
statuses |= web_tour.visit_pages(call, rows)
statuses |= web_tour.operate(call, rows, [str(checkpoint.pk)])
OUT = {"statuses": statuses, "messages": messages}
"""


def test_every_page_and_endpoint_is_served_without_importing_torch(tmp_path):
    loaded = run_web_process(SERVE_EVERYTHING, tmp_path)
    statuses, messages = loaded["statuses"], loaded["messages"]
    assert loaded["torch"] == [] and loaded["tasks"] == []
    # Training and checkpoints went to the worker (none runs here), not into this process.
    assert statuses["POST /train #1"] == statuses["POST /save_model #1"] == 504
    assert statuses["POST /record_experience"] == 201 and statuses["POST /select_replica"] == 200
    for path in ("/stats", "/admin/", "/admin/dashboard/", "/metrics", "/api/schema/",
                 "/admin/agent_app/checkpoint/", "/admin/django_celery_beat/periodictask/"):
        assert statuses[f"GET {path}"] == 200, path
    assert any(key.startswith("GET /admin/django_celery_beat/periodictask/") and key.endswith("/change/")
               for key in statuses)
    assert len(statuses) > 80
    failures = {what: code for what, code in statuses.items() if code >= 500 and code != 504}
    assert failures == {}
    assert any(m.startswith("Rollback queued: the training worker did not answer") for m in messages)
    assert any(m.startswith("Training queued:") for m in messages)
    assert any(m.startswith("Deletion of checkpoint v1 queued:") for m in messages)
    assert (tmp_path / "var" / "results").is_dir()  # where the answers would have come back (embedded)


def _imports(path: Path) -> list[tuple[int, str, bool]]:
    """(line, module, inside a function) of each import in `path`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    functions = [f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)]
    nested = {id(node) for function in functions for node in ast.walk(function)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, id(node) in nested) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module, id(node) in nested))
    return found


def test_the_tasks_import_the_services_and_nothing_in_agent_app_imports_the_tasks():
    upward = [f"{path.relative_to(ROOT)}:{line}: {name}"
              for path in sorted((ROOT / "agent_app").rglob("*.py"))
              for line, name, _ in _imports(path) if name.split(".")[0] == "tasks"]
    assert upward == []
    tucked = [f"{path.relative_to(ROOT)}:{line}: {name}"
              for path in [*sorted((ROOT / "tasks").rglob("*.py")), ROOT / "agent_app/services/training.py",
                           ROOT / "agent_app/services/dispatch.py", ROOT / "agent_app/services/rollback.py"]
              for line, name, inside in _imports(path) if inside]
    assert tucked == []
