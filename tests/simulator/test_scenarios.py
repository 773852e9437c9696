"""The scenario registry is complete and every scenario is a sensible, loaded cluster."""

from __future__ import annotations

import pytest

from simulator.scenarios import SCENARIOS, get_scenario

EXPECTED = {"homogeneous", "heterogeneous", "degradation", "outage", "burst", "many_replicas",
            "trace:azure-code", "trace:mooncake-synthetic"}


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


def test_trace_fleet_mixes_gpu_generations_and_older_ones_hold_less() -> None:
    specs = get_scenario("trace:mooncake-synthetic").replica_specs()
    assert len(specs) == 4 and len({s.gpu for s in specs}) == 3
    rates = [s.prefill_rate() for s in specs]
    assert max(rates) / min(rates) >= 3  # prefill (compute) differs more than decode
    newest, oldest = specs[0], specs[-1]
    assert oldest.kv_blocks < newest.kv_blocks and oldest.base_tps * oldest.speed < newest.base_tps
    # the biggest request of the trace fits even the smallest memory
    assert oldest.kv_blocks * 512 > 191_378 + 1000


def test_unknown_scenario_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="heterogeneous"):
        get_scenario("nope")
