"""The CLI writes a JSON report, tables and plots, and metrics summarise runs correctly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from simulator.cli import main
from simulator.engine import OK, REJECTED, Records
from simulator.metrics import aggregate, run_metrics, shift_metrics


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


def test_cli_rejects_unknown_names() -> None:
    with pytest.raises(SystemExit, match="unknown scenario"):
        main(["--scenario", "mars", "--quiet"])


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
