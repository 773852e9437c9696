"""Live stacks run on Postgres + Redis when the suite does, else embedded (SQLite, filesystem broker)."""

import pytest
from django.conf import settings

from simulator.live_service import LiveStack


def uses_services() -> bool:
    return bool(settings.REDIS_URL) and "postgresql" in settings.DATABASES["default"]["ENGINE"]


@pytest.fixture
def live_stack_factory(tmp_path):
    stacks = []

    def make(**env: str) -> LiveStack:
        stack = LiveStack(tmp_path / f"stack{len(stacks)}", use_services=uses_services(), **env)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.close()
