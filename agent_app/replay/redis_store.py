"""Replay store on a Redis stream: one Lua call appends a batch, skips known ids and trims."""

from __future__ import annotations

import numpy as np
import redis

from agent_app.redis_client import KEY_PREFIX, get_redis
from agent_app.replay.base import ExperienceRecord, ReplayStore, StoreUnavailable, TransitionArrays
from agent_app.services.ab_testing import latency_bucket

STREAM_KEY = KEY_PREFIX + "experiences"
SEEN_PREFIX = KEY_PREFIX + "experience-id:"
ID_TTL_SECONDS = 7 * 24 * 3600  # a retried report is recognised for a week

ARM_PREFIX = KEY_PREFIX + "arm:"
ARMS_KEY = KEY_PREFIX + "arms"

# Atomic append-and-trim: exact MAXLEN keeps at most `capacity` entries, and SET NX on the
# client's id makes a retried report a no-op; the A/B totals of a stored record's arm are
# updated in the same call. ARGV: capacity, ttl, then 9 values per record.
_APPEND = """
local stored = 0
for i = 3, #ARGV, 9 do
  local fresh = true
  if ARGV[i] ~= '' then
    fresh = redis.call('SET', KEYS[2] .. ARGV[i], '1', 'NX', 'EX', ARGV[2])
  end
  if fresh then
    redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], '*', 'id', ARGV[i], 's', ARGV[i + 1],
      'a', ARGV[i + 2], 'r', ARGV[i + 3], 'n', ARGV[i + 4], 'l', ARGV[i + 5], 'ok', ARGV[i + 6])
    stored = stored + 1
    local arm = ARGV[i + 7]
    if arm ~= '' then
      local key = KEYS[3] .. arm
      local latency = tonumber(ARGV[i + 5])
      redis.call('SADD', KEYS[4], arm)
      redis.call('HINCRBY', key, 'count', 1)
      redis.call('HINCRBY', key, 'successes', tonumber(ARGV[i + 6]))
      redis.call('HINCRBYFLOAT', key, 'latency_sum', latency)
      redis.call('HINCRBYFLOAT', key, 'latency_sq_sum', latency * latency)
      redis.call('HINCRBY', key, 'b' .. ARGV[i + 8], 1)
    end
  end
end
return stored
"""


class RedisReplayStore(ReplayStore):
    name = "redis"

    def __init__(self, capacity: int, state_dim: int) -> None:
        super().__init__(capacity, state_dim)
        self._append = get_redis().register_script(_APPEND)

    def add(self, records: list[ExperienceRecord]) -> int:
        args: list = [self.capacity, ID_TTL_SECONDS]
        for rec in records:
            args += [
                rec.experience_id or "",
                np.asarray(rec.state, dtype=np.float32).tobytes(),
                rec.action,
                repr(float(rec.reward)),
                np.asarray(rec.next_state, dtype=np.float32).tobytes(),
                repr(float(rec.latency_ms)),
                int(rec.success),
                rec.arm or "",
                latency_bucket(rec.latency_ms),
            ]
        try:
            return int(self._append(keys=[STREAM_KEY, SEEN_PREFIX, ARM_PREFIX, ARMS_KEY], args=args))
        except redis.RedisError as exc:
            raise StoreUnavailable(f"Redis replay store unavailable: {exc}") from exc

    def size(self) -> int:
        return self._call(get_redis().xlen, STREAM_KEY)

    def read_since(self, cursor: str | None, limit: int) -> tuple[TransitionArrays, str | None]:
        start = f"({cursor}" if cursor else "-"
        entries = self._call(get_redis().xrange, STREAM_KEY, start, "+", limit)
        if not entries:
            return self._arrays([], [], [], []), cursor
        dim = self.state_dim
        states = np.frombuffer(b"".join(f[b"s"] for _, f in entries), dtype=np.float32).reshape(-1, dim)
        nexts = np.frombuffer(b"".join(f[b"n"] for _, f in entries), dtype=np.float32).reshape(-1, dim)
        arrays = TransitionArrays(
            states=states.copy(),
            actions=np.array([int(f[b"a"]) for _, f in entries], dtype=np.int64),
            rewards=np.array([float(f[b"r"]) for _, f in entries], dtype=np.float32),
            next_states=nexts.copy(),
        )
        return arrays, entries[-1][0].decode()

    def recent(self, count: int) -> list[dict]:
        entries = self._call(get_redis().xrevrange, STREAM_KEY, "+", "-", count)
        return [self._row(entry_id, fields) for entry_id, fields in entries]

    def arm_totals(self) -> dict[str, dict]:
        client = get_redis()
        totals = {}
        for arm in sorted(self._call(client.smembers, ARMS_KEY)):
            fields = {k.decode(): v for k, v in self._call(client.hgetall, ARM_PREFIX + arm.decode()).items()}
            totals[arm.decode()] = {
                "count": int(fields.get("count", 0)),
                "successes": int(fields.get("successes", 0)),
                "latency_sum": float(fields.get("latency_sum", 0)),
                "latency_sq_sum": float(fields.get("latency_sq_sum", 0)),
                "buckets": {int(k[1:]): int(v) for k, v in fields.items() if k.startswith("b")},
            }
        return totals

    def clear(self) -> None:
        client = get_redis()
        self._call(client.delete, STREAM_KEY, ARMS_KEY)
        for pattern in (SEEN_PREFIX + "*", ARM_PREFIX + "*"):
            for key in client.scan_iter(pattern, count=1000):
                client.delete(key)

    def ping(self) -> bool:
        try:
            return bool(get_redis().ping())
        except redis.RedisError:
            return False

    def _row(self, entry_id: bytes, fields: dict) -> dict:
        return {
            "id": entry_id.decode(),
            "experience_id": fields[b"id"].decode() or None,
            "state": np.frombuffer(fields[b"s"], dtype=np.float32).tolist(),
            "action": int(fields[b"a"]),
            "reward": float(fields[b"r"]),
            "next_state": np.frombuffer(fields[b"n"], dtype=np.float32).tolist(),
            "latency_ms": float(fields[b"l"]),
            "success": fields[b"ok"] == b"1",
        }

    @staticmethod
    def _call(method, *args):
        try:
            return method(*args)
        except redis.RedisError as exc:
            raise StoreUnavailable(f"Redis replay store unavailable: {exc}") from exc
