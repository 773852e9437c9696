"""Thousands of generated bodies: never a 5xx, and a refused body changes nothing."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent_app.models import AgentState
from tests.conftest import SEED_EXPERIENCE, SEED_SELECT

pytestmark = [pytest.mark.django_db, pytest.mark.fuzz]

numbers = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 0.5, 100, 101, 1e400, "nan", "1", True, False, None]),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=20)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=12), st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=30,
)


def mutated(base: dict) -> st.SearchStrategy:
    """The original specification's body with some fields replaced, dropped or added."""
    keys = sorted(base)
    return st.builds(
        lambda replace, drop, extra: {
            **{k: v for k, v in base.items() if k not in drop}, **replace, **extra,
        },
        st.dictionaries(st.sampled_from(keys), json_values, max_size=3),
        st.sets(st.sampled_from(keys), max_size=2),
        st.dictionaries(st.text(max_size=8), json_values, max_size=2),
    )


def state_of(store) -> tuple:
    agent = AgentState.load()
    return store.size(), agent.steps_done, agent.epsilon, agent.model_version


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.one_of(
    mutated(SEED_EXPERIENCE),
    json_values,
    st.builds(lambda items: {"experiences": items}, st.lists(mutated(SEED_EXPERIENCE), max_size=3)),
))
def test_record_experience_never_fails_and_refusals_change_nothing(client, store, body):
    before = state_of(store)
    response = client.generic("POST", "/record_experience", json.dumps(body, allow_nan=True),
                              content_type="application/json")
    assert response.status_code < 500, response.content
    if response.status_code != 201:
        assert response.status_code == 400
        assert state_of(store) == before
    else:
        assert state_of(store)[0] >= before[0]


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.one_of(mutated(SEED_SELECT), json_values))
def test_select_replica_answers_or_refuses_clearly(client, store, body):
    before = state_of(store)
    response = client.generic("POST", "/select_replica", json.dumps(body, allow_nan=True),
                              content_type="application/json")
    assert response.status_code in (200, 400), response.content
    if response.status_code == 200:
        assert 0 <= response.json()["replica_idx"] < 3
    assert state_of(store) == before
