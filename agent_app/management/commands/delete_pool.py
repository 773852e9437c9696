"""python manage.py delete_pool llama-70b: a pool and all its data (run where the checkpoints are)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from agent_app.services.pool_admin import delete_pool
from agent_app.services.refusals import TrainingRefused


class Command(BaseCommand):
    help = ("Delete a replica pool with its agent state, replay buffer, statistics, history and checkpoint "
            "files; its name can be reused at once. Run it where the training worker's models folder is.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("name")

    def handle(self, *args, name: str, **options) -> None:
        try:
            result = delete_pool(name=name, username="manage.py")
        except (ValueError, TrainingRefused) as exc:
            raise CommandError(str(exc)) from None
        removed = ", ".join(f"{count} {table}" for table, count in result["removed"].items() if count)
        self.stdout.write(self.style.SUCCESS(f"pool {name} deleted ({removed or 'no rows'})"))
