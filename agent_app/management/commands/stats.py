"""python manage.py stats: the same figures as GET /stats, as JSON."""

import json

from django.core.management.base import BaseCommand

from agent_app.services.stats import agent_stats


class Command(BaseCommand):
    help = "Print the agent's statistics (the GET /stats body)."

    def handle(self, *args, **options) -> None:
        self.stdout.write(json.dumps(agent_stats(), indent=2))
