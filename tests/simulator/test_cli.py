"""The CLI writes a JSON report, tables and plots, and metrics summarise runs correctly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from simulator.cli import main
from simulator.engine import OK, REJECTED, Records
from simulator.metrics import aggregate, run_metrics, shift_metrics
from simulator.report import best_baseline, format_markdown, format_table


def test_cli_writes_json_table_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc = main(["--scenario", "heterogeneous,outage", "--policies", "least_loaded,power_of_two",
               "--requests", "1500", "--seeds", "2", "--out", str(tmp_path)])
    assert rc == 0
    data = json.loads((tmp_path / "benchmark.json").read_text())
    assert data["config"]["seeds"] == [0, 1]
    summary = data["results"]["outage"]["policies"]["p2c"]
    assert summary["aggregate"]["seeds"] == 2 and len(summary["per_seed"]) == 2
    assert set(summary["aggregate"]["mean_ms"]) == {"mean", "std", "min", "max"}
    assert "shift" in summary
    out = capsys.readouterr()
    assert "== heterogeneous" in out.out and "100%" in out.err
    assert (tmp_path / "table.txt").exists() and (tmp_path / "table.md").exists()
    assert (tmp_path / "latency_cdf_outage.png").stat().st_size > 1000


def test_cli_replays_a_trace_at_each_load(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc = main(["--scenario", "trace:mooncake-synthetic", "--load", "0.75,0.9", "--policies",
               "least_loaded,oracle", "--requests", "400", "--seeds", "1", "--quiet",
               "--out", str(tmp_path)])
    assert rc == 0
    data = json.loads((tmp_path / "benchmark.json").read_text())
    assert list(data["results"]) == ["trace:mooncake-synthetic@0.75", "trace:mooncake-synthetic@0.9"]
    block = data["results"]["trace:mooncake-synthetic@0.9"]
    assert block["load"] == 0.9 and block["capacity_rps"] > 0
    ll = block["policies"]["least_loaded"]
    assert ll["kind"] == "baseline" and block["policies"]["oracle"]["kind"] == "oracle"
    for key in ("ttft_mean_ms", "ttft_p50_ms", "ttft_p99_ms", "mean_ms", "p50_ms", "p99_ms",
                "cache_hit_rate", "failure_rate"):
        assert key in ll["aggregate"]
    assert 0 < ll["aggregate"]["cache_hit_rate"]["mean"] < 1
    out = capsys.readouterr()
    assert "TTFT mean" in out.out and "best baseline: TTFT mean least_loaded" in out.out
    assert (tmp_path / "latency_cdf_trace_mooncake-synthetic@0.9.png").stat().st_size > 1000


def test_baselines_selects_every_policy_that_does_not_learn(capsys: pytest.CaptureFixture) -> None:
    assert main(["--scenario", "homogeneous", "--policies", "baselines", "--requests", "300",
                 "--seeds", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "least_loaded" in out and "oracle (oracle)" in out and "dqn" not in out


def test_baselines_combines_with_named_policies() -> None:
    from simulator.cli import _names
    from simulator.policies import POLICIES

    names = _names("baselines,dqn", [*POLICIES, "dqn"], "policy")
    assert names[-1] == "dqn" and set(names[:-1]) == set(POLICIES) and len(names) == len(set(names))


def test_cli_rejects_unknown_names() -> None:
    with pytest.raises(SystemExit, match="unknown scenario"):
        main(["--scenario", "mars", "--quiet"])
    with pytest.raises(SystemExit, match="--load"):
        main(["--scenario", "homogeneous", "--load", "most", "--quiet"])


def _summary(kind: str, mean_ms: float, ttft_ms: float) -> dict:
    stat = {"mean": 0.0, "std": 0.0, "min": 0.0, "max": 0.0}
    agg = {key: dict(stat) for key in ("ttft_mean_ms", "ttft_p50_ms", "ttft_p99_ms", "mean_ms",
                                        "p50_ms", "p99_ms", "failure_rate", "cache_hit_rate")}
    agg["mean_ms"]["mean"], agg["ttft_mean_ms"]["mean"] = mean_ms, ttft_ms
    agg.update(seeds=1, routed_share=[0.5, 0.5])
    return {"kind": kind, "aggregate": agg}


def test_best_baseline_is_the_best_non_learning_non_oracle_policy_per_column() -> None:
    policies = {"least_loaded": _summary("baseline", 900.0, 300.0),
                "cache_aware": _summary("baseline", 1000.0, 200.0),
                "oracle": _summary("oracle", 500.0, 100.0),
                "dqn": _summary("learner", 450.0, 90.0)}
    assert best_baseline(policies, "mean_ms") == (900.0, "least_loaded")
    assert best_baseline(policies, "ttft_mean_ms") == (200.0, "cache_aware")
    results = {"s": {"policies": policies}}
    table = format_table(results)
    assert "dqn (learns)" in table and "oracle (oracle)" in table
    assert "-50.0%" in table  # dqn's E2E mean against least_loaded's 900 ms
    assert "-55.0%" in table  # dqn's TTFT mean against cache_aware's 200 ms
    assert "| dqn (learns) |" in format_markdown(results)


def _records(latency: list[float], outcome: list[int], replica: list[int]) -> Records:
    n = len(latency)
    arrival = np.arange(n, dtype=float)
    return Records(arrival, arrival + np.array(latency) / 1000, np.array(latency, dtype=float),
                   np.array(replica, dtype=np.int16), np.array(outcome, dtype=np.int8))


def test_latency_metrics_ignore_failed_requests() -> None:
    rec = _records([100.0, 300.0, 5.0], [OK, OK, REJECTED], [0, 1, 1])
    m = run_metrics(rec, num_replicas=2)
    assert m["mean_ms"] == 200.0 and m["failure_rate"] == pytest.approx(1 / 3)
    assert m["routed_share"] == [pytest.approx(1 / 3, abs=1e-4), pytest.approx(2 / 3, abs=1e-4)]
    agg = aggregate([m, m])
    assert agg["mean_ms"] == {"mean": 200.0, "std": 0.0, "min": 200.0, "max": 200.0}


def test_shift_counts_requests_until_the_bad_replica_is_avoided() -> None:
    replica = [0, 1] * 500 + [1] * 30 + [0] * 470  # 50 % to replica 1, then it is avoided
    rec = _records([10.0] * 2000, [OK] * 2000, replica)
    shift = shift_metrics(rec, event_s=1000.0, bad_replica=1, window=20)
    assert shift["pre_share"] == pytest.approx(0.5)
    assert 30 < shift["requests_to_shift"] <= 50
