"""The embedded database's options: on a SQLite file shared by several connections, a transaction
that reads and then writes waits for the other writers instead of failing "database is locked"."""

from __future__ import annotations

import threading
import uuid

import pytest
from django.conf import settings
from django.db import OperationalError, connections, transaction

THREADS, INCREMENTS = 4, 25


@pytest.fixture
def sqlite_file(tmp_path, django_db_blocker):
    """An alias for a SQLite file with the given OPTIONS, holding a one-row counter table."""
    aliases = []

    def make(options: dict) -> str:
        alias = f"sqlite_{uuid.uuid4().hex[:8]}"
        spec = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp_path / "shared.sqlite3"),
                "OPTIONS": dict(options)}
        connections.settings[alias] = connections.configure_settings({"default": spec})["default"]
        aliases.append(alias)
        if len(aliases) == 1:
            with connections[alias].cursor() as cursor:
                cursor.execute("CREATE TABLE counter (n INTEGER NOT NULL)")
                cursor.execute("INSERT INTO counter VALUES (0)")
        return alias

    with django_db_blocker.unblock():
        yield make
        for alias in aliases:
            connections[alias].close()
            del connections[alias]
            del connections.settings[alias]


def read_then_write(alias: str) -> None:
    """The pattern of publishing and of the replay store: read the row, then write what was read."""
    with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
        cursor.execute("SELECT n FROM counter")
        (n,) = cursor.fetchone()
        cursor.execute("UPDATE counter SET n = %s", [n + 1])


def counter(alias: str) -> int:
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT n FROM counter")
        return cursor.fetchone()[0]


def test_a_write_committed_between_a_read_and_a_write_waits_instead_of_failing(sqlite_file):
    ours = sqlite_file(settings.SQLITE_OPTIONS)
    # Another process's connection, which gives up after 0.1 s instead of 20 so this test does not wait.
    theirs = sqlite_file({**settings.SQLITE_OPTIONS, "timeout": 0.1})
    with transaction.atomic(using=ours), connections[ours].cursor() as cursor:
        cursor.execute("SELECT n FROM counter")
        (n,) = cursor.fetchone()
        # Without IMMEDIATE this write would commit, and ours below would fail at once.
        with pytest.raises(OperationalError, match="locked"):
            with connections[theirs].cursor() as other:
                other.execute("UPDATE counter SET n = n + 100")
        cursor.execute("UPDATE counter SET n = %s", [n + 1])
    with connections[theirs].cursor() as other:  # once we committed, theirs goes through
        other.execute("UPDATE counter SET n = n + 100")
    assert counter(ours) == 101


def test_concurrent_read_then_write_transactions_all_commit_and_none_is_lost(sqlite_file):
    alias = sqlite_file(settings.SQLITE_OPTIONS)
    errors: list[Exception] = []

    def writer() -> None:
        try:
            for _ in range(INCREMENTS):
                read_then_write(alias)
        except Exception as exc:  # reported below with the count
            errors.append(exc)
        finally:
            connections[alias].close()

    threads = [threading.Thread(target=writer) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert counter(alias) == THREADS * INCREMENTS
