"""Strict serializer fields: JSON numbers only (no strings, no booleans), finite, in range."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from rest_framework import serializers
from rest_framework.fields import empty


def _number(value: object, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise serializers.ValidationError(f"must be a JSON number, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise serializers.ValidationError("must be a finite number (NaN and Infinity are refused)")
    if not lo <= value <= hi:
        raise serializers.ValidationError(f"must be between {lo:g} and {hi:g}, got {value!r}")
    return float(value)


class StrictFloatField(serializers.Field):
    """A finite JSON number in [min_value, max_value]."""

    def __init__(self, *, min_value: float, max_value: float, **kwargs) -> None:
        self.min_value, self.max_value = min_value, max_value
        super().__init__(**kwargs)

    def to_internal_value(self, data: object) -> float:
        return _number(data, self.min_value, self.max_value)

    def to_representation(self, value: float) -> float:
        return value


class StrictBooleanField(serializers.Field):
    """JSON true or false only: "yes", 1 and "true" are refused."""

    def to_internal_value(self, data: object) -> bool:
        if not isinstance(data, bool):
            raise serializers.ValidationError(f"must be true or false, got {type(data).__name__}")
        return data

    def to_representation(self, value: bool) -> bool:
        return value


class StrictIntegerField(serializers.Field):
    """A JSON integer in [min_value, max_value] ("3", 3.5 and true are refused).

    3.0 is accepted as 3: JSON does not tell the two apart and JSON Schema's "integer" (the
    OpenAPI schema's type) is any number without a fractional part.
    """

    def __init__(self, *, min_value: int, max_value: int, **kwargs) -> None:
        self.min_value, self.max_value = min_value, max_value
        super().__init__(**kwargs)

    def to_internal_value(self, data: object) -> int:
        if isinstance(data, float) and data.is_integer():
            data = int(data)
        if isinstance(data, bool) or not isinstance(data, int):
            raise serializers.ValidationError(f"must be a JSON integer, got {type(data).__name__}")
        if not self.min_value <= data <= self.max_value:
            raise serializers.ValidationError(
                f"must be between {self.min_value} and {self.max_value}, got {data}"
            )
        return data

    def to_representation(self, value: int) -> int:
        return value


class StrictRegexField(serializers.RegexField):
    """A JSON string that matches `regex` whole, as the schema's `pattern` says.

    DRF's RegexField would take 42 as "42", strip surrounding spaces before matching, and let
    `$` match before a final newline; give the regex as \\A...\\Z (the schema shows ^...$).
    """

    def __init__(self, regex: str, **kwargs) -> None:
        super().__init__(regex, trim_whitespace=False, **kwargs)

    def to_internal_value(self, data: object) -> str:
        if not isinstance(data, str):
            raise serializers.ValidationError(f"must be a string, got {type(data).__name__}")
        return data


class QueryIntegerField(serializers.IntegerField):
    """An integer query parameter in plain ASCII digits, as the schema's "integer" says.

    DRF would read "?iterations=" as absent (a form's empty input), and int() takes " 5", "1_000"
    and non-ASCII digits; those are refused.
    """

    def get_value(self, dictionary):
        return dictionary.get(self.field_name, empty)

    def to_internal_value(self, data):
        if isinstance(data, str) and not re.fullmatch(r"-?[0-9]{1,18}", data):
            self.fail("invalid")
        return super().to_internal_value(data)


class QueryRegexField(StrictRegexField):
    """A string query parameter matching `regex`: "?pool=" is refused, not read as absent (DRF would
    read an empty query parameter as a form's empty input)."""

    def get_value(self, dictionary):
        return dictionary.get(self.field_name, empty)


class VectorField(serializers.Field):
    """A list of exactly len(bounds) finite numbers, element i within bounds[i].

    One field for the whole list (rather than ListField of FloatFields) keeps the batch form fast
    and names the offending element, e.g. "state[4]: must be between 0 and 1".
    """

    def __init__(self, *, bounds: Sequence[tuple[float, float]] | None = None, **kwargs) -> None:
        self.bounds = bounds
        super().__init__(**kwargs)

    def get_bounds(self) -> Sequence[tuple[float, float]]:
        return self.bounds or []

    def to_internal_value(self, data: object) -> list[float]:
        bounds = self.get_bounds()
        if not isinstance(data, list):
            raise serializers.ValidationError(f"must be a list of {len(bounds)} numbers")
        if len(data) != len(bounds):
            raise serializers.ValidationError(f"must have exactly {len(bounds)} values, got {len(data)}")
        out = []
        for i, (value, (lo, hi)) in enumerate(zip(data, bounds, strict=True)):
            try:
                out.append(_number(value, lo, hi))
            except serializers.ValidationError as exc:
                raise serializers.ValidationError(f"[{i}] {exc.detail[0]}") from None
        return out

    def to_representation(self, value: list[float]) -> list[float]:
        return value
