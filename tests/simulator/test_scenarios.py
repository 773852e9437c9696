"""The scenario registry is complete and every scenario is a sensible, loaded cluster."""

from __future__ import annotations

import pytest

from simulator.scenarios import SCENARIOS, get_scenario

EXPECTED = {"homogeneous", "heterogeneous", "degradation", "outage", "burst", "many_replicas",
            "trace:azure-code", "trace:mooncake-synthetic", "hetero_4", "hetero_8", "hetero_16",
            "hetero_32", "homogeneous_16", "scale_out", "scale_in"}


def test_registry_has_every_named_scenario() -> None:
    assert set(SCENARIOS) == EXPECTED
    assert get_scenario("many_replicas").num_replicas == 8


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_scenario_is_documented_and_meaningfully_loaded(name: str) -> None:
    sc = get_scenario(name)
    assert sc.name == name and len(sc.description) > 30
    # Load is set against the final cluster: scale_out's first 4 run at ~70 % (35 % of the 8),
    # scale_in's first 8 at ~48 % (70 % of the final 5).
    assert 0.5 <= max(sc.utilization, sc.stationary().utilization) <= 0.85
    assert min(sc.utilization, sc.stationary().utilization) >= 0.35
    cfg = sc.workload_config()
    assert cfg.rate_rps == pytest.approx(sc.utilization * sc.capacity_rps())
    assert len(sc.replica_specs()) == sc.num_replicas
    for event in sc.cluster_events(1000.0):
        assert 0 < event.at_s < 1000.0 and 0 <= event.replica < sc.num_replicas
    if sc.nonstationary and not sc.absent and not any(c[1] == "leave" for c in sc.changes):
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


@pytest.mark.parametrize("n", [4, 8, 16, 32])
def test_mixed_clusters_have_three_speed_classes_with_matching_batch_limits(n: int) -> None:
    sc = get_scenario(f"hetero_{n}")
    specs = sc.replica_specs()
    assert len(specs) == n and {s.speed for s in specs} == {1.0, 0.6, 0.3}
    assert all(s.max_batch == {1.0: 32, 0.6: 20, 0.3: 10}[s.speed] for s in specs)
    assert sc.utilization == 0.70 and not sc.nonstationary


def test_homogeneous_16_is_sixteen_identical_replicas() -> None:
    specs = get_scenario("homogeneous_16").replica_specs()
    assert len(specs) == 16 and len({(s.speed, s.max_batch) for s in specs}) == 1


def test_scale_out_starts_as_hetero_4_and_sets_its_load_against_the_final_eight() -> None:
    sc = get_scenario("scale_out")
    assert sc.absent == (4, 5, 6, 7) and sc.final_members() == list(range(8))
    assert sc.capacity_rps() == pytest.approx(get_scenario("hetero_8").capacity_rps())
    start = sc.stationary()  # what a learner trains on: the first 4, busy but not overloaded
    assert start.final_members() == [0, 1, 2, 3] and not start.changes
    assert start.utilization == pytest.approx(0.70, abs=0.01)
    assert start.workload_config().rate_rps == pytest.approx(sc.workload_config().rate_rps)
    assert [(e.kind, e.replica) for e in sc.cluster_events(100.0)] == [("join", i) for i in range(4, 8)]


def test_scale_in_drops_three_of_eight_and_five_carry_the_load() -> None:
    sc = get_scenario("scale_in")
    assert sc.absent == () and sc.final_members() == [0, 1, 2, 3, 4]
    assert {e.kind for e in sc.cluster_events(100.0)} == {"leave"}
    assert sc.utilization == 0.70 and sc.stationary().utilization < 0.5
