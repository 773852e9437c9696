"""Django app holding the agent's models, API, admin and services."""

from django.apps import AppConfig


class AgentAppConfig(AppConfig):
    name = "agent_app"
    verbose_name = "RL agent"

    def ready(self) -> None:
        from django.conf import settings

        from agent_app.api import schema  # noqa: F401  (registers the OpenAPI extensions)
        from rlagent_project import local_files

        local_files.prepare(settings)  # every process starts here, before it signs or connects
