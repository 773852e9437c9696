"""Bad input gets a 400 (413 for size) naming the field, and nothing is stored or changed."""

from __future__ import annotations

import json

import pytest
from django.test import override_settings

from agent_app.models import AgentState
from tests.conftest import SEED_EXPERIENCE, SEED_SELECT

pytestmark = pytest.mark.django_db


def snapshot(store):
    state = AgentState.load()
    return store.size(), state.steps_done, state.epsilon, state.model_version


def post_raw(client, path, raw: str):
    return client.generic("POST", path, raw, content_type="application/json")


BAD_EXPERIENCES = [
    ("state", {"state": [5, 3, 7]}),
    ("state", {"state": [5, 3, 7, 12, 0.28, 8.2, 0.98, 0.5, 0.4, 0.5, 1]}),
    ("state", {"state": [5, 3, 7, 12, 0.28, 8.2, 1.5, 0.5, 0.4, 0.5]}),
    ("state", {"state": [5, 3, "7", 12, 0.28, 8.2, 0.98, 0.5, 0.4, 0.5]}),
    ("state", {"state": "5,3,7"}),
    ("action", {"action": 3}),
    ("action", {"action": -1}),
    ("action", {"action": 1.5}),
    ("action", {"action": "1"}),
    ("action", {"action": True}),
    ("latency_ms", {"latency_ms": -5}),
    ("latency_ms", {"latency_ms": "265"}),
    ("latency_ms", {"latency_ms": "nan"}),
    ("success", {"success": "true"}),
    ("success", {"success": 1}),
    ("replica_loads", {"replica_loads": [5, 4]}),
    ("replica_loads", {"replica_loads": [5, -4, 7]}),
    ("replica_loads", {"replica_loads": None}),
    ("next_state", {"next_state": [1, 2]}),
    ("experience_id", {"experience_id": "has spaces"}),
    ("experience_id", {"experience_id": "x" * 200}),
    # Found by schemathesis (tests/api/test_schema_fuzz.py): DRF's RegexField took these.
    ("experience_id", {"experience_id": 42}),
    ("experience_id", {"experience_id": "retry-1\n"}),
    ("arm", {"arm": 0}),
    ("arm", {"arm": " rl"}),
]


@pytest.mark.parametrize(("field", "change"), BAD_EXPERIENCES)
def test_bad_experience_is_refused_naming_the_field(client, store, field, change):
    before = snapshot(store)
    response = client.post("/record_experience", {**SEED_EXPERIENCE, **change}, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert snapshot(store) == before


@pytest.mark.parametrize("field", ["latency_ms", "success", "replica_loads"])
def test_missing_field_is_named(client, store, field):
    body = {k: v for k, v in SEED_EXPERIENCE.items() if k != field}
    response = client.post("/record_experience", body, format="json")
    assert response.status_code == 400 and field in response.json()
    assert store.size() == 0


def test_an_integral_float_is_the_integer_json_schema_says_it_is(client, store):
    response = client.post("/record_experience", {**SEED_EXPERIENCE, "action": 1.0}, format="json")
    assert response.status_code == 201


def test_state_or_decision_required(client, store):
    body = {k: v for k, v in SEED_EXPERIENCE.items() if k not in ("state", "action")}
    response = client.post("/record_experience", body, format="json")
    assert response.status_code == 400
    assert set(response.json()) == {"state", "action"}


NUMERIC_FIELDS = [("/select_replica", SEED_SELECT, name) for name in SEED_SELECT] + [
    ("/record_experience", SEED_EXPERIENCE, name)
    for name in ("state", "action", "latency_ms", "replica_loads", "next_state")
]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
@pytest.mark.parametrize(("path", "base", "field"), NUMERIC_FIELDS, ids=[f[2] for f in NUMERIC_FIELDS])
def test_non_finite_numbers_are_refused_naming_the_field(client, store, literal, path, base, field):
    value = base[field] if field in base else base["state"]  # next_state: a vector like state
    # Python's json writes NaN/Infinity; 1e400 is replaced in as text (it would overflow to inf).
    marker = 123456.5
    bad = [marker, *value[1:]] if isinstance(value, list) else marker
    raw = json.dumps({**base, field: bad}).replace(str(marker), literal)
    before = snapshot(store)
    response = post_raw(client, path, raw)
    assert response.status_code == 400
    assert field in response.json()
    assert snapshot(store) == before


@pytest.mark.parametrize("index", range(10))
def test_non_finite_value_anywhere_in_the_state_is_named(client, store, index):
    state = list(SEED_EXPERIENCE["state"])
    state[index] = 0
    raw = json.dumps({**SEED_EXPERIENCE, "state": state})
    raw = raw.replace('"state": [' + ", ".join(json.dumps(v) for v in state),
                      '"state": [' + ", ".join("NaN" if i == index else json.dumps(v)
                                                for i, v in enumerate(state)))
    response = post_raw(client, "/record_experience", raw)
    assert response.status_code == 400
    assert f"[{index}]" in response.json()["state"][0]
    assert store.size() == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [("replica_loads", [1, 2]), ("replica_loads", [1, -2, 3]), ("queue_depth", -1),
     ("recent_latency_ms", "fast"), ("current_rps", None), ("success_rate", 1.01)],
)
def test_bad_select_request_is_refused_naming_the_field(client, field, value):
    response = client.post("/select_replica", {**SEED_SELECT, field: value}, format="json")
    assert response.status_code == 400 and field in response.json()


@pytest.mark.parametrize("raw", ["", "{", "[1, 2", "not json", '"a string"', "[]", "null"])
def test_malformed_bodies_get_400(client, store, raw):
    response = post_raw(client, "/record_experience", raw)
    assert response.status_code == 400
    assert store.size() == 0


def test_deeply_nested_body_gets_400(client, store):
    response = post_raw(client, "/record_experience", "[" * 100_000 + "]" * 100_000)
    assert response.status_code == 400
    assert store.size() == 0


def test_a_body_of_several_megabytes_gets_413_before_it_is_parsed(client, store):
    raw = json.dumps({"experiences": [SEED_EXPERIENCE] * 30_000})  # about 5 MB
    assert len(raw) > 4_000_000
    response = post_raw(client, "/record_experience", raw)
    assert response.status_code == 413 and "larger than" in response.json()["detail"]
    assert store.size() == 0


@override_settings(MAX_BODY_BYTES=4096)
def test_oversized_body_gets_413(client, store):
    huge = {"experiences": [SEED_EXPERIENCE] * 100}
    response = client.post("/record_experience", huge, format="json")
    assert response.status_code == 413
    assert "larger than" in response.json()["detail"]
    assert store.size() == 0


def test_batch_over_the_limit_is_refused(client, store):
    response = client.post("/record_experience", {"experiences": [SEED_EXPERIENCE] * 1001}, format="json")
    assert response.status_code == 400 and "experiences" in response.json()
    assert store.size() == 0


@pytest.mark.parametrize("query", ["batch_size=0", "batch_size=abc", "iterations=-1", "iterations=1e9",
                                   "iterations=", "batch_size=", "iterations=1_0", "iterations=%205"])
def test_bad_train_parameters_are_refused_and_nothing_trains(client, store, query):
    before = snapshot(store)
    response = client.post(f"/train?{query}")
    assert response.status_code == 400
    assert query.split("=")[0] in response.json()
    assert snapshot(store) == before
