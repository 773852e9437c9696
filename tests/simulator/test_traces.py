"""Trace files: both formats load, every kind of malformed row stops with the file and line,
and a replay keeps the trace's requests at the offered load asked for."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from simulator.replay import TRACE_DIR, replay, trace_rate
from simulator.scenarios import get_scenario
from simulator.trace_files import load_trace

AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_azure_csv_loads_with_seconds_from_the_first_request(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", AZURE_HEADER + "2023-11-16 18:17:03.9799600,4808,10\n"
                 "2023-11-16 18:17:04.0319600,3180,8\n2023-11-16 18:17:06,12,1\n")
    tr = load_trace(path)
    assert tr.arrival_s.tolist() == pytest.approx([0.0, 0.052, 2.02004])
    assert tr.prompt_tokens.tolist() == [4808, 3180, 12] and tr.output_tokens.tolist() == [10, 8, 1]
    assert tr.prefix_hashes is None  # no prefix information in this format


def test_mooncake_jsonl_loads_milliseconds_and_block_hashes(tmp_path: Path) -> None:
    path = write(tmp_path, "m.jsonl", jsonl([
        {"timestamp": 1000, "input_length": 600, "output_length": 5, "hash_ids": [0, 1]},
        {"timestamp": 1500, "input_length": 100, "output_length": 2, "hash_ids": [0]},
    ]) + "\n")
    tr = load_trace(path)
    assert tr.arrival_s.tolist() == [0.0, 0.5]
    assert tr.prefix_hashes == [(0, 1), (0,)]


def test_the_shipped_traces_load_whole() -> None:
    azure = load_trace(TRACE_DIR / "AzureLLMInferenceTrace_code.csv")
    mooncake = load_trace(TRACE_DIR / "mooncake_synthetic_trace.jsonl")
    assert len(azure) == 8819 and len(mooncake) == 3993
    assert (TRACE_DIR / "README.md").read_text().count("License") >= 2


AZURE_BAD = [
    ("TIMESTAMP,ContextTokens\n2023-11-16 18:17:03.97,5\n", 1, "missing column GeneratedTokens"),
    (AZURE_HEADER + "2023-11-16 18:17:03.97,5,1\n2023-11-16 18:17:04.0,5\n", 3, "expected 3 fields"),
    (AZURE_HEADER + "2023-11-16 18:17:03.97,5,abc\n", 2, "GeneratedTokens 'abc' is not an integer"),
    (AZURE_HEADER + "2023-11-16 18:17:03.97,4.5,1\n", 2, "ContextTokens '4.5' is not an integer"),
    (AZURE_HEADER + "2023-11-16 18:17:03.97,-3,1\n", 2, "ContextTokens -3 is negative"),
    (AZURE_HEADER + "yesterday,5,1\n", 2, "TIMESTAMP 'yesterday' is not a date and time"),
    (AZURE_HEADER + "2023-11-16 18:17:05.0,5,1\n2023-11-16 18:17:04.0,5,1\n", 3,
     "is earlier than the previous request's"),
    ("", 1, "empty file"),
    (AZURE_HEADER, 1, "no requests"),
]


@pytest.mark.parametrize(("text", "line", "message"), AZURE_BAD,
                         ids=["missing_column", "short_row", "non_numeric", "fraction", "negative",
                              "bad_timestamp", "backwards", "empty", "header_only"])
def test_malformed_azure_rows_name_file_and_line(tmp_path: Path, text: str, line: int,
                                                 message: str) -> None:
    path = write(tmp_path, "x.csv", text)
    with pytest.raises(ValueError, match=rf"x\.csv line {line}: .*{message}"):
        load_trace(path)


GOOD = {"timestamp": 0, "input_length": 10, "output_length": 2, "hash_ids": [1]}
MOONCAKE_BAD = [
    ('{"timestamp": 0, "input_length": 10,\n', "invalid JSON"),
    ('[1, 2, 3]\n', "expected a JSON object"),
    (json.dumps({"timestamp": 5, "output_length": 2}) + "\n", "missing key 'input_length'"),
    (json.dumps({**GOOD, "output_length": "many"}) + "\n", "output_length 'many' is not an integer"),
    (json.dumps({**GOOD, "input_length": -1}) + "\n", "input_length -1 is negative"),
    (json.dumps({**GOOD, "timestamp": "noon"}) + "\n", "timestamp 'noon' is not a number"),
    (json.dumps({**GOOD, "hash_ids": 7}) + "\n", "hash_ids 7 is not a list"),
    (json.dumps({**GOOD, "hash_ids": [1, "b"]}) + "\n", "hash_ids item 'b' is not an integer"),
    (json.dumps({**GOOD, "hash_ids": [1, 1]}) + "\n", "hash_ids repeats a block"),
    (json.dumps({**GOOD, "timestamp": -4}) + "\n", "timestamp -4 is negative"),
]


@pytest.mark.parametrize(("row", "message"), MOONCAKE_BAD,
                         ids=["bad_json", "not_object", "missing_key", "non_numeric", "negative",
                              "bad_timestamp", "hashes_not_list", "hash_not_int", "repeated_hash",
                              "negative_timestamp"])
def test_malformed_mooncake_rows_name_file_and_line(tmp_path: Path, row: str, message: str) -> None:
    path = write(tmp_path, "y.jsonl", json.dumps({**GOOD, "timestamp": 0}) + "\n\n" + row)
    with pytest.raises(ValueError, match=rf"y\.jsonl line 3: .*{message}"):
        load_trace(path)


def test_mooncake_timestamps_going_backwards_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "z.jsonl", jsonl([{**GOOD, "timestamp": 10}, {**GOOD, "timestamp": 9}]))
    with pytest.raises(ValueError, match=r"z\.jsonl line 2: timestamp 9 is earlier"):
        load_trace(path)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_trace(tmp_path / "nope.csv")


def test_replay_scales_time_to_the_requested_rate() -> None:
    tr = load_trace(TRACE_DIR / "mooncake_synthetic_trace.jsonl")
    wl = replay(tr, len(tr), seed=0, rate_rps=2.0)
    assert len(wl) / wl.duration_s == pytest.approx(2.0, rel=0.01)
    scale = trace_rate(tr) / 2.0
    assert np.allclose(wl.arrival_s, tr.arrival_s * scale)  # seed 0: the file from its start
    assert wl.prefix_hashes == tr.prefix_hashes
    assert np.array_equal(wl.prompt_tokens, tr.prompt_tokens)


def test_other_seeds_rotate_the_trace_and_laps_share_no_prefix() -> None:
    tr = load_trace(TRACE_DIR / "mooncake_synthetic_trace.jsonl")
    a, b = replay(tr, 5000, seed=1, rate_rps=2.0), replay(tr, 5000, seed=1, rate_rps=2.0)
    assert np.array_equal(a.arrival_s, b.arrival_s) and a.prefix_hashes == b.prefix_hashes
    assert np.all(np.diff(a.arrival_s) >= 0)
    assert not np.array_equal(a.prompt_tokens[:100], tr.prompt_tokens[:100])
    assert sorted(a.prompt_tokens[:len(tr)].tolist()) == sorted(tr.prompt_tokens.tolist())
    first = {h for hs in tr.prefix_hashes for h in hs}
    later = [hs for hs in a.prefix_hashes if hs and hs[0] not in first]
    assert later and all(not set(hs) & first for hs in later)


@pytest.mark.parametrize("name", ["trace:azure-code", "trace:mooncake-synthetic"])
@pytest.mark.parametrize("load", [0.75, 0.9])
def test_offered_load_is_the_requested_share_of_capacity(name: str, load: float) -> None:
    sc = get_scenario(name).at_load(load)
    wl = sc.workload(sc.default_requests, seed=2)
    assert sc.name == f"{name}@{load:g}"
    offered = len(wl) / wl.duration_s / sc.capacity_rps()
    assert offered == pytest.approx(load, rel=0.01)


def test_any_trace_file_is_a_scenario(tmp_path: Path) -> None:
    path = write(tmp_path, "mine.jsonl", jsonl(
        [{"timestamp": 100 * i, "input_length": 700, "output_length": 20, "hash_ids": [i % 3, 10 + i]}
         for i in range(200)]))
    sc = get_scenario(f"trace:{path}")
    assert sc.num_replicas == 4 and sc.default_requests == 200
    from simulator.runner import run_policy

    result = run_policy(sc, "least_loaded", None, seed=0)
    assert result.metrics["requests"] == 200 and result.metrics["failure_rate"] == 0.0
    assert result.metrics["cache_hit_rate"] > 0  # shared first blocks hit


def test_unknown_trace_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="trace:azure-code"):
        get_scenario("trace:nowhere.csv")
