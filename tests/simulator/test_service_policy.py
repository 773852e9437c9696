"""The gateway the simulator plays through the API: its training cadence, with a fake service."""

from __future__ import annotations

import pytest

from simulator.service_policy import ServicePolicy


class FakeResponse:
    def __init__(self, body: dict, status_code: int = 200) -> None:
        self.body, self.status_code = body, status_code

    def json(self) -> dict:
        return self.body

    def raise_for_status(self) -> None:
        assert self.status_code < 400


class FakeService:
    """Answers /select_replica, /record_experience and /train; remembers every /train's params."""

    def __init__(self) -> None:
        self.headers: dict = {}
        self.trains: list[dict] = []
        self.selects: list[dict] = []
        self.steps = 0

    def post(self, url: str, json: dict | None = None, params: dict | None = None,
             timeout: float = 0) -> FakeResponse:
        if url.endswith("/select_replica"):
            self.selects.append(json)
            return FakeResponse({"policy": "dqn", "decision_id": f"d{len(self.trains)}", "replica_idx": 0})
        if url.endswith("/record_experience"):
            return FakeResponse({"rewards": [0.5] * len(json["experiences"])}, 201)
        self.trains.append(dict(params))
        self.steps += params["iterations"]
        return FakeResponse({"epsilon": 0.5, "steps_done": self.steps, "model_version": len(self.trains)})


class Context:
    num_replicas = 3

    def __init__(self) -> None:
        self.state = [0.0] * 10

    def raw_state(self) -> list[float]:
        return self.state


def route(policy: ServicePolicy, context: Context, n: int) -> None:
    for _ in range(n):
        context.state = [0.0] * 10  # a new list per decision, as the engine makes
        action = policy.choose({}, None)
        policy.observe({"state": context.state, "action": action, "latency_ms": 100.0,
                        "success": True, "replica_loads": [1, 0, 0]})


def make_policy(**kwargs) -> tuple[ServicePolicy, FakeService, Context]:
    policy = ServicePolicy("http://service", "key", **kwargs)
    service = policy.http = FakeService()
    context = Context()
    policy.start(context)
    return policy, service, context


def test_steps_per_experience_are_iterations_over_train_every_whatever_the_report_batch() -> None:
    # 16x8 is 0.5 steps per experience; reports go out 32 at a time, so each flush is due
    # two trainings' worth of steps (it once got 8, 0.25 per experience).
    policy, service, context = make_policy(train_every=16, iterations=8, report_batch=32)
    route(policy, context, 3200)
    assert policy.reported == 3200
    assert service.steps == 3200 * 8 // 16
    assert all(t["iterations"] == 16 for t in service.trains)


def test_a_report_batch_smaller_than_train_every_trains_once_per_boundary() -> None:
    policy, service, context = make_policy(train_every=16, iterations=8, report_batch=10)
    route(policy, context, 160)
    assert service.steps == 160 * 8 // 16
    assert [t["iterations"] for t in service.trains] == [8] * 10


def test_eval_mode_decides_without_reporting_or_training() -> None:
    policy, service, context = make_policy(train_every=16, iterations=8, report_batch=32)
    route(policy, context, 40)  # 32 reported, 8 pending
    policy.set_mode("eval")  # flushes the 8
    steps = service.steps
    route(policy, context, 100)
    assert policy.reported == 40 and service.steps == steps


BODY = {"replica_loads": [1, 0, 2], "queue_depth": 0.0, "recent_latency_ms": 10.0, "current_rps": 1.0,
        "success_rate": 1.0,
        "replicas": [{"name": "r0", "load": 1, "running": 1, "waiting": 0, "kv_cache_usage": 0.1,
                      "extra": 3}],
        "request": {"prompt_tokens": 10, "max_tokens": 5, "prefix_hashes": [1]}}


def test_the_named_body_is_sent_with_only_the_fields_the_service_reads() -> None:
    policy, service, context = make_policy()
    policy.choose(BODY, None)
    extras = {k: BODY[k] for k in ("queue_depth", "recent_latency_ms", "current_rps", "success_rate")}
    assert service.selects == [{**extras, "replicas": [{"name": "r0", "load": 1, "running": 1, "waiting": 0,
                                                        "kv_cache_usage": 0.1}],
                                "request": {"prompt_tokens": 10, "max_tokens": 5,
                                            # each simulator block as the 8 hashes a gateway sends for it
                                            "prefix_hashes": [f"1-{k}" for k in range(8)]}}]
    assert "replicas" in BODY and "extra" in BODY["replicas"][0]  # the caller's body is left as it was


def test_the_original_body_is_sent_when_asked() -> None:
    policy, service, context = make_policy(named=False)
    policy.choose(BODY, None)
    assert service.selects == [{k: BODY[k] for k in list(BODY)[:5]}]


def test_a_service_started_on_demand_gets_the_scenarios_replica_count_once() -> None:
    started: list[int] = []

    def launch(num_replicas: int) -> tuple[str, str]:
        started.append(num_replicas)
        return "http://fresh/", "k2"

    policy = ServicePolicy(None, None, connect=launch, named=False)
    policy.http = FakeService()
    context = Context()
    context.num_replicas = 4  # the trace fleet
    policy.start(context)  # training run
    policy.start(context)  # evaluation run: the same service
    assert started == [4] and policy.base_url == "http://fresh"
    assert policy.http.headers["Authorization"] == "Bearer k2"
    route(policy, context, 3)
    context.num_replicas = 3
    with pytest.raises(ValueError, match="4 replicas; this run has 3"):
        policy.start(context)
    with pytest.raises(ValueError, match="connect"):
        ServicePolicy(None, None)


def test_simulate_through_api_starts_each_service_with_the_scenarios_replica_count(
        monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from agent_app.management.commands import simulate

    made: list = []

    class FakeStack:
        api_key = "key"

        def __init__(self, folder, use_services: bool, port: int | None = None, **env: str) -> None:
            self.env, self.started, self.closed, self.tmp_path = env, [], False, folder
            made.append(self)

        def start(self, name: str) -> None:
            self.started.append(name)

        def url(self, path: str) -> str:
            return "http://stack" + path

        def close(self) -> None:
            self.closed = True

    monkeypatch.setattr(simulate, "LiveStack", FakeStack)
    monkeypatch.setattr(simulate, "services_reachable", lambda: False)
    monkeypatch.setattr(simulate.tempfile, "mkdtemp", lambda prefix: str(tmp_path))
    with simulate.Command()._factory(100, 16, 8)(seed=0) as policy:
        assert made == []  # not before the run says how many replicas it has
        context = Context()
        context.num_replicas = 4
        policy.start(context)
        policy.start(context)
    assert len(made) == 1 and made[0].env == {"NUM_REPLICAS": "4", "REPLICA_NAMES": "r0,r1,r2,r3",
                                              "WEB_CONCURRENCY": "1"}
    assert made[0].started == ["web", "worker"] and made[0].closed
