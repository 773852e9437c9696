"""Fields of the named-cluster bodies: `replicas` (names, loads and optional signals), `request`
(the request's token counts) and a loads list of any cluster size.

Each validates its whole value in one plain loop and names the element at fault, e.g.
"replicas[2].load: must be between 0 and 1e+06, got -1"; `fast_path_safe` lets the hot path's
validator (fast_validation.py) call it directly.
"""

from __future__ import annotations

import re

from rest_framework import serializers

from agent_app.api.fields import _number

MAX_REPLICAS_PER_BODY = 256
MAX_TOKENS = 10_000_000
REPLICA_NAME = re.compile(r"\A[A-Za-z0-9._:/@+-]{1,128}\Z")
REPLICA_NAME_PATTERN = REPLICA_NAME.pattern.replace("\\A", "^").replace("\\Z", "$")
_UNBOUNDED_LOAD = 1e6  # as serializers.MAX_LOAD
# Optional per-replica signals a gateway may report, with their bounds.
REPLICA_SIGNALS = {"running": (0.0, _UNBOUNDED_LOAD), "waiting": (0.0, _UNBOUNDED_LOAD),
                   "kv_cache_usage": (0.0, 1.0)}
REQUEST_FEATURES = ("prompt_tokens", "max_tokens")
MAX_PREFIX_HASHES = 512
PREFIX_HASH = re.compile(r"\A[A-Za-z0-9_-]{1,64}\Z")


def replica_name(value: object, where: str) -> str:
    if not isinstance(value, str) or not REPLICA_NAME.match(value):
        raise serializers.ValidationError(
            f"{where}: must be 1-128 characters of letters, digits and . _ : / @ + -, got {value!r}"[:300])
    return value


class ReplicaListField(serializers.Field):
    """[{"name": ..., "load": ..., "running"?, "waiting"?, "kv_cache_usage"?}, ...]: 1 to 256 replicas,
    unique names; keys it does not know are ignored, as everywhere in this API."""

    fast_path_safe = True

    def to_internal_value(self, data: object) -> list[dict]:
        plain = _plain_replicas(data)
        return plain if plain is not None else self._checked(data)

    @staticmethod
    def _checked(data: object) -> list[dict]:
        """Each value checked with the field's own rules, to name the first at fault."""
        if not isinstance(data, list) or not 1 <= len(data) <= MAX_REPLICAS_PER_BODY:
            raise serializers.ValidationError(f"must be a list of 1 to {MAX_REPLICAS_PER_BODY} replicas")
        out, seen = [], set()
        for i, entry in enumerate(data):
            if not isinstance(entry, dict):
                raise serializers.ValidationError(f"[{i}]: must be an object with a name and a load")
            for key in ("name", "load"):
                if key not in entry:
                    raise serializers.ValidationError(f"[{i}].{key}: this field is required")
            name = replica_name(entry["name"], f"[{i}].name")
            if name in seen:
                raise serializers.ValidationError(f"[{i}].name: {name!r} appears twice; names must be unique")
            seen.add(name)
            replica = {"name": name, "load": _at(entry["load"], 0.0, _UNBOUNDED_LOAD, f"[{i}].load")}
            for key, (low, high) in REPLICA_SIGNALS.items():
                if key in entry:
                    replica[key] = _at(entry[key], low, high, f"[{i}].{key}")
            out.append(replica)
        return out

    def to_representation(self, value: list[dict]) -> list[dict]:
        return value


_REPLICA_BOUNDS = (("load", 0.0, _UNBOUNDED_LOAD),
                   *((key, low, high) for key, (low, high) in REPLICA_SIGNALS.items()))


def _plain_replicas(data: object) -> list[dict] | None:
    """The common body in one tight pass (the hot path's largest cost at 32 replicas was naming
    every value's place in advance): the same result as `ReplicaListField._checked`, or None at the
    first thing out of the ordinary, which `_checked` then finds again and names."""
    if type(data) is not list or not 1 <= len(data) <= MAX_REPLICAS_PER_BODY:
        return None
    out, seen = [], set()
    for entry in data:
        if type(entry) is not dict or "load" not in entry:
            return None
        name = entry.get("name")
        if type(name) is not str or name in seen or not REPLICA_NAME.match(name):
            return None
        seen.add(name)
        replica = {"name": name}
        for key, low, high in _REPLICA_BOUNDS:
            if key in entry:
                value = entry[key]
                kind = type(value)  # exact: a JSON true is a bool, never a number
                if not ((kind is int or kind is float) and low <= value <= high):  # NaN fails too
                    return None
                replica[key] = float(value)
        out.append(replica)
    return out


class RequestFeaturesField(serializers.Field):
    """{"prompt_tokens"?: int, "max_tokens"?: int, "prefix_hashes"?: [...]}: what the gateway knows of the
    request; prefix_hashes (rlagent_client/prefix.py) are up to 512 strings or integers, kept as strings;
    each hashes its block and every block before it (chained), as a replica's prefix cache does."""

    fast_path_safe = True

    def to_internal_value(self, data: object) -> dict:
        if not isinstance(data, dict):
            raise serializers.ValidationError("must be an object with prompt_tokens and/or max_tokens")
        out = {}
        for key in REQUEST_FEATURES:
            if key in data:
                out[key] = token_count(data[key], key)
        if "prefix_hashes" in data:
            out["prefix_hashes"] = prefix_hashes(data["prefix_hashes"])
        return out

    def to_representation(self, value: dict) -> dict:
        return value


def token_count(value: object, where: str) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOKENS:
        raise serializers.ValidationError(
            f"{where}: must be an integer between 0 and {MAX_TOKENS}, got {value!r}"[:300])
    return value


def prefix_hashes(value: object) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_PREFIX_HASHES:
        raise serializers.ValidationError(f"prefix_hashes: must be a list of at most {MAX_PREFIX_HASHES}")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, int) and not isinstance(item, bool) and 0 <= item < 2**64:
            out.append(str(item))
        elif isinstance(item, str) and PREFIX_HASH.match(item):
            out.append(item)
        else:
            raise serializers.ValidationError(
                f"prefix_hashes[{i}]: must be an integer 0 to 2**64-1 or 1-64 letters, digits, _ or -, "
                f"got {item!r}"[:300])
    return out


class LoadListField(serializers.Field):
    """Loads of a cluster of any size (1 to 256 numbers, each 0 to 1e6), in the decision's order."""

    fast_path_safe = True

    def to_internal_value(self, data: object) -> list[float]:
        if not isinstance(data, list) or not 1 <= len(data) <= MAX_REPLICAS_PER_BODY:
            raise serializers.ValidationError(f"must be a list of 1 to {MAX_REPLICAS_PER_BODY} numbers")
        return [_at(value, 0.0, _UNBOUNDED_LOAD, f"[{i}]") for i, value in enumerate(data)]

    def to_representation(self, value: list[float]) -> list[float]:
        return value


def _at(value: object, low: float, high: float, where: str) -> float:
    try:
        return _number(value, low, high)
    except serializers.ValidationError as exc:
        raise serializers.ValidationError(f"{where}: {exc.detail[0]}") from None
