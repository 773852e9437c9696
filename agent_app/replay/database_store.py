"""Replay store on the Experience table (Postgres or SQLite), trimmed to capacity on each append."""

from __future__ import annotations

from collections import Counter, defaultdict

from django.db import DatabaseError, transaction
from django.db.models import F, QuerySet

from agent_app.models import ArmLatencyBucket, ArmOutcome, Experience
from agent_app.replay.base import ExperienceRecord, ReplayStore, StoreUnavailable, TransitionArrays
from agent_app.replay.histogram import latency_bucket


class DatabaseReplayStore(ReplayStore):
    name = "database"

    def add(self, records: list[ExperienceRecord]) -> int:
        try:
            with transaction.atomic():
                ids = [r.experience_id for r in records if r.experience_id]
                known = self._experiences().filter(experience_id__in=ids)
                known = set(known.values_list("experience_id", flat=True))
                fresh, seen, stored = [], set(known), []
                for rec in records:
                    if rec.experience_id:
                        if rec.experience_id in seen:
                            continue
                        seen.add(rec.experience_id)
                    stored.append(rec)
                    fresh.append(
                        Experience(
                            pool=self.pool, experience_id=rec.experience_id, state=rec.state,
                            action=rec.action, reward=rec.reward, next_state=rec.next_state,
                            latency_ms=rec.latency_ms, success=rec.success,
                        )
                    )
                # ignore_conflicts covers a concurrent report of the same id between check and insert.
                Experience.objects.bulk_create(fresh, ignore_conflicts=True)
                self._trim()
                self._count_arms([rec for rec in stored if rec.arm])
            return len(fresh)
        except DatabaseError as exc:
            raise StoreUnavailable(f"database replay store unavailable: {exc}") from exc

    def _experiences(self) -> QuerySet:
        return Experience.objects.filter(pool=self.pool)

    def _trim(self) -> None:
        newest = self._experiences().order_by("-id").values_list("id", flat=True)
        boundary = list(newest[self.capacity - 1 : self.capacity])
        if boundary:
            self._experiences().filter(id__lt=boundary[0]).delete()

    def _count_arms(self, records: list[ExperienceRecord]) -> None:
        totals: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0, 0.0])
        buckets: Counter[tuple[str, int]] = Counter()
        for rec in records:
            arm = totals[rec.arm]
            arm[0] += 1
            arm[1] += int(rec.success)
            arm[2] += rec.latency_ms
            arm[3] += rec.latency_ms**2
            buckets[rec.arm, latency_bucket(rec.latency_ms)] += 1
        for name, (count, successes, total, squares) in totals.items():
            ArmOutcome.objects.get_or_create(pool=self.pool, arm=name)
            ArmOutcome.objects.filter(pool=self.pool, arm=name).update(
                count=F("count") + count, successes=F("successes") + successes,
                latency_sum=F("latency_sum") + total, latency_sq_sum=F("latency_sq_sum") + squares,
            )
        for (name, bucket), count in buckets.items():
            key = {"pool": self.pool, "arm": name, "bucket": bucket}
            ArmLatencyBucket.objects.get_or_create(**key)
            ArmLatencyBucket.objects.filter(**key).update(count=F("count") + count)

    def arm_totals(self) -> dict[str, dict]:
        def read():
            fields = ("arm", "count", "successes", "latency_sum", "latency_sq_sum")
            arms = ArmOutcome.objects.filter(pool=self.pool).values(*fields)
            totals = {row["arm"]: {**row, "buckets": {}} for row in arms}
            buckets = ArmLatencyBucket.objects.filter(pool=self.pool).values_list("arm", "bucket", "count")
            for arm, bucket, count in buckets:
                if arm in totals:
                    totals[arm]["buckets"][bucket] = count
            for row in totals.values():
                row.pop("arm")
            return totals

        return self._query(read)

    def size(self) -> int:
        return self._query(lambda: self._experiences().count())

    def read_since(self, cursor: str | None, limit: int) -> tuple[TransitionArrays, str | None]:
        def rows():
            qs = self._experiences().order_by("id")
            if cursor:
                qs = qs.filter(id__gt=int(cursor))
            return list(qs.values_list("id", "state", "action", "reward", "next_state")[:limit])

        found = self._query(rows)
        if not found:
            return self._arrays([], [], [], []), cursor
        ids, states, actions, rewards, next_states = zip(*found, strict=True)
        return self._arrays(list(states), list(actions), list(rewards), list(next_states)), str(ids[-1])

    def newest_cursor(self) -> str | None:
        newest = self._query(lambda: self._experiences().order_by("-id").values_list("id", flat=True).first())
        return None if newest is None else str(newest)

    def recent(self, count: int) -> list[dict]:
        fields = ("id", "experience_id", "state", "action", "reward", "next_state", "latency_ms", "success")
        return self._query(lambda: list(self._experiences().order_by("-id").values(*fields)[:count]))

    def clear(self) -> None:
        for model in (Experience, ArmOutcome, ArmLatencyBucket):
            self._query(lambda model=model: model.objects.filter(pool=self.pool).delete())

    def ping(self) -> bool:
        try:
            Experience.objects.exists()  # the table answers (whoever's rows it holds)
            return True
        except DatabaseError:
            return False

    @staticmethod
    def _query(fn):
        try:
            return fn()
        except DatabaseError as exc:
            raise StoreUnavailable(f"database replay store unavailable: {exc}") from exc
