"""Vectorised validation of the hot-path bodies, compiled from the serializers' own declared fields.

A body the fast path accepts, the serializer accepts with the same result; anything else (a wrong
type, a bound crossed, a field kind it does not know) goes to the serializer, which names the field
in its 400. So the serializers stay the one definition of what is valid, and the schema's source.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.core.signals import setting_changed
from django.core.validators import (
    MaxLengthValidator,
    MinLengthValidator,
    ProhibitNullCharactersValidator,
    RegexValidator,
)
from rest_framework import serializers
from rest_framework.fields import ProhibitSurrogateCharactersValidator, empty

from agent_app.api.fields import StrictBooleanField, StrictFloatField, StrictIntegerField, VectorField

NUMBER_TYPES = frozenset({int, float})  # exact types: a JSON true is a bool, never a number
_MISSING = object()
_CHAR_VALIDATORS = (MaxLengthValidator, MinLengthValidator, ProhibitNullCharactersValidator,
                    ProhibitSurrogateCharactersValidator, RegexValidator)


@dataclass(frozen=True)
class Plan:
    """What one serializer checks, by field kind; bounds read from its fields under the current settings."""

    prototype: serializers.Serializer  # whose validate() runs on every body, as in DRF
    scalars: tuple[tuple[str, bool, float, float], ...]  # name, required, low, high
    vectors: tuple[tuple[str, bool, int, tuple, tuple], ...]  # name, required, length, lows, highs
    flags: tuple[tuple[str, bool], ...]
    integers: tuple[tuple[str, bool, int, int], ...]
    strings: tuple[tuple[str, bool, re.Pattern | None, int, int], ...]  # pattern, min and max length
    customs: tuple[tuple[str, bool, serializers.Field], ...]  # fields that validate their own value fast


_plans: dict[type, Plan | None] = {}


def _clear_plans(**kwargs: Any) -> None:
    _plans.clear()  # bounds follow settings (NUM_REPLICAS): a test's override_settings recompiles


setting_changed.connect(_clear_plans)


def plan_for(serializer_class: type[serializers.Serializer]) -> Plan | None:
    """The compiled plan of `serializer_class`, or None when a field is of a kind the fast path lacks."""
    if serializer_class not in _plans:
        _plans[serializer_class] = _compile(serializer_class)
    return _plans[serializer_class]


def _compile(serializer_class: type[serializers.Serializer]) -> Plan | None:
    prototype = serializer_class()
    if prototype.get_validators():
        return None
    kinds: dict[str, list] = {"scalars": [], "vectors": [], "flags": [], "integers": [], "strings": [],
                              "customs": []}
    for name, field in serializer_class._declared_fields.items():
        renamed = field.source not in (None, name)
        if field.read_only or field.allow_null or field.default is not empty or renamed:
            return None
        required = field.required
        if getattr(field, "fast_path_safe", False) and not field.validators:
            kinds["customs"].append((name, required, field))
        elif isinstance(field, StrictFloatField) and not field.validators:
            if not _exact_bounds([(field.min_value, field.max_value)]):
                return None
            kinds["scalars"].append((name, required, field.min_value, field.max_value))
        elif isinstance(field, VectorField) and not field.validators:
            bounds = [tuple(pair) for pair in field.get_bounds()]
            if not bounds or not _exact_bounds(bounds):
                return None
            lows, highs = zip(*bounds, strict=True)
            kinds["vectors"].append((name, required, len(bounds), lows, highs))
        elif isinstance(field, StrictBooleanField) and not field.validators:
            kinds["flags"].append((name, required))
        elif isinstance(field, StrictIntegerField) and not field.validators:
            limits = getattr(field, "get_limits", lambda f=field: (f.min_value, f.max_value))()
            kinds["integers"].append((name, required, *limits))
        elif type(field) is serializers.CharField or isinstance(field, serializers.RegexField):
            string = _string_rule(field)
            if string is None:
                return None
            kinds["strings"].append((name, required, *string))
        else:
            return None
    return Plan(prototype=prototype, **{kind: tuple(rules) for kind, rules in kinds.items()})


def _exact_bounds(bounds: list[tuple[float, float]]) -> bool:
    # Finite bounds make NaN and Infinity fail the range check; below 2**53 a JSON integer compares
    # as its float does, so checking the float is checking the number.
    return all(math.isfinite(b) and abs(b) < 2**53 for pair in bounds for b in pair)


def _string_rule(field: serializers.CharField) -> tuple[re.Pattern | None, int, int] | None:
    if field.allow_blank or not all(isinstance(v, _CHAR_VALIDATORS) for v in field.validators):
        return None
    patterns = [v for v in field.validators if isinstance(v, RegexValidator)]
    if len(patterns) > 1 or any(v.inverse_match for v in patterns):
        return None
    pattern = re.compile(patterns[0].regex.pattern, patterns[0].regex.flags) if patterns else None
    if pattern is None and not field.trim_whitespace:
        return None
    return pattern, max(field.min_length or 1, 1), field.max_length or 1 << 30


def validate_many(plan: Plan, items: object) -> list[dict] | None:
    """Validated bodies in order, or None for the serializer to decide (and name what is wrong)."""
    if type(items) is not list:
        return None
    # Many bodies: numbers are gathered per field and checked in one NumPy pass; a few: inline.
    columns = {name: ([], []) for name, *_ in (*plan.scalars, *plan.vectors)} if len(items) > 4 else None
    rows = []
    for index, item in enumerate(items):
        row = _check_item(plan, item, index, columns)
        if row is None:
            return None
        rows.append(row)
    if columns is not None and not _check_columns(plan, columns, rows):
        return None
    try:
        return [plan.prototype.validate(row) for row in rows]
    except serializers.ValidationError:
        return None


def _check_item(plan: Plan, item: object, index: int, columns: dict | None) -> dict | None:
    if type(item) is not dict:
        return None
    row: dict = {}
    for name, required, low, high in plan.scalars:
        value = item.get(name, _MISSING)
        if value is _MISSING:
            if required:
                return None
        elif type(value) not in NUMBER_TYPES:
            return None
        elif columns is not None:
            columns[name][0].append(index)
            columns[name][1].append(value)
        elif low <= value <= high:  # bounds are finite, so NaN and Infinity fail here
            row[name] = float(value)
        else:
            return None
    for name, required, length, lows, highs in plan.vectors:
        value = item.get(name, _MISSING)
        if value is _MISSING:
            if required:
                return None
        elif type(value) is not list or len(value) != length:
            return None
        elif columns is not None:
            columns[name][0].append(index)
            columns[name][1].append(value)
        else:
            for number, low, high in zip(value, lows, highs):  # noqa: B905 (lengths checked above)
                if type(number) not in NUMBER_TYPES or not low <= number <= high:
                    return None
            row[name] = [float(number) for number in value]
    for name, required in plan.flags:
        value = item.get(name, _MISSING)
        if value is _MISSING:
            if required:
                return None
        elif type(value) is bool:
            row[name] = value
        else:
            return None
    for name, required, low, high in plan.integers:
        value = item.get(name, _MISSING)
        if value is _MISSING:
            if required:
                return None
            continue
        if type(value) is float and value.is_integer():
            value = int(value)
        if type(value) is not int or not low <= value <= high:
            return None
        row[name] = value
    for name, required, pattern, shortest, longest in plan.strings:
        value = item.get(name, _MISSING)
        if value is _MISSING:
            if required:
                return None
            continue
        if type(value) is not str or not value.isascii() or "\x00" in value \
                or not shortest <= len(value) <= longest:
            return None
        if (pattern.search(value) is None) if pattern is not None else value != value.strip():
            return None
        row[name] = value
    for name, required, field in plan.customs:
        value = item.get(name, _MISSING)
        if value is _MISSING:
            if required:
                return None
            continue
        try:
            row[name] = field.to_internal_value(value)
        except serializers.ValidationError:
            return None
    return row


def _check_columns(plan: Plan, columns: dict[str, tuple[list[int], list]], rows: list[dict]) -> bool:
    """Each numeric field of every body at once: exact JSON number types, within bounds, as floats."""
    for name, *_, low, high in (*plan.scalars, *plan.vectors):
        indices, values = columns[name]
        if not indices:
            continue
        is_vector = type(values[0]) is list
        flat = itertools.chain.from_iterable(values) if is_vector else values
        if not set(map(type, flat)) <= NUMBER_TYPES:
            return False
        try:
            array = np.array(values, dtype=np.float64)
        except (OverflowError, ValueError):  # an integer past float range
            return False
        if not ((array >= low).all() and (array <= high).all()):  # finite bounds: NaN fails too
            return False
        for index, value in zip(indices, array.tolist(), strict=True):
            rows[index][name] = value
    return True
