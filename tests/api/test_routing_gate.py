"""The routing gate: least-loaded routes until the model's own decisions are measured better on live
traffic, then the model routes with a holdout, and hands back when it falls behind; on randomised
requests or, by default, on whole time blocks judged by the block each request was decided in."""

from __future__ import annotations

import pytest
from django.db import DatabaseError

from agent_app import replica_outcomes
from agent_app.decisions import decode_decision
from agent_app.models import AgentState, GateBlock
from agent_app.pools import DEFAULT_POOL
from agent_app.replica_outcomes import Outcome, OutcomeTally, gate_block_means
from agent_app.rl.gate import HEURISTIC, MODEL, block_arm, block_index
from agent_app.rl.state import normalize_state
from agent_app.services import routing
from agent_app.serving import policy_cache
from tests.conftest import SEED_SELECT
from tests.test_configuration import run_manage

pytestmark = pytest.mark.django_db


@pytest.fixture
def gate(settings):
    settings.RL_ROUTING_GATE = True
    # These tests count the arms of single requests, which only randomised assignment draws.
    settings.RL_GATE_ASSIGNMENT = "request"
    settings.RL_GATE_MIN_OUTCOMES = 30
    settings.RL_TRIAL_FRACTION = 0.5
    settings.RL_HOLDOUT_FRACTION = 0.1
    settings.RL_MIN_TRAINING_STEPS = 1


def decide(client, count: int) -> list[dict]:
    return [client.post("/select_replica", SEED_SELECT, format="json").json() for _ in range(count)]


def report(client, decisions: list[dict], model_ms: float, heuristic_ms: float) -> None:
    experiences = [{"decision_id": d["decision_id"], "replica_loads": [5, 3, 7], "success": True,
                    "latency_ms": heuristic_ms if d["policy"] == "least_loaded" else model_ms}
                   for d in decisions]
    assert client.post("/record_experience", {"experiences": experiences}, format="json").status_code == 201


def test_an_untrained_service_routes_least_loaded_and_never_explores(client, gate):
    decisions = decide(client, 50)
    assert {d["policy"] for d in decisions} == {"least_loaded"}
    assert all(d["replica_idx"] == 1 and not d["exploration"] for d in decisions)
    assert "no trained model yet" in decisions[0]["fallback_reason"]


def test_the_model_takes_over_once_measured_better_and_hands_back_when_worse(client, gate, fill):
    fill(300)
    assert client.post("/train?batch_size=64&iterations=50").status_code == 200
    decisions = decide(client, 200)
    tried = [d for d in decisions if d["policy"] != "least_loaded"]
    assert 60 <= len(tried) <= 140  # RL_TRIAL_FRACTION of the requests
    held = [d for d in decisions if d["policy"] == "least_loaded"]
    assert "measured better" in held[0]["fallback_reason"]
    assert client.get("/stats").json()["routing"]["routes"] == "heuristic"

    report(client, decisions, model_ms=100.0, heuristic_ms=3000.0)
    routing = client.get("/stats").json()["routing"]
    assert routing["routes"] == "model" and AgentState.load().router == "model"
    assert routing["evidence"]["model_lead"] > 0 and routing["arms"]["model"]["outcomes"] == len(tried)
    after = decide(client, 200)
    holdout = [d for d in after if d["policy"] == "least_loaded"]
    assert len(holdout) <= 40 and all(d["fallback_reason"].startswith("holdout") for d in holdout)

    report(client, after, model_ms=20_000.0, heuristic_ms=100.0)
    report(client, decide(client, 300), model_ms=20_000.0, heuristic_ms=100.0)
    assert client.get("/stats").json()["routing"]["routes"] == "heuristic"


def test_exploration_under_the_gate_stays_near_the_best_q(client, gate, fill, settings):
    fill(300)
    assert client.post("/train?batch_size=64&iterations=50").status_code == 200
    settings.RL_EXPLORATION_MARGIN = 0.0  # only replicas tied with the best may be explored
    settings.RL_MODEL_CANDIDATE_MARGIN = 1000.0  # any replica is a candidate
    decisions = [d for d in decide(client, 200) if d["policy"] == "explore"]
    network = policy_cache.snapshot.network
    # Each decision's own state: memory, CPU and the time of day move between requests.
    best = [int(network.q_values(normalize_state(d["state"], 3)).argmax()) for d in decisions]
    assert decisions and [d["replica_idx"] for d in decisions] == best


def test_the_model_chooses_among_the_heuristics_near_best_only(client, gate, fill, settings):
    fill(300)
    assert client.post("/train?batch_size=64&iterations=50").status_code == 200
    settings.RL_TRIAL_FRACTION = 1.0  # the model routes every request
    settings.RL_EXPLORATION = False
    body = {**SEED_SELECT, "replica_loads": [5, 3, 7]}
    # On loads alone the scorer rates them 3.33, 5 and 2.5: within 1 point of the best, replica 1 only.
    decisions = [client.post("/select_replica", body, format="json").json() for _ in range(20)]
    assert {(d["policy"], d["replica_idx"]) for d in decisions} == {("dqn", 1)}
    settings.RL_MODEL_CANDIDATE_MARGIN = 1000.0
    decisions = [client.post("/select_replica", body, format="json").json() for _ in range(20)]
    network = policy_cache.snapshot.network
    best = [int(network.q_values(normalize_state(d["state"], 3)).argmax()) for d in decisions]
    assert {d["policy"] for d in decisions} == {"dqn"}
    assert [d["replica_idx"] for d in decisions] == best


# --- block assignment (the default): one arm routes each time block ------------------------------

BLOCK_SECONDS = 60
FIRST_BLOCK = 2_000_000_000 // BLOCK_SECONDS  # the stopped clock's blocks start here
TRIAL, HOLDOUT = 0.1, 0.05
DECISIONS_PER_BLOCK = 4


class StoppedClock:
    """The decisions' and the outcome buckets' clock, moved by hand from block to block."""

    def __init__(self) -> None:
        self.now = FIRST_BLOCK * BLOCK_SECONDS + 1.0

    def __call__(self) -> float:
        return self.now

    def to(self, block: int, offset: float = 1.0) -> None:
        self.now = block * BLOCK_SECONDS + offset


@pytest.fixture
def clock(monkeypatch) -> StoppedClock:
    stopped = StoppedClock()
    monkeypatch.setattr(routing, "clock", stopped)
    monkeypatch.setattr(replica_outcomes, "clock", stopped)
    return stopped


@pytest.fixture
def blocks(settings):
    settings.RL_ROUTING_GATE = True
    settings.RL_GATE_ASSIGNMENT = "block"
    settings.RL_GATE_BLOCK_SECONDS = BLOCK_SECONDS
    settings.RL_GATE_MIN_BLOCKS = 3
    settings.RL_GATE_WINDOW_SECONDS = 10_800.0  # 180 blocks
    settings.RL_TRIAL_FRACTION, settings.RL_HOLDOUT_FRACTION = TRIAL, HOLDOUT
    settings.RL_MIN_TRAINING_STEPS = 1


@pytest.fixture
def trained(client, blocks, clock, fill):
    fill(300)
    assert client.post("/train?batch_size=64&iterations=50").status_code == 200


def blocks_of(arm: str, share: float, count: int, after: int = FIRST_BLOCK) -> list[int]:
    """The first `count` blocks from `after` on that `arm` routes when the model has `share` of them."""
    found = [b for b in range(after, after + 1000) if block_arm(b, share) == arm]
    return found[:count]


def decide_in(client, clock: StoppedClock, block: int) -> list[dict]:
    """Decisions spread over one block, its first and its last millisecond included."""
    step = (BLOCK_SECONDS - 0.001) / (DECISIONS_PER_BLOCK - 1)
    decisions = []
    for i in range(DECISIONS_PER_BLOCK):
        clock.to(block, i * step)
        decisions.append(client.post("/select_replica", SEED_SELECT, format="json").json())
    return decisions


def report_by_arm(client, decisions: list[dict], model_ms: float, heuristic_ms: float) -> None:
    """Each decision's outcome by the arm its id says decided it; latencies vary a little from block
    to block, so the block means have a spread."""
    experiences = []
    for d in decisions:
        decision = decode_decision(d["decision_id"])
        base = model_ms if decision.arm == MODEL else heuristic_ms
        spread = 1.0 + 0.05 * (block_index(decision.decided_at, BLOCK_SECONDS) % 4)
        experiences.append({"decision_id": d["decision_id"], "replica_loads": [5, 3, 7], "success": True,
                            "latency_ms": base * spread})
    assert client.post("/record_experience", {"experiences": experiences}, format="json").status_code == 201


def test_every_decision_of_a_block_is_routed_by_that_blocks_arm(client, trained, clock):
    arms = {}
    for block in range(FIRST_BLOCK, FIRST_BLOCK + 30):
        decoded = [decode_decision(d["decision_id"]) for d in decide_in(client, clock, block)]
        assert {d.arm for d in decoded} == {block_arm(block, TRIAL)}  # the same in every web worker
        assert {block_index(d.decided_at, BLOCK_SECONDS) for d in decoded} == {block}
        arms[block] = decoded[0].arm
    assert 2 <= list(arms.values()).count(MODEL) <= 4  # the trial's 10 % of 30 blocks


def test_the_model_takes_over_on_settled_blocks_filed_by_when_they_were_decided(client, trained, clock):
    model, heuristic = blocks_of(MODEL, TRIAL, 3), blocks_of(HEURISTIC, TRIAL, 3)
    decided = {block: decide_in(client, clock, block) for block in sorted(model + heuristic)}
    now = model[-1] + 1  # the last model block is the previous one: not settled yet
    assert now not in decided
    clock.to(now)
    decided[now] = decide_in(client, clock, now)  # the current block: never counts
    for decisions in decided.values():  # all reported now, most of them blocks later
        report_by_arm(client, decisions, model_ms=100.0, heuristic_ms=3000.0)

    routing_now = client.get("/stats").json()["routing"]  # its refresh flushes the reports
    filed = {(row.block, row.arm): row.count for row in GateBlock.objects.filter(seconds=BLOCK_SECONDS)}
    assert filed == {(block, block_arm(block, TRIAL)): DECISIONS_PER_BLOCK for block in decided}
    assert routing_now["routes"] == "heuristic"
    assert routing_now["arms"]["model"]["blocks"] == 2 and routing_now["arms"]["heuristic"]["blocks"] == 3
    assert "2 model and 3 heuristic blocks; 3 of each are needed" in routing_now["evidence"]["reason"]

    clock.to(now + 1)  # a whole block has passed since the last model block ended: it is settled
    routing_later = client.get("/stats").json()["routing"]
    assert routing_later["routes"] == "model" and AgentState.load().router == MODEL
    assert (routing_later["assignment"], routing_later["block_seconds"]) == ("block", BLOCK_SECONDS)
    arms = routing_later["arms"]
    assert arms["model"]["blocks"] == 3 and arms["heuristic"]["blocks"] == 3
    assert arms["model"]["mean_block_reward"] > arms["heuristic"]["mean_block_reward"]
    assert arms["model"]["outcomes"] == 3 * DECISIONS_PER_BLOCK + (
        DECISIONS_PER_BLOCK if block_arm(now, TRIAL) == MODEL else 0)  # per request, kept alongside
    assert routing_later["evidence"]["model_lead"] > 2 * routing_later["evidence"]["stderr"] > 0
    # The model leads: it routes all but the holdout's blocks.
    later = [decode_decision(d["decision_id"]).arm for d in decide_in(client, clock, now + 1)]
    assert set(later) == {block_arm(now + 1, 1.0 - HOLDOUT)}


def test_worse_model_blocks_hand_routing_back(client, trained, clock):
    assert AgentState.objects.filter(pool=DEFAULT_POOL).update(router=MODEL) == 1
    model, holdout = blocks_of(MODEL, 1.0 - HOLDOUT, 3), blocks_of(HEURISTIC, 1.0 - HOLDOUT, 3)
    for block in sorted(model + holdout):
        report_by_arm(client, decide_in(client, clock, block), model_ms=20_000.0, heuristic_ms=100.0)
    assert client.get("/stats").json()["routing"]["routes"] == "model"  # the last block is not settled
    clock.to(max(model + holdout) + 2)
    routing_now = client.get("/stats").json()["routing"]
    assert routing_now["routes"] == "heuristic" and AgentState.load().router == HEURISTIC
    assert routing_now["evidence"]["model_lead"] < -3 * routing_now["evidence"]["stderr"] < 0


def test_block_means_count_settled_blocks_of_the_configured_length_in_the_window(blocks, clock):
    clock.to(FIRST_BLOCK)
    rows = [
        (DEFAULT_POOL, BLOCK_SECONDS, FIRST_BLOCK - 2, MODEL, 2, 1.0),  # settled
        (DEFAULT_POOL, BLOCK_SECONDS, FIRST_BLOCK - 1, MODEL, 2, 2.0),  # the previous block
        (DEFAULT_POOL, BLOCK_SECONDS, FIRST_BLOCK, HEURISTIC, 2, 2.0),  # the current block
        (DEFAULT_POOL, BLOCK_SECONDS, FIRST_BLOCK - 3, HEURISTIC, 0, 0.0),  # no outcomes
        (DEFAULT_POOL, 30, 2 * FIRST_BLOCK - 10, HEURISTIC, 1, 1.0),  # another block length
        (DEFAULT_POOL, BLOCK_SECONDS, FIRST_BLOCK - 180, HEURISTIC, 4, 1.0),  # the window's first
        (DEFAULT_POOL, BLOCK_SECONDS, FIRST_BLOCK - 181, HEURISTIC, 1, 1.0),  # before the window
        ("other", BLOCK_SECONDS, FIRST_BLOCK - 5, MODEL, 1, -1.0),
    ]
    GateBlock.objects.bulk_create(GateBlock(pool=pool, seconds=seconds, block=block, arm=arm, count=count,
                                            reward_sum=total)
                                  for pool, seconds, block, arm, count, total in rows)
    assert gate_block_means([DEFAULT_POOL, "other"]) == {
        DEFAULT_POOL: {MODEL: [0.5], HEURISTIC: [0.25]}, "other": {MODEL: [-1.0]}}

    OutcomeTally().flush()  # a fresh tally prunes at its first flush: blocks ended before the window
    assert sorted(GateBlock.objects.values_list("seconds", "block")) == sorted(
        (seconds, block) for _, seconds, block, *_ in rows if block >= FIRST_BLOCK - 180)


def test_gate_blocks_add_up_across_flushes_and_stay_pending_on_a_database_error(blocks, clock, monkeypatch):
    tally = OutcomeTally()
    decided = Outcome(replica="replica-1", arm=MODEL, success=True, latency_ms=300.0, reward=0.5,
                      decided_at=clock.now - BLOCK_SECONDS)  # reported a block after its decision
    tally.add([decided, decided, Outcome(replica="replica-1", arm="", success=True, latency_ms=300.0,
                                         reward=0.5)])  # no decision_id: no arm, no block
    with monkeypatch.context() as broken:
        broken.setattr(replica_outcomes, "_add_sql", lambda *args: "INSERT INTO no_such_table VALUES (%s)")
        with pytest.raises(DatabaseError):
            tally.flush()
    assert not GateBlock.objects.exists()
    tally.add([decided])
    tally.flush()
    tally.add([decided])
    tally.flush()  # added to the row the first flush created
    assert list(GateBlock.objects.values_list("seconds", "block", "arm", "count", "reward_sum")) == [
        (BLOCK_SECONDS, FIRST_BLOCK - 1, MODEL, 4, 2.0)]


def test_request_assignment_files_no_gate_blocks(blocks, clock, settings):
    settings.RL_GATE_ASSIGNMENT = "request"
    tally = OutcomeTally()
    tally.add([Outcome(replica="replica-1", arm=MODEL, success=True, latency_ms=300.0, reward=0.5,
                       decided_at=clock.now)])
    tally.flush()
    assert not GateBlock.objects.exists()


def test_start_up_refuses_a_window_that_cannot_hold_the_blocks(tmp_path, settings):
    assert (settings.RL_GATE_ASSIGNMENT, settings.RL_GATE_WINDOW_SECONDS) == ("block", 10_800.0)  # defaults
    refused = run_manage("check", env={"RL_GATE_WINDOW_SECONDS": "3600"}, tmp_path=tmp_path)
    assert refused.returncode != 0
    assert "RL_GATE_WINDOW_SECONDS=3600" in refused.stderr and "RL_GATE_MIN_BLOCKS=8" in refused.stderr
    assert "8 x 60 / 0.05 = 9600 seconds" in refused.stderr
    read_window = "from django.conf import settings; print(settings.RL_GATE_WINDOW_SECONDS)"
    per_request = run_manage("shell", "-c", read_window, env={"RL_GATE_ASSIGNMENT": "request"},
                             tmp_path=tmp_path)
    assert per_request.returncode == 0, per_request.stderr
    assert per_request.stdout.strip().splitlines()[-1] == "1800.0"  # its own default, and no such limit
