"""The training lease: one trainer per pool at a time across every process and machine.

A row claimed with a conditional UPDATE (works the same on Postgres and SQLite). The holder
renews it while it trains; a crashed holder's lease simply expires.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from agent_app.models import TrainingLease
from agent_app.pools import lease_name


class LeaseHeld(Exception):
    """Another trainer holds the lease."""


class LeaseLost(Exception):
    """Our lease expired and someone else claimed it; stop without publishing."""


class Lease:
    def __init__(self, name: str, holder: str, seconds: float) -> None:
        self.name, self.holder, self.seconds = name, holder, seconds
        self._renewed_at = time.monotonic()

    def renew(self, *, force: bool = False) -> None:
        """Extend the lease (at most every third of its length unless forced)."""
        if not force and time.monotonic() - self._renewed_at < self.seconds / 3:
            return
        updated = TrainingLease.objects.filter(name=self.name, holder=self.holder).update(
            expires_at=timezone.now() + timedelta(seconds=self.seconds)
        )
        if not updated:
            raise LeaseLost(f"training lease of {self.holder} was taken over")
        self._renewed_at = time.monotonic()


def new_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@contextmanager
def training_lease(seconds: float | None = None) -> Iterator[Lease]:
    """The current pool's lease (agent_app/pools.py): pools train in parallel, each by one trainer."""
    seconds = seconds or settings.TRAINING_LEASE_SECONDS
    holder, name = new_holder(), lease_name()
    TrainingLease.objects.get_or_create(name=name)
    now = timezone.now()
    claimed = TrainingLease.objects.filter(
        Q(expires_at__isnull=True) | Q(expires_at__lt=now), name=name
    ).update(holder=holder, expires_at=now + timedelta(seconds=seconds))
    if not claimed:
        current = TrainingLease.objects.filter(name=name).values_list("holder", flat=True).first()
        raise LeaseHeld(f"another trainer ({current}) is training; try again when it is done")
    try:
        yield Lease(name, holder, seconds)
    finally:
        TrainingLease.objects.filter(name=name, holder=holder).update(expires_at=None, holder="")
