"""The client's configuration from the environment, its heuristics and the circuit breaker."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rlagent_client import CircuitBreaker, ClientConfig, RoundRobin, least_loaded, power_of_two
from rlagent_client.fallback import CLOSED, HALF_OPEN, OPEN, make_heuristic
from simulator.live_service import ROOT


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_use_rl_agent_false_or_unset_means_heuristic_mode():
    assert ClientConfig.from_env({}).mode == "heuristic"
    assert ClientConfig.from_env({"USE_RL_AGENT": "false", "RL_AGENT_MODE": "canary"}).mode == "heuristic"
    assert ClientConfig.from_env({"USE_RL_AGENT": "true"}).mode == "rl"


def test_from_env_reads_every_rl_agent_variable():
    config = ClientConfig.from_env({
        "USE_RL_AGENT": "true", "RL_AGENT_URL": "http://rl-agent:5000", "RL_AGENT_API_KEY": "rlk_x",
        "RL_AGENT_MODE": "canary", "RL_AGENT_INFERENCE": "local", "RL_AGENT_TIMEOUT_MS": "20",
        "RL_AGENT_CANARY_PERCENT": "12.5", "RL_AGENT_HEURISTIC": "power_of_two",
        "RL_AGENT_BREAKER_FAILURES": "3", "RL_AGENT_BREAKER_COOLDOWN_SECONDS": "1.5",
        "RL_AGENT_REPORT": "false", "RL_AGENT_REPORT_QUEUE": "100", "RL_AGENT_REPORT_BATCH": "50",
        "RL_AGENT_REPORT_INTERVAL_MS": "20", "RL_AGENT_WEIGHTS_REFRESH_SECONDS": "0.5",
        "RL_AGENT_LOCAL_EPSILON": "0.05", "RL_AGENT_REPLICA_NAMES": "a, b,c", "RL_AGENT_POOL": "llama-70b",
    })
    assert (config.url, config.api_key, config.mode, config.inference) == (
        "http://rl-agent:5000", "rlk_x", "canary", "local")
    assert (config.timeout_s, config.canary_percent, config.heuristic) == (0.02, 12.5, "power_of_two")
    assert (config.breaker_failures, config.breaker_cooldown_s, config.report) == (3, 1.5, False)
    assert (config.report_queue_size, config.report_batch_size, config.report_interval_ms) == (100, 50, 20)
    assert (config.weights_refresh_s, config.local_epsilon) == (0.5, 0.05)
    assert config.replica_names == ("a", "b", "c") and config.pool == "llama-70b"
    assert ClientConfig.from_env({"USE_RL_AGENT": "1"}, timeout_ms=80).timeout_ms == 80


@pytest.mark.parametrize("variable, value", [
    ("RL_AGENT_URL", "rl-agent:5000"), ("RL_AGENT_MODE", "ab"), ("RL_AGENT_TIMEOUT_MS", "fast"),
    ("RL_AGENT_TIMEOUT_MS", "0"), ("RL_AGENT_CANARY_PERCENT", "101"), ("RL_AGENT_REPORT_BATCH", "5000"),
    ("RL_AGENT_BREAKER_FAILURES", "2.5"), ("USE_RL_AGENT", "maybe"), ("RL_AGENT_INFERENCE", "gpu"),
    ("RL_AGENT_POOL", "llama/70b"),
])
def test_a_bad_value_is_refused_with_the_variable_named(variable, value):
    with pytest.raises(ValueError, match=variable):
        ClientConfig.from_env({"USE_RL_AGENT": "true", variable: value})


def test_heuristics():
    assert least_loaded([5, 3, 7]) == 1
    assert {least_loaded([1, 4, 1]) for _ in range(200)} == {0, 2}  # ties broken at random
    robin = RoundRobin()
    assert [robin([9, 9, 9]) for _ in range(4)] == [0, 1, 2, 0]
    assert {power_of_two([0, 50, 100]) for _ in range(300)} == {0, 1}  # the worst replica never wins
    with pytest.raises(ValueError, match="RL_AGENT_HEURISTIC"):
        make_heuristic("fastest")


def test_breaker_opens_after_k_consecutive_failures():
    breaker = CircuitBreaker(failures=3, cooldown_s=10, clock=FakeClock())
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    breaker.record_success()  # a success in between resets the count
    for _ in range(3):
        assert breaker.state == CLOSED and breaker.allow()
        breaker.record_failure()
    assert breaker.state == OPEN
    assert not breaker.allow() and not breaker.allow()
    assert breaker.snapshot()["rejected"] == 2 and breaker.opened == 1


def test_breaker_lets_one_probe_through_after_the_cooldown_and_closes_on_its_success():
    clock = FakeClock()
    breaker = CircuitBreaker(failures=1, cooldown_s=5, clock=clock)
    breaker.allow()
    breaker.record_failure()
    clock.now += 4.9
    assert not breaker.allow()
    clock.now += 0.2
    assert breaker.state == HALF_OPEN
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # only one at a time
    breaker.record_success()
    assert breaker.state == CLOSED and breaker.allow() and breaker.allow()


def test_a_failed_probe_opens_the_circuit_for_another_cooldown():
    clock = FakeClock()
    breaker = CircuitBreaker(failures=2, cooldown_s=5, clock=clock)
    for _ in range(2):
        breaker.allow()
        breaker.record_failure()
    clock.now += 5
    assert breaker.allow()
    breaker.record_failure()  # one failed probe is enough, whatever K is
    assert breaker.state == OPEN and not breaker.allow()
    clock.now += 5
    assert breaker.allow()
    assert breaker.opened == 2


def test_the_client_imports_without_django_or_torch():
    code = ("import sys, rlagent_client, rlagent_client.client; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('django', 'torch', 'rest_framework')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
