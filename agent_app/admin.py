"""The operators' admin: agent configuration (audited), checkpoints (roll back), experiences, API keys.

Each admin is a thin edge: it validates with a form and calls a service function. Beat's schedule
is django-celery-beat's own admin; the dashboard is linked from the index.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from agent_app import periodic_tasks_admin  # noqa: F401  (beat's task pages, without importing torch)
from agent_app.api.auth import create_api_key
from agent_app.models import AgentConfig, ApiKey, Checkpoint, ConfigChange, Experience
from agent_app.replay import StoreUnavailable, get_replay_store
from agent_app.rl.config import routing_config
from agent_app.rl.reward import RewardConfig
from agent_app.services import checkpoint_health, dispatch, operator_config
from agent_app.services.operator_config import CONFIG_FIELDS, EDITABLE, EPSILON, INTERVAL
from agent_app.services.refusals import TrainingRefused, TrainingTimeout

admin.site.site_header = "RL Agent Service"
admin.site.site_title = "RL Agent Service"
admin.site.index_title = "Operators' view"
RECENT_SAMPLES = 50


class AgentConfigForm(forms.ModelForm):
    epsilon = forms.FloatField(
        label="Current epsilon",
        help_text="Takes effect at once in every web worker (within SYNC_INTERVAL_SECONDS); training "
                  "goes on decaying it from this value.",
    )
    training_interval_seconds = forms.IntegerField(
        label="Training interval (seconds)",
        help_text="Beat's \"train\" periodic task; beat applies it within seconds and keeps it over "
                  "TRAINING_INTERVAL_SECONDS when it restarts.",
    )

    class Meta:
        model = AgentConfig
        fields = list(CONFIG_FIELDS)
        labels = {
            "exploration_enabled": "Exploration", "epsilon_min": "Epsilon floor",
            "epsilon_decay": "Epsilon decay per training step", "discount": "Discount (gamma)",
            "latency_scale_ms": "Reward: latency scale (ms)", "balance_weight": "Reward: balance weight",
            "failure_penalty": "Reward: failure penalty",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        current = operator_config.current_values()
        self.initial.setdefault(EPSILON, current[EPSILON])
        self.initial.setdefault(INTERVAL, current[INTERVAL])
        for field in self.fields.values():
            # Changes are judged against the values the operator saw, not the current ones: a
            # value the trainer moved meanwhile (epsilon) is not overwritten by a stale form.
            field.show_hidden_initial = True
        env = "on" if settings.RL_EXPLORATION else "off"
        self.fields["exploration_enabled"].widget.choices = [
            ("unknown", f"Follow RL_EXPLORATION (now {env})"), ("true", "On"), ("false", "Off"),
        ]
        core, reward = routing_config(settings.NUM_REPLICAS), RewardConfig()
        defaults = {
            "learning_rate": core.lr, "discount": core.gamma, "batch_size": settings.TRAINING_BATCH_SIZE,
            "latency_scale_ms": reward.latency_scale_ms, "balance_weight": reward.balance_weight,
            "failure_penalty": reward.failure_penalty,
        }
        for name, value in defaults.items():
            self.fields[name].help_text = f"Empty: the default, {value:g}."

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        for name, message in operator_config.check(cleaned).items():
            if name in self.fields and name not in self.errors:
                self.add_error(name, message)
        return cleaned


@admin.register(AgentConfig)
class AgentConfigAdmin(admin.ModelAdmin):
    form = AgentConfigForm
    fieldsets = (
        ("Exploration", {"fields": (EPSILON, "exploration_enabled", "epsilon_min", "epsilon_decay")}),
        ("Training", {"fields": ("learning_rate", "discount", "batch_size", INTERVAL)}),
        ("Reward", {"fields": ("latency_scale_ms", "balance_weight", "failure_penalty")}),
        ("Last change", {"fields": ("updated_at",)}),
    )
    readonly_fields = ("updated_at",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        """One row: the list is the form."""
        config = AgentConfig.load()
        return HttpResponseRedirect(reverse("admin:agent_app_agentconfig_change", args=[config.pk]))

    def change_view(self, request: HttpRequest, object_id: str, *args: Any, **kwargs: Any) -> HttpResponse:
        AgentConfig.load()  # the row exists from the first visit on
        return super().change_view(request, object_id, *args, **kwargs)

    def save_model(self, request: HttpRequest, obj: AgentConfig, form: AgentConfigForm, change: bool) -> None:
        values = {name: form.cleaned_data[name] for name in form.changed_data if name in EDITABLE}
        try:
            changes = operator_config.apply_changes(username=request.user.get_username(), values=values)
        except operator_config.InvalidConfig as exc:  # another operator changed a related value meanwhile
            messages.error(request, f"Not saved: {exc}")
            return
        obj.refresh_from_db()
        if changes:
            messages.info(request, "Changed: " + "; ".join(f"{c.field} {c.old_value} → {c.new_value}"
                                                          for c in changes))


@admin.register(ConfigChange)
class ConfigChangeAdmin(admin.ModelAdmin):
    """The audit log: read-only, for everyone with the view permission."""

    list_display = ("changed_at", "username", "field", "old_value", "new_value")
    list_filter = ("field", "username")
    search_fields = ("field", "username", "old_value", "new_value")
    date_hierarchy = "changed_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Checkpoint)
class CheckpointAdmin(admin.ModelAdmin):
    list_display = ("version", "steps_done", "epsilon", "loss", "avg_reward", "created_at", "on_disk")
    list_filter = ("status",)
    readonly_fields = ("version", "steps_done", "epsilon", "loss", "avg_reward", "path", "created_at",
                       "size", "sha256", "status", "problem", "checked_at")
    actions = ["publish", "delete_with_files"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="file on disk", ordering="status")
    def on_disk(self, obj: Checkpoint) -> str:
        # Checked as listed, without torch (size and sha256 recorded at save time): a damaged or
        # missing file is shown here, and a rollback to it is refused.
        checkpoint_health.check_row(obj)
        if obj.status == Checkpoint.OK:
            return "ok"
        return format_html('<strong class="checkpoint-{}">{}</strong>: {}', obj.status,
                           obj.get_status_display(), obj.problem)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # it would delete rows and leave the files
        return actions

    @admin.action(description="Publish the selected checkpoint as the serving model (roll back)",
                  permissions=["change"])
    def publish(self, request: HttpRequest, queryset: Any) -> None:
        if queryset.count() != 1:
            messages.error(request, "Select exactly one checkpoint to publish.")
            return
        try:  # on the training worker: loading a checkpoint needs torch, which web workers never import
            result = dispatch.request_rollback(checkpoint_id=queryset.get().pk,
                                               username=request.user.get_username())
        except TrainingTimeout as exc:
            messages.warning(request, f"Rollback queued: {exc}.")
            return
        except TrainingRefused as exc:
            messages.error(request, f"Rollback refused: {exc}.")
            return
        messages.success(
            request,
            f"Checkpoint v{result['checkpoint_version']} is now served as model v{result['model_version']} "
            f"(was v{result['previous_version']}); every web worker switches within "
            f"{settings.SYNC_INTERVAL_SECONDS:g} s.",
        )

    @admin.action(description="Delete the selected checkpoints and their files", permissions=["delete"])
    def delete_with_files(self, request: HttpRequest, queryset: Any) -> None:
        deleted = sum(self._delete(request, checkpoint) for checkpoint in queryset)
        if deleted:
            messages.success(request, f"Deleted {deleted} checkpoint(s) and their files.")

    def delete_model(self, request: HttpRequest, obj: Checkpoint) -> None:
        self._delete(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for checkpoint in queryset:
            self._delete(request, checkpoint)

    def _delete(self, request: HttpRequest, checkpoint: Checkpoint) -> bool:
        """On the training worker, under the training lease; a refusal is shown, not raised."""
        try:
            dispatch.request_checkpoint_deletion(checkpoint_id=checkpoint.pk,
                                                 username=request.user.get_username())
        except TrainingTimeout as exc:
            messages.warning(request, f"Deletion of checkpoint v{checkpoint.version} queued: {exc}.")
            return False
        except TrainingRefused as exc:
            messages.error(request, f"Checkpoint v{checkpoint.version} not deleted: {exc}.")
            return False
        return True


@admin.register(Experience)
class ExperienceAdmin(admin.ModelAdmin):
    """The database replay store's rows; with REPLAY_STORE=redis, counts and recent samples instead."""

    list_display = ("id", "created_at", "replica", "reward", "latency_ms", "success", "experience_id")
    list_filter = ("success", "action", "created_at")
    search_fields = ("experience_id",)
    readonly_fields = ("experience_id", "state", "action", "reward", "next_state", "latency_ms", "success",
                       "created_at")

    @admin.display(description="replica", ordering="action")
    def replica(self, obj: Experience) -> str:
        return replica_name(obj.action)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the store trims itself to REPLAY_CAPACITY

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        if settings.REPLAY_STORE == "database":
            return super().changelist_view(request, extra_context)
        if not self.has_view_permission(request):
            return super().changelist_view(request, extra_context)  # the admin's own refusal
        return TemplateResponse(request, "admin/agent_app/experience/store_summary.html", {
            **self.admin_site.each_context(request), "opts": self.model._meta,
            "title": "Experiences in the Redis replay store", **store_summary(),
        })


def replica_name(idx: int) -> str:
    names = settings.REPLICA_NAMES
    return names[idx] if 0 <= idx < len(names) else f"#{idx}"


def store_summary() -> dict[str, Any]:
    """Size, per-replica figures over the recent samples, and the samples themselves."""
    try:
        store = get_replay_store()
        size, recent = store.size(), store.recent(RECENT_SAMPLES)
    except StoreUnavailable as exc:
        return {"error": str(exc)}
    per_replica = []
    for idx, name in enumerate(settings.REPLICA_NAMES):
        rows = [r for r in recent if r["action"] == idx]
        if rows:
            per_replica.append({
                "name": name, "count": len(rows),
                "latency_ms": sum(r["latency_ms"] for r in rows) / len(rows),
                "reward": sum(r["reward"] for r in rows) / len(rows),
                "success": sum(r["success"] for r in rows) / len(rows),
            })
    for row in recent:
        row["replica"] = replica_name(row["action"])
        row["state_text"] = ", ".join(f"{v:g}" for v in row["state"])
    return {"size": size, "capacity": settings.REPLAY_CAPACITY, "recent": recent, "per_replica": per_replica,
            "backend": settings.REPLAY_STORE}


class ApiKeyAddForm(forms.ModelForm):
    class Meta:
        model = ApiKey
        fields = ("name",)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Create shows the raw key once (only its digest is stored); deactivate revokes within seconds."""

    list_display = ("name", "prefix", "active", "created_at")
    list_filter = ("active",)
    search_fields = ("name", "prefix")
    actions = ["deactivate", "activate"]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = ApiKeyAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return ("name",) if obj is None else ("name", "prefix", "active", "created_at")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return () if obj is None else ("prefix", "created_at")

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        key, raw = create_api_key(name=obj.name)
        for name in ("pk", "prefix", "digest", "active", "created_at"):
            setattr(obj, name, getattr(key, name))
        obj._state.adding, obj._state.db = False, key._state.db
        messages.warning(request, format_html(
            "API key “{}” created: <code id=\"new-api-key\">{}</code> — copy it now. Only its digest is "
            "stored, so it cannot be shown again.", key.name, raw,
        ))

    @admin.action(description="Deactivate the selected keys (refused within seconds)", permissions=["change"])
    def deactivate(self, request: HttpRequest, queryset: Any) -> None:
        count = queryset.update(active=False)
        messages.success(request, f"Deactivated {count} key(s).")

    @admin.action(description="Activate the selected keys", permissions=["change"])
    def activate(self, request: HttpRequest, queryset: Any) -> None:
        count = queryset.update(active=True)
        messages.success(request, f"Activated {count} key(s).")
