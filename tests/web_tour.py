"""Every page and endpoint a web worker serves, visited once: each route of the URLconf (admin
pages of one row per model), then the POSTs that record, train, checkpoint, roll back and delete.

Used in-process by Django's test client and against a live gunicorn; `call(method, path, data,
form)` sends one request (JSON body unless `form`) and returns its status code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from django.contrib import admin
from django.urls import NoReverseMatch, URLResolver, get_resolver, reverse

from tests.conftest import SEED_SELECT, random_experience

Call = Callable[[str, str, Any, bool], int]
SKIPPED = {"admin:view_on_site"}  # a redirect to a model's own site URL; no model here has one


def admin_rows() -> dict[str, str]:
    """{"app_model": pk of its first row} for every model in the admin that has a row."""
    rows = {}
    for model in admin.site._registry:
        pk = model._default_manager.order_by("pk").values_list("pk", flat=True).first()
        if pk is not None:
            rows[f"{model._meta.app_label}_{model._meta.model_name}"] = str(pk)
    return rows


def pages(rows: dict[str, str]) -> list[str]:
    """Each named route as a path; a route that takes an object gets the model's first row."""
    paths = []
    labels = sorted({model._meta.app_label for model in admin.site._registry})
    for name in _route_names(get_resolver().url_patterns):
        if name in SKIPPED:
            continue
        try:
            paths.append(reverse(name))
            continue
        except NoReverseMatch:
            pass
        if name == "admin:app_list":
            paths += [reverse(name, kwargs={"app_label": label}) for label in labels]
        elif name == "admin:agent_app_agentconfig_pool":  # a pool's configuration, by pool name
            paths.append(reverse(name, kwargs={"name": "default"}))
        elif name == "admin:auth_user_password_change" and "auth_user" in rows:
            paths.append(reverse(name, kwargs={"id": rows["auth_user"]}))
        elif (key := name.removeprefix("admin:").rsplit("_", 1)[0]) in rows:
            paths.append(reverse(name, kwargs={"object_id": rows[key]}))
    return paths


def _route_names(patterns: list, namespace: str = "") -> Iterator[str]:
    for entry in patterns:
        if isinstance(entry, URLResolver):
            inner = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
            yield from _route_names(entry.url_patterns, inner)
        elif entry.name:
            yield namespace + entry.name


def visit_pages(call: Call, rows: dict[str, str]) -> dict[str, int]:
    return {f"GET {path}": call("GET", path, None, False) for path in pages(rows)}


def use_the_api(call: Call, runs: int = 2) -> dict[str, int]:
    """Route, report enough to train on, then `runs` times: train and save (a checkpoint each)."""
    rng = np.random.default_rng(0)
    batch = {"experiences": [random_experience(rng) for _ in range(300)]}  # the default batch is 256
    statuses = {"POST /select_replica": call("POST", "/select_replica", SEED_SELECT, False),
                "POST /record_experience": call("POST", "/record_experience", batch, False)}
    for run in range(1, runs + 1):
        statuses[f"POST /train #{run}"] = call("POST", "/train?batch_size=32&iterations=5", None, False)
        statuses[f"POST /save_model #{run}"] = call("POST", "/save_model", None, False)
    return statuses


def operate(call: Call, rows: dict[str, str], checkpoint_ids: list[str]) -> dict[str, int]:
    """The operators' POSTs: dashboard buttons, a rollback, a periodic task run, a deletion."""
    statuses = {
        "POST dashboard train": call("POST", reverse("agent_dashboard_train"), {"iterations": "2"}, True),
        "POST dashboard checkpoint": call("POST", reverse("agent_dashboard_checkpoint"), {}, True),
    }
    checkpoints = reverse("admin:agent_app_checkpoint_changelist")
    statuses["POST admin rollback"] = call(
        "POST", checkpoints, {"action": "publish", "_selected_action": [checkpoint_ids[0]]}, True)
    if "django_celery_beat_periodictask" in rows:
        statuses["POST admin run periodic task"] = call(
            "POST", reverse("admin:django_celery_beat_periodictask_changelist"),
            {"action": "run_tasks", "_selected_action": [rows["django_celery_beat_periodictask"]]}, True)
    statuses["POST admin delete checkpoint"] = call(
        "POST", checkpoints, {"action": "delete_with_files", "_selected_action": [checkpoint_ids[-1]]}, True)
    return statuses
