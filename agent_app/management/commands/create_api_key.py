"""python manage.py create_api_key NAME: print a new API key (shown once, stored hashed)."""

from django.core.management.base import BaseCommand, CommandError

from agent_app.api.auth import create_api_key
from agent_app.models import ApiKey


class Command(BaseCommand):
    help = "Create an API key for the state-changing endpoints; the key is printed once."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="who uses the key, e.g. 'gateway'")

    def handle(self, *args, name: str, **options) -> None:
        if ApiKey.objects.filter(name=name).exists():
            raise CommandError(f"an API key named {name!r} exists already")
        _, raw = create_api_key(name=name)
        self.stdout.write(raw)
