"""Read public LLM request traces: Azure's CSV and Mooncake's JSONL, strictly.

A malformed row stops the load with an error naming the file and the line, so a replay never
runs on half a trace.
"""

from __future__ import annotations

import calendar
import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
MOONCAKE_KEYS = ("timestamp", "input_length", "output_length")


@dataclass(frozen=True)
class Trace:
    """Requests of a trace file in arrival order; times in seconds from its first request."""

    path: str
    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    prefix_hashes: list[tuple[int, ...]] | None  # None: the format has no prefix information

    def __len__(self) -> int:
        return int(self.arrival_s.shape[0])


class TraceError(ValueError):
    """A trace file that cannot be replayed: names the file and the line."""

    def __init__(self, path: str, line: int, message: str) -> None:
        super().__init__(f"{path} line {line}: {message}")


def load_trace(path: str | Path) -> Trace:
    """Load an Azure CSV (``.csv``) or a Mooncake JSONL (``.jsonl``/``.json``) trace."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no trace file at {path}")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return load_azure(path)
    if suffix in (".jsonl", ".json"):
        return load_mooncake(path)
    with path.open(encoding="utf-8") as fh:
        first = fh.read(1)
    return load_mooncake(path) if first == "{" else load_azure(path)


def _integer(path: str, line: int, name: str, text: object) -> int:
    """A non-negative integer from a CSV cell or a JSON value (bools and 1.5 are not)."""
    if isinstance(text, bool) or isinstance(text, float) and not text.is_integer():
        raise TraceError(path, line, f"{name} {text!r} is not an integer")
    try:
        value = int(text.strip()) if isinstance(text, str) else int(text)
    except (TypeError, ValueError):
        raise TraceError(path, line, f"{name} {text!r} is not an integer") from None
    if value < 0:
        raise TraceError(path, line, f"{name} {value} is negative")
    return value


def _azure_time(path: str, line: int, text: str, cache: dict[str, float]) -> float:
    """Seconds of ``2023-11-16 18:17:03.9799600`` (7 fractional digits: more than %f takes)."""
    whole, _, frac = text.strip().partition(".")
    base = cache.get(whole)
    if base is None:
        try:
            base = float(calendar.timegm(time.strptime(whole, "%Y-%m-%d %H:%M:%S")))
        except ValueError:
            raise TraceError(path, line, f"TIMESTAMP {text!r} is not a date and time like "
                                         "'2023-11-16 18:17:03.9799600'") from None
        cache[whole] = base
    if frac and not frac.isdigit():
        raise TraceError(path, line, f"TIMESTAMP {text!r} has a malformed fraction of a second")
    return base + (float("0." + frac) if frac else 0.0)


def _check_order(path: str, line: int, name: str, previous: float, current: float,
                 shown: object) -> None:
    # A replay takes arrivals in file order; a step back is a concatenation or sorting mistake.
    if current < previous:
        raise TraceError(path, line, f"{name} {shown!r} is earlier than the previous request's")


def load_azure(path: str | Path) -> Trace:
    """Azure LLM inference trace: CSV ``TIMESTAMP,ContextTokens,GeneratedTokens``."""
    name = str(path)
    times: list[float] = []
    prompt: list[int] = []
    output: list[int] = []
    cache: dict[str, float] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise TraceError(name, 1, "empty file: expected the header " + ",".join(AZURE_COLUMNS))
        header = [h.strip() for h in header]
        missing = [c for c in AZURE_COLUMNS if c not in header]
        if missing:
            raise TraceError(name, 1, f"missing column {', '.join(missing)} (header: {','.join(header)})")
        col = [header.index(c) for c in AZURE_COLUMNS]
        width = len(header)
        for row in reader:
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != width:
                raise TraceError(name, line, f"expected {width} fields, got {len(row)}")
            t = _azure_time(name, line, row[col[0]], cache)
            if times:
                _check_order(name, line, "TIMESTAMP", times[-1], t, row[col[0]].strip())
            times.append(t)
            prompt.append(_integer(name, line, "ContextTokens", row[col[1]]))
            output.append(_integer(name, line, "GeneratedTokens", row[col[2]]))
    return _trace(name, times, prompt, output, None)


def load_mooncake(path: str | Path) -> Trace:
    """Mooncake trace: JSONL of ``timestamp`` (ms), ``input_length``, ``output_length`` and,
    optionally, ``hash_ids`` (the prompt's 512-token blocks; shared leading ids = shared prefix)."""
    name = str(path)
    times: list[float] = []
    prompt: list[int] = []
    output: list[int] = []
    hashes: list[tuple[int, ...]] = []
    with open(path, encoding="utf-8") as fh:
        for line, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                raise TraceError(name, line, f"invalid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise TraceError(name, line, "expected a JSON object")
            for key in MOONCAKE_KEYS:
                if key not in row:
                    raise TraceError(name, line, f"missing key {key!r}")
            stamp = row["timestamp"]
            if isinstance(stamp, bool) or not isinstance(stamp, int | float) or not np.isfinite(stamp):
                raise TraceError(name, line, f"timestamp {stamp!r} is not a number")
            if stamp < 0:
                raise TraceError(name, line, f"timestamp {stamp} is negative")
            t = float(stamp) / 1000.0
            if times:
                _check_order(name, line, "timestamp", times[-1], t, stamp)
            times.append(t)
            prompt.append(_integer(name, line, "input_length", row["input_length"]))
            output.append(_integer(name, line, "output_length", row["output_length"]))
            hashes.append(_hash_ids(name, line, row.get("hash_ids", [])))
    return _trace(name, times, prompt, output, hashes)


def _hash_ids(path: str, line: int, value: object) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise TraceError(path, line, f"hash_ids {value!r} is not a list")
    ids = tuple(_integer(path, line, "hash_ids item", v) for v in value)
    if len(set(ids)) != len(ids):
        raise TraceError(path, line, "hash_ids repeats a block (a prefix hash appears once per prompt)")
    return ids


def _trace(path: str, times: list[float], prompt: list[int], output: list[int],
           hashes: list[tuple[int, ...]] | None) -> Trace:
    if not times:
        raise TraceError(path, 1, "no requests in the file")
    arrival = np.asarray(times, dtype=np.float64)
    return Trace(path, arrival - arrival[0], np.asarray(prompt, dtype=np.int64),
                 np.asarray(output, dtype=np.int64), hashes)
