"""The scenario registry is complete and every scenario is a sensible, loaded cluster."""

from __future__ import annotations

import pytest

from simulator.scenarios import SCENARIOS, get_scenario

EXPECTED = {"homogeneous", "heterogeneous", "degradation", "outage", "burst", "many_replicas"}


def test_registry_has_every_named_scenario() -> None:
    assert set(SCENARIOS) == EXPECTED
    assert get_scenario("many_replicas").num_replicas == 8


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_scenario_is_documented_and_meaningfully_loaded(name: str) -> None:
    sc = get_scenario(name)
    assert sc.name == name and len(sc.description) > 30
    assert 0.5 <= sc.utilization <= 0.85
    cfg = sc.workload_config()
    assert cfg.rate_rps == pytest.approx(sc.utilization * sc.capacity_rps())
    assert len(sc.replica_specs()) == sc.num_replicas
    for event in sc.cluster_events(1000.0):
        assert 0 < event.at_s < 1000.0 and 0 <= event.replica < sc.num_replicas
    if sc.nonstationary:
        assert sc.bad_replica is not None and not sc.stationary().changes


def test_heterogeneous_replicas_differ_in_speed() -> None:
    speeds = get_scenario("heterogeneous").speeds
    assert max(speeds) / min(speeds) >= 3


def test_unknown_scenario_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="heterogeneous"):
        get_scenario("nope")
