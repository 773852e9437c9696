"""Replay store on a Redis stream: one Lua call appends a batch, skips known ids and trims."""

from __future__ import annotations

import numpy as np
import redis

from agent_app.pools import DEFAULT_POOL, redis_prefix
from agent_app.redis_client import get_redis
from agent_app.replay.base import ExperienceRecord, ReplayStore, StoreUnavailable, TransitionArrays
from agent_app.replay.histogram import latency_bucket

ID_TTL_SECONDS = 7 * 24 * 3600  # a retried report is recognised for a week

# Atomic append-and-trim: SET NX on the client's id makes a retried report a no-op, the A/B
# totals of a stored record's arm are updated in the same call, and one exact XTRIM at the end
# keeps at most `capacity` entries (the script is atomic, so no reader sees more). The batch
# travels as a few columns rather than 9 arguments per record: packing ten thousand arguments cost
# more than the script. ARGV: capacity, ttl, count, state bytes of each record, then the columns:
# ids, states, actions, rewards, next states, latencies, successes, arms, buckets (lists are
# comma-separated; states are float32 bytes back to back; successes one "0"/"1" per record).
# Returns {stored, entries in the stream}.
_APPEND = """
local function split(text)
  local out = {}
  for field in string.gmatch(text .. ',', '([^,]*),') do out[#out + 1] = field end
  return out
end
local count, widths = tonumber(ARGV[3]), split(ARGV[4])
local ids, actions, rewards = split(ARGV[5]), split(ARGV[7]), split(ARGV[8])
local latencies, arms, buckets = split(ARGV[10]), split(ARGV[12]), split(ARGV[13])
local states, nexts, oks = ARGV[6], ARGV[9], ARGV[11]
local stored, from = 0, 1
for i = 1, count do
  local width = tonumber(widths[i])
  local fresh = true
  if ids[i] ~= '' then
    fresh = redis.call('SET', KEYS[2] .. ids[i], '1', 'NX', 'EX', ARGV[2])
  end
  if fresh then
    local ok = string.sub(oks, i, i)
    redis.call('XADD', KEYS[1], '*', 'id', ids[i], 's', string.sub(states, from, from + width - 1),
      'a', actions[i], 'r', rewards[i], 'n', string.sub(nexts, from, from + width - 1),
      'l', latencies[i], 'ok', ok)
    stored = stored + 1
    local arm = arms[i]
    if arm ~= '' then
      local key = KEYS[3] .. arm
      local latency = tonumber(latencies[i])
      redis.call('SADD', KEYS[4], arm)
      redis.call('HINCRBY', key, 'count', 1)
      redis.call('HINCRBY', key, 'successes', tonumber(ok))
      redis.call('HINCRBYFLOAT', key, 'latency_sum', latency)
      redis.call('HINCRBYFLOAT', key, 'latency_sq_sum', latency * latency)
      redis.call('HINCRBY', key, 'b' .. buckets[i], 1)
    end
  end
  from = from + width
end
if stored > 0 then
  redis.call('XTRIM', KEYS[1], 'MAXLEN', ARGV[1])
end
return {stored, redis.call('XLEN', KEYS[1])}
"""


class RedisReplayStore(ReplayStore):
    name = "redis"

    def __init__(self, capacity: int, state_dim: int, pool: str = DEFAULT_POOL) -> None:
        super().__init__(capacity, state_dim, pool)
        self._append = get_redis().register_script(_APPEND)
        # The pool's keys: the stream, known ids, A/B totals per arm and the set of arms.
        prefix = redis_prefix(pool)
        self.stream_key, self.seen_prefix = prefix + "experiences", prefix + "experience-id:"
        self.arm_prefix, self.arms_key = prefix + "arm:", prefix + "arms"

    def add(self, records: list[ExperienceRecord]) -> int:
        return self.add_and_size(records)[0]

    def add_and_size(self, records: list[ExperienceRecord]) -> tuple[int, int]:
        if not records:
            return 0, self.size()
        states, nexts, widths = _packed(records)
        args = [
            self.capacity, ID_TTL_SECONDS, len(records), widths,
            ",".join(r.experience_id or "" for r in records),
            states,
            ",".join(str(int(r.action)) for r in records),
            ",".join(repr(float(r.reward)) for r in records),
            nexts,
            ",".join(repr(float(r.latency_ms)) for r in records),
            "".join("1" if r.success else "0" for r in records),
            ",".join(r.arm or "" for r in records),
            ",".join(str(latency_bucket(r.latency_ms)) if r.arm else "" for r in records),
        ]
        try:
            keys = [self.stream_key, self.seen_prefix, self.arm_prefix, self.arms_key]
            stored, size = self._append(keys=keys, args=args)
        except redis.RedisError as exc:
            raise StoreUnavailable(f"Redis replay store unavailable: {exc}") from exc
        return int(stored), int(size)

    def size(self) -> int:
        return self._call(get_redis().xlen, self.stream_key)

    def read_since(self, cursor: str | None, limit: int) -> tuple[TransitionArrays, str | None]:
        start = f"({cursor}" if cursor else "-"
        entries = self._call(get_redis().xrange, self.stream_key, start, "+", limit)
        if not entries:
            return self._arrays([], [], [], []), cursor
        arrays = TransitionArrays(
            states=_unpacked([f[b"s"] for _, f in entries]),
            actions=np.array([int(f[b"a"]) for _, f in entries], dtype=np.int64),
            rewards=np.array([float(f[b"r"]) for _, f in entries], dtype=np.float32),
            next_states=_unpacked([f[b"n"] for _, f in entries]),
        )
        return arrays, entries[-1][0].decode()

    def newest_cursor(self) -> str | None:
        newest = self._call(get_redis().xrevrange, self.stream_key, "+", "-", 1)
        return newest[0][0].decode() if newest else None

    def recent(self, count: int) -> list[dict]:
        entries = self._call(get_redis().xrevrange, self.stream_key, "+", "-", count)
        return [self._row(entry_id, fields) for entry_id, fields in entries]

    def arm_totals(self) -> dict[str, dict]:
        client = get_redis()
        totals = {}
        for arm in sorted(self._call(client.smembers, self.arms_key)):
            found = self._call(client.hgetall, self.arm_prefix + arm.decode())
            fields = {k.decode(): v for k, v in found.items()}
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
        self._call(client.delete, self.stream_key, self.arms_key)
        for pattern in (self.seen_prefix + "*", self.arm_prefix + "*"):
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


def _packed(records: list[ExperienceRecord]) -> tuple[bytes, bytes, str]:
    """States and next states as float32 bytes back to back, and each record's byte width. States
    of one width (one network, one cluster size) go through NumPy at once."""
    widths = {len(r.state) for r in records} | {len(r.next_state) for r in records}
    if len(widths) == 1:
        states = np.asarray([r.state for r in records], dtype=np.float32).tobytes()
        nexts = np.asarray([r.next_state for r in records], dtype=np.float32).tobytes()
        return states, nexts, ",".join([str(4 * widths.pop())] * len(records))
    for r in records:
        if len(r.state) != len(r.next_state):
            raise ValueError("a state and its next state must have the same length")
    states = b"".join(np.asarray(r.state, dtype=np.float32).tobytes() for r in records)
    nexts = b"".join(np.asarray(r.next_state, dtype=np.float32).tobytes() for r in records)
    return states, nexts, ",".join(str(4 * len(r.state)) for r in records)


def _unpacked(blobs: list[bytes]) -> np.ndarray | list[np.ndarray]:
    """(B, width) when every state has one width, else one array per state."""
    if len({len(b) for b in blobs}) == 1:
        return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), -1).copy()
    return [np.frombuffer(b, dtype=np.float32).copy() for b in blobs]
