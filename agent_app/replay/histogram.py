"""The latency histogram the replay stores keep per A/B arm: log buckets, each 5% wider than the
last, so a quantile read from the counts is within 5% of the true one."""

from __future__ import annotations

import math
from collections.abc import Mapping

BUCKET_GROWTH = 1.05


def latency_bucket(latency_ms: float) -> int:
    """The bucket a latency falls in (negative latencies count as 0 ms)."""
    return int(math.log1p(max(latency_ms, 0.0)) / math.log(BUCKET_GROWTH))


def bucket_upper_ms(bucket: int) -> float:
    """The upper edge of a bucket: what a quantile that lands in it reports."""
    return math.expm1((bucket + 1) * math.log(BUCKET_GROWTH))


def quantile_ms(buckets: Mapping[int, int], fraction: float) -> float:
    """The upper edge of the bucket holding the `fraction` quantile; 0.0 for an empty histogram."""
    rank, seen = math.ceil(fraction * sum(buckets.values())), 0
    for bucket in sorted(buckets):
        seen += buckets[bucket]
        if seen >= rank:
            return bucket_upper_ms(bucket)
    return 0.0
