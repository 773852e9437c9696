"""Hostile input: schemathesis against the OpenAPI schema the service serves at /api/schema/.

Every operation goes through every phase schemathesis has (examples, coverage, fuzzing, and
stateful: /select_replica's decision_id into /record_experience) with every check it ships: no
5xx; no status, body, header or content type the schema does not describe; schema-valid requests
accepted (a made-up decision_id is refused for its signature alone: see RAW_TOKEN_PHASE) and
schema-invalid ones refused. Once with a valid API key, once without one. In process
through the WSGI application, on the suite's backends (Postgres and Redis when they answer).

    .venv/bin/pytest tests/api/test_schema_fuzz.py        # prints the cases run per auth and phase
    FUZZ_MAX_EXAMPLES=1000 FUZZ_SEED=7 .venv/bin/pytest tests/api/test_schema_fuzz.py   # a longer run
"""

from __future__ import annotations

import os
import threading
import time

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from django.db import connections
from schemathesis.engine import Status, events, from_schema
from schemathesis.engine.statistic import Statistic
from schemathesis.generation.meta import TestPhase
from schemathesis.hooks import GLOBAL_HOOK_DISPATCHER
from schemathesis.specs.openapi.checks import positive_data_acceptance
from schemathesis.transport.wsgi import WSGITransport

from agent_app.api import serializers as io
from agent_app.api.fields import QueryIntegerField
from agent_app.rl.state import state_dim

pytestmark = pytest.mark.fuzz

# Fuzzing and stateful examples per operation; coverage and examples enumerate the schema.
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "60"))
SEED = int(os.environ.get("FUZZ_SEED", "20250101"))  # fixed: a failure here reproduces
# /train takes at most this many gradient steps of at most this batch size here (the schema says
# so too): 10,000 steps of 4096 would make the run slow, not more hostile.
FUZZ_MAX_ITERATIONS, FUZZ_MAX_BATCH_SIZE = 3, 64
PHASES = ("examples", "coverage", "fuzzing", "stateful")
OPERATIONS = {
    "POST /select_replica", "POST /record_experience", "POST /train", "POST /save_model", "GET /stats",
    "GET /model/weights", "GET /ab_results", "GET /health", "GET /ready",
}
# The phase that sends made-up decision_ids as generated. Coverage enumerates each constraint's
# edges (the empty string, the longest one, a character outside the pattern), so a constraint
# the schema states and validation does not, or the reverse, shows there; the other phases get
# real tokens, so that reports carrying one go on to be stored.
RAW_TOKEN_PHASE = TestPhase.COVERAGE
UNISSUED = "issued by this service"  # what every InvalidDecision message says (agent_app/decisions.py)
# Refusals of what JSON Schema cannot state: that replica names in a list are unique, how many
# loads a decision_id's cluster has (the token carries it), and that a batch's items name its pool.
UNSTATABLE = ("names must be unique", io.DECISION_LOADS, io.ONE_POOL_PER_BATCH)
raw_tokens_sent: set[str] = set()


def _closing_connections(app):
    """Schemathesis calls the app from worker threads: close their database connections after
    each request (Django keeps them CONN_MAX_AGE), or the test database cannot be dropped."""

    def wrapper(environ, start_response):
        response = app(environ, start_response)
        try:
            return list(response)
        finally:
            response.close()  # Django's request_finished
            if threading.current_thread() is not threading.main_thread():
                connections.close_all()

    return wrapper


def _send_without_socket_options(send):
    """schemathesis 4.32.5's `ignored_auth` probe hands requests-only options (max_redirects, ...)
    to the in-process WSGI client, which refuses them; in process they mean nothing."""

    def wrapper(self, case, *, session=None, **kwargs):
        if session is None:
            for name in ("max_redirects", "verify", "cert", "proxies"):
                kwargs.pop(name, None)
        return send(self, case, session=session, **kwargs)

    return wrapper


def _real_decision_ids(context, case, kwargs):
    """A decision_id is a token the service signs, so a schema-valid one is one it issued: give
    schema-valid reports a real one where they carry a made-up one (the stateful phase sends
    those /select_replica returned). Not in RAW_TOKEN_PHASE: see there."""
    from django.conf import settings

    from agent_app.decisions import InvalidDecision, decode_decision, encode_decision

    if case.operation.path != "/record_experience" or case.meta is None:
        return
    if case.meta.generation.mode.is_negative:
        return
    body, dim = case.body, state_dim(settings.NUM_REPLICAS)
    items = body.get("experiences", []) if isinstance(body, dict) else []
    for item in [body, *(items if isinstance(items, list) else [])]:
        if isinstance(item, dict) and isinstance(item.get("decision_id"), str):
            if case.meta.phase.name == RAW_TOKEN_PHASE:
                raw_tokens_sent.add(item["decision_id"])
                continue
            try:
                decode_decision(item["decision_id"])
            except InvalidDecision:
                item["decision_id"] = encode_decision(0, 0, [0.5] * dim)


def _refuses_only_unstatable(body: object, raw_tokens: bool, key: str | None = None) -> bool:
    """Whether every message of a 400's body (a batch's nested per item) refuses what the schema
    cannot state: a decision_id not issued by this service (`raw_tokens`: made-up tokens were
    sent), or one of UNSTATABLE."""
    if isinstance(body, dict):
        return bool(body) and all(_refuses_only_unstatable(value, raw_tokens, name)
                                  for name, value in body.items())
    if isinstance(body, list):
        messages = [item for item in body if item != {}]  # a batch's valid items have no errors
        return bool(messages) and all(_refuses_only_unstatable(item, raw_tokens, key) for item in messages)
    if not isinstance(body, str):
        return False
    return (raw_tokens and key == "decision_id" and UNISSUED in body) or any(s in body for s in UNSTATABLE)


@schemathesis.check
def accepts_valid_data_but_unissued_tokens(ctx, response, case):
    """schemathesis's positive_data_acceptance (switched off in run_schemathesis), except for what
    the schema cannot state: in RAW_TOKEN_PHASE a made-up decision_id may be refused as not issued
    here (its signature), and in any phase duplicate replica names or a decision's loads of another
    count (UNSTATABLE). Any other refusal of schema-valid data fails."""
    raw_tokens = case.meta is not None and case.meta.phase.name == RAW_TOKEN_PHASE
    if response.status_code == 400 and _refuses_only_unstatable(response.json(), raw_tokens):
        return None
    return positive_data_acceptance(ctx, response, case)


@pytest.fixture
def fuzz_target(transactional_db, monkeypatch):
    """The WSGI application on a fresh agent and an empty replay store, and a valid API key.

    Transactional: schemathesis's worker threads have database connections of their own, so
    they must see committed rows (the key), not the test's open transaction."""
    from agent_app.api.auth import create_api_key
    from agent_app.replay import get_replay_store
    from agent_app.services import training
    from agent_app.serving import policy_cache

    store = get_replay_store()
    store.clear()
    policy_cache.selections.clear()  # as the `client` fixture: counts are per test
    policy_cache._flushed.clear()
    monkeypatch.setattr(training, "_trainers", training.LocalTrainers())
    bounded = {"iterations": QueryIntegerField(min_value=1, max_value=FUZZ_MAX_ITERATIONS, default=1),
               "batch_size": QueryIntegerField(min_value=1, max_value=FUZZ_MAX_BATCH_SIZE, required=False)}
    for name, field in bounded.items():
        monkeypatch.setitem(io.TrainQuery._declared_fields, name, field)
    monkeypatch.setattr(WSGITransport, "send", _send_without_socket_options(WSGITransport.send))
    GLOBAL_HOOK_DISPATCHER.register_hook_with_name(_real_decision_ids, "before_call")
    raw_tokens_sent.clear()
    try:
        yield _closing_connections(get_wsgi_application()), create_api_key(name="fuzz")[1]
    finally:
        GLOBAL_HOOK_DISPATCHER.unregister(_real_decision_ids)
        store.clear()
        policy_cache.selections.clear()
        policy_cache._flushed.clear()


def run_schemathesis(app, headers: dict[str, str]) -> tuple[Statistic, dict[str, int], list[str]]:
    """schemathesis's engine (what `schemathesis run` drives): every phase, every check."""
    config = schemathesis.Config.from_dict({
        "seed": SEED,
        "workers": 1,
        "headers": headers,
        "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
        "checks": {"positive_data_acceptance": {"enabled": False}},  # accepts_valid_data_but_unissued_tokens
        "cache": {"enabled": False},  # no .schemathesis/ replaying an earlier run's requests
        # Two integer parameters, and each accepted case trains and publishes a model: fewer suffice.
        "operations": [{"include-path": "/train", "generation": {"max-examples": max(MAX_EXAMPLES // 4, 5)}}],
    })
    schema = schemathesis.openapi.from_wsgi("/api/schema/", app, config=config)
    statistic, cases, errors = Statistic(), dict.fromkeys(PHASES, 0), []
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            statistic.on_scenario_finished(event.recorder)
            cases[event.phase.value] += len(event.recorder.cases)
        elif isinstance(event, events.NonFatalError):
            errors.append(f"{event.label}: {event.info.title}: {event.info.message}")
        elif isinstance(event, events.FatalError):
            errors.append(repr(event.exception))
        elif isinstance(event, events.PhaseFinished) and event.status == Status.ERROR:
            errors.append(f"phase {event.phase.name.value} errored")
    return statistic, cases, errors


def describe(statistic: Statistic) -> str:
    lines = []
    for label, groups in statistic.failures.items():
        for group in groups.values():
            response = group.response
            got = f"{response.status_code} {response.content[:300]!r}" if response else "no response"
            lines += [f"{label}: {failure.title}: {failure.message}\n  {group.code_sample}\n  -> {got}"
                      for failure in group.failures]
    return "\n".join(lines)


@pytest.mark.parametrize("auth", ["api_key", "anonymous"])
def test_no_server_error_and_no_response_outside_the_schema(fuzz_target, auth, capsys, record_property):
    app, key = fuzz_target
    started = time.monotonic()
    statistic, cases, errors = run_schemathesis(
        app, {"Authorization": f"Bearer {key}"} if auth == "api_key" else {}
    )
    record_property("schemathesis_cases", cases)
    with capsys.disabled():
        print(f"\nschemathesis, {auth}: {sum(cases.values())} cases {cases} "
              f"in {time.monotonic() - started:.1f} s (seed {SEED}, max examples {MAX_EXAMPLES})")
    assert not errors, "\n".join(errors)
    assert not statistic.failures, describe(statistic)
    assert statistic.tested_operations == OPERATIONS
    assert all(cases[phase] for phase in PHASES), cases
    # The edges of decision_id's constraints went out as generated: a single character, and the
    # longest the schema allows (schemathesis's coverage phase stops one short of 32 768).
    assert min(map(len, raw_tokens_sent), default=None) == 1
    assert max(map(len, raw_tokens_sent)) >= io.MAX_DECISION_ID - 1
    assert sum(cases.values()) >= 1000, cases
