"""The fast validation path never accepts what the serializers refuse, and gives what they give."""

from __future__ import annotations

import pytest
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.exceptions import ValidationError

from agent_app.api import serializers as io
from agent_app.api.fast_validation import plan_for, validate_many
from agent_app.decisions import encode_decision
from tests.conftest import SEED_EXPERIENCE, SEED_SELECT

EDGES = [0, 1, 2, 3, -1, 0.5, 1.0, 2.0, 3.0, 99.5, 1e6, 1e6 + 1, 1e7, 3_600_000, 3_600_001, 2**53 + 1,
         10**400, -0.0, float("nan"), float("inf"), True, False, None, "1", "nan", [], {}]
confused = st.sampled_from([True, False, "1", "0.5", None, [1]])  # not JSON numbers, though close
numbers = st.one_of(st.sampled_from(EDGES), confused, st.integers(-(10**20), 10**20),
                    st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 1), st.integers(0, 100))
strings = st.one_of(st.from_regex(r"\A[A-Za-z0-9._:-]{1,12}\Z"), st.text(max_size=12),
                    st.sampled_from(["", " a", "a ", "a\n", "x" * 129, "é", "a\x00b", "rl", "A-B"]))


def vectors(length: int, largest: int) -> st.SearchStrategy:
    valid = st.lists(st.floats(0, 1) | st.integers(0, largest), min_size=length, max_size=length)
    one_off = st.builds(lambda values, at, value: [*values[:at], value, *values[at + 1:]],
                        valid, st.integers(0, length - 1), numbers)
    return st.one_of(valid, one_off, st.lists(numbers, min_size=length - 1, max_size=length + 1), numbers,
                     strings)


def decision_ids() -> st.SearchStrategy:
    signed = st.builds(lambda action, version, loads: encode_decision(version, action, [*loads, 1, 0.2, 8, 1,
                                                                                         0.5, 0.4, 0.5]),
                       st.integers(0, 4), st.integers(0, 9), st.lists(st.integers(0, 99), min_size=3,
                                                                       max_size=3))
    tampered = signed.map(lambda token: token[:-2] + ("AA" if token[-2:] != "AA" else "BB"))
    return st.one_of(signed, tampered, strings, numbers)


FIELDS = {
    "replica_loads": vectors(3, 100), "queue_depth": numbers, "recent_latency_ms": numbers,
    "current_rps": numbers, "success_rate": numbers, "state": vectors(10, 1), "next_state": vectors(10, 1),
    "action": numbers, "latency_ms": numbers, "success": st.one_of(st.booleans(), numbers, strings),
    "experience_id": strings, "arm": strings, "decision_id": decision_ids(),
}


def mutated(base: dict, extra: tuple[str, ...] = ()) -> st.SearchStrategy:
    """`base` with a field or two replaced (by values of their kind, edge cases included) or dropped."""
    keys = sorted({*base, *extra})
    replaced = st.lists(st.sampled_from(keys), max_size=2, unique=True).flatmap(
        lambda chosen: st.fixed_dictionaries({key: FIELDS[key] for key in chosen}))
    return st.builds(
        lambda replace, drop: {**{k: v for k, v in base.items() if k not in drop}, **replace},
        replaced, st.sets(st.sampled_from(keys), max_size=1),
    )


def slow(serializer_class, data):
    serializer = serializer_class(data=data)
    return dict(serializer.validated_data) if serializer.is_valid() else None


def agree(serializer_class, bodies: list) -> None:
    fast = validate_many(plan_for(serializer_class), bodies)
    expected = [slow(serializer_class, body) for body in bodies]
    if fast is not None:  # the fast path may decline anything, but what it accepts must match
        assert all(e is not None for e in expected), (bodies, expected)
        assert fast == expected


SEARCH = settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.mark.fuzz
@SEARCH
@given(body=mutated(SEED_SELECT))
def test_select_bodies_agree_with_the_serializer(body):
    agree(io.SelectReplicaRequest, [body])


@pytest.mark.fuzz
@SEARCH
@given(body=mutated(SEED_EXPERIENCE, extra=("experience_id", "arm", "decision_id", "next_state")))
def test_experience_bodies_agree_with_the_serializer(body):
    agree(io.ExperienceRequest, [body])


@pytest.mark.fuzz
@SEARCH
@given(odd=st.lists(mutated(SEED_EXPERIENCE, extra=("experience_id", "arm", "next_state")), min_size=1,
                    max_size=3), where=st.integers(0, 8))
def test_batches_checked_at_once_agree_with_the_serializer(odd, where):
    bodies = [SEED_EXPERIENCE] * 6
    agree(io.ExperienceRequest, [*bodies[:where], *odd, *bodies[where:]])  # the columnar path: > 4 bodies


def test_the_usual_bodies_take_the_fast_path():
    token = encode_decision(4, 2, [5, 3, 7, 12, 0.28, 8.2, 0.98, 0.5, 0.4, 0.5])
    bodies = [SEED_EXPERIENCE, {**SEED_EXPERIENCE, "experience_id": "req-1:a", "arm": "rl",
                                "next_state": SEED_EXPERIENCE["state"]},
              {"decision_id": token, "latency_ms": 120, "success": False, "replica_loads": [1, 2, 3]}]
    assert validate_many(plan_for(io.SelectReplicaRequest), [SEED_SELECT]) == [slow(io.SelectReplicaRequest,
                                                                                      SEED_SELECT)]
    for many in (bodies, bodies * 3):  # checked inline, and as columns
        expected = [slow(io.ExperienceRequest, body) for body in many]
        assert validate_many(plan_for(io.ExperienceRequest), many) == expected
    assert validate_many(plan_for(io.ExperienceRequest), bodies)[2]["action"] == 2


def test_a_bad_body_still_gets_the_serializers_400_naming_the_field():
    with pytest.raises(ValidationError) as refused:
        io.SelectReplicaRequest.validated({**SEED_SELECT, "replica_loads": [5, 3, float("nan")]})
    assert "replica_loads" in refused.value.detail
    with pytest.raises(ValidationError) as refused:
        io.ExperienceBatchRequest.validated({"experiences": [SEED_EXPERIENCE] * 7 + [{**SEED_EXPERIENCE,
                                                                                     "action": 3}]})
    assert "action" in str(refused.value.detail["experiences"])


def test_bounds_follow_the_replica_count_under_override_settings():
    body = {**SEED_SELECT, "replica_loads": [1, 2, 3, 4]}
    with override_settings(NUM_REPLICAS=4, REPLICA_NAMES=["a", "b", "c", "d"]):
        assert io.SelectReplicaRequest.validated(body)["replica_loads"] == [1.0, 2.0, 3.0, 4.0]
        with pytest.raises(ValidationError):
            io.SelectReplicaRequest.validated(SEED_SELECT)
    with pytest.raises(ValidationError):
        io.SelectReplicaRequest.validated(body)


replica_entries = st.fixed_dictionaries(
    {"name": st.one_of(st.sampled_from(["gpu-0", "gpu-1", "gpu-0"]), strings)},
    optional={"load": numbers, "running": numbers, "waiting": numbers, "kv_cache_usage": numbers,
              "other": numbers},
)


@given(st.one_of(st.lists(replica_entries, max_size=4), st.lists(numbers, max_size=2), numbers))
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_plain_replica_pass_gives_what_the_checked_one_gives(data):
    from agent_app.api.cluster_fields import ReplicaListField, _plain_replicas

    plain = _plain_replicas(data)
    try:
        checked = ReplicaListField._checked(data)
    except ValidationError:
        checked = None
    if plain is not None:  # it never accepts what the checks refuse, nor gives anything else
        assert plain == checked
