"""Replay store on the Experience table (Postgres or SQLite), trimmed to capacity on each append."""

from __future__ import annotations

from django.db import DatabaseError, transaction

from agent_app.models import Experience
from agent_app.replay.base import ExperienceRecord, ReplayStore, StoreUnavailable, TransitionArrays


class DatabaseReplayStore(ReplayStore):
    name = "database"

    def add(self, records: list[ExperienceRecord]) -> int:
        try:
            with transaction.atomic():
                ids = [r.experience_id for r in records if r.experience_id]
                known = set(
                    Experience.objects.filter(experience_id__in=ids).values_list("experience_id", flat=True)
                )
                fresh, seen = [], set(known)
                for rec in records:
                    if rec.experience_id:
                        if rec.experience_id in seen:
                            continue
                        seen.add(rec.experience_id)
                    fresh.append(
                        Experience(
                            experience_id=rec.experience_id, state=rec.state, action=rec.action,
                            reward=rec.reward, next_state=rec.next_state, latency_ms=rec.latency_ms,
                            success=rec.success,
                        )
                    )
                # ignore_conflicts covers a concurrent report of the same id between check and insert.
                Experience.objects.bulk_create(fresh, ignore_conflicts=True)
                self._trim()
            return len(fresh)
        except DatabaseError as exc:
            raise StoreUnavailable(f"database replay store unavailable: {exc}") from exc

    def _trim(self) -> None:
        boundary = (
            Experience.objects.order_by("-id").values_list("id", flat=True)[self.capacity - 1 : self.capacity]
        )
        boundary = list(boundary)
        if boundary:
            Experience.objects.filter(id__lt=boundary[0]).delete()

    def size(self) -> int:
        return self._query(lambda: Experience.objects.count())

    def read_since(self, cursor: str | None, limit: int) -> tuple[TransitionArrays, str | None]:
        def rows():
            qs = Experience.objects.order_by("id")
            if cursor:
                qs = qs.filter(id__gt=int(cursor))
            return list(qs.values_list("id", "state", "action", "reward", "next_state")[:limit])

        found = self._query(rows)
        if not found:
            return self._arrays([], [], [], []), cursor
        ids, states, actions, rewards, next_states = zip(*found, strict=True)
        return self._arrays(list(states), list(actions), list(rewards), list(next_states)), str(ids[-1])

    def recent(self, count: int) -> list[dict]:
        fields = ("id", "experience_id", "state", "action", "reward", "next_state", "latency_ms", "success")
        return self._query(lambda: list(Experience.objects.order_by("-id").values(*fields)[:count]))

    def clear(self) -> None:
        self._query(lambda: Experience.objects.all().delete())

    def ping(self) -> bool:
        try:
            Experience.objects.exists()
            return True
        except DatabaseError:
            return False

    @staticmethod
    def _query(fn):
        try:
            return fn()
        except DatabaseError as exc:
            raise StoreUnavailable(f"database replay store unavailable: {exc}") from exc
