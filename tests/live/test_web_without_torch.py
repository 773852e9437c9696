"""The real web server (gunicorn, as the Procfile starts it) never maps torch, whatever it serves:
the API, /train and /save_model through the training worker, every admin page, a rollback, the
dashboard and its buttons, /metrics and the schema."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import psutil
import pytest
import requests

from tests import web_tour

pytestmark = pytest.mark.slow
PASSWORD = "correct-horse-battery-staple"
SET_UP_OPERATOR = f"""
from django.contrib.auth import get_user_model
from agent_app.services.schedule import set_training_interval
get_user_model().objects.create_superuser("operator", "operator@example.com", "{PASSWORD}")
set_training_interval(60, username="operator")  # beat's "train" task, for the periodic task pages
"""
ROWS = """
import html
import json
import re
from agent_app.models import Checkpoint
from tests.web_tour import admin_rows
checkpoints = Checkpoint.objects.order_by("version").values_list("pk", flat=True)
print(json.dumps({"rows": admin_rows(), "checkpoints": [str(pk) for pk in checkpoints]}))
"""


def torch_mapped(pid: int) -> list[str]:
    """The torch shared libraries in the process's address space (empty if it never imported torch)."""
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return sorted({line.split()[-1] for line in maps if "libtorch" in line})


def operator_session(stack) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {stack.api_key}"  # the API's key; the admin uses the login
    session.get(stack.url("/admin/login/"), timeout=30)
    answer = session.post(stack.url("/admin/login/?next=/admin/"), timeout=30, data={
        "username": "operator", "password": PASSWORD, "csrfmiddlewaretoken": session.cookies["csrftoken"],
    })
    assert answer.url == stack.url("/admin/"), answer.text[-2000:]
    return session


def test_gunicorn_workers_never_load_torch_while_serving_everything(live_stack_factory):
    # One web worker answers every request, so every endpoint provably ran in the process inspected.
    stack = live_stack_factory(WEB_CONCURRENCY="1", SECURE_COOKIES="false")
    stack.start("web")
    stack.start("worker")
    stack.manage("shell", "-c", SET_UP_OPERATOR)
    session, pages = operator_session(stack), []

    def call(method: str, path: str, data, form: bool) -> int:
        if method == "GET":
            return session.get(stack.url(path), timeout=60).status_code
        if not form:
            return session.post(stack.url(path), json=data, timeout=60).status_code
        answer = session.post(stack.url(path), timeout=60,
                              data={**data, "csrfmiddlewaretoken": session.cookies["csrftoken"]})
        pages.append(answer.text)
        return answer.status_code

    statuses = web_tour.use_the_api(call)
    assert set(statuses.values()) <= {200, 201}, statuses
    listed = json.loads(stack.manage("shell", "-c", ROWS).strip().splitlines()[-1])
    assert len(listed["checkpoints"]) == 2
    statuses |= web_tour.visit_pages(call, listed["rows"])
    statuses |= web_tour.operate(call, listed["rows"], listed["checkpoints"])
    assert {what: code for what, code in statuses.items() if code >= 500} == {}
    said = [html.unescape(m) for page in pages for m in re.findall(r'<li class="\w+">(.*?)</li>', page)]
    for outcome in ("Trained 2 step(s)", "written at", "is now served as model", "Deleted 1 checkpoint(s)"):
        assert any(outcome in message for message in said), (outcome, said)  # the worker did each

    web = psutil.Process(stack.procs["web"].pid)
    web_workers = web.children(recursive=True)
    assert len(web_workers) == 1
    for process in (web, *web_workers):
        assert torch_mapped(process.pid) == [], process.cmdline()
    # The check would see torch: the training worker has it mapped.
    celery = psutil.Process(stack.procs["worker"].pid)
    assert any(torch_mapped(p.pid) for p in (celery, *celery.children(recursive=True)))
    rss_mib = web_workers[0].memory_info().rss / 2**20
    print(f"gunicorn worker RSS after serving every endpoint: {rss_mib:.0f} MiB")
