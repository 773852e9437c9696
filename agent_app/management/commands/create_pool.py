"""python manage.py create_pool llama-70b: a replica pool with its own agent (agent_app/pools.py)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from agent_app.services.pool_admin import create_pool


class Command(BaseCommand):
    help = "Create a replica pool: its own agent, replay buffer, training lease and checkpoints."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="1-63 letters, digits, '.', '_' or '-'")
        parser.add_argument("--description", default="", help="what the pool serves (shown in the admin)")

    def handle(self, *args, name: str, description: str, **options) -> None:
        try:
            _, created = create_pool(name, description)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if created:
            self.stdout.write(self.style.SUCCESS(f"pool {name} created; send \"pool\": \"{name}\" in request "
                                                 f"bodies or ?pool={name} to use it"))
        else:
            self.stdout.write(f"pool {name} exists already")
