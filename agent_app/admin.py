"""The operators' admin: pools, agent configuration (audited), checkpoints (roll back), experiences,
history samples, API keys.

Each admin is a thin edge: it validates with a form and calls a service function. Every per-pool
page shows the pool of each row and filters by it (`?pool=`); a pool's configuration is saved in
that pool's scope. Beat's schedule is django-celery-beat's own admin; the dashboard is linked from
the index.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from agent_app import periodic_tasks_admin  # noqa: F401  (beat's task pages, without importing torch)
from agent_app.api.auth import create_api_key
from agent_app.dashboard.pools import chosen_pool, of_pool, pool_query
from agent_app.models import (
    AgentConfig,
    AgentState,
    ApiKey,
    Checkpoint,
    ConfigChange,
    Experience,
    MetricSample,
    Pool,
)
from agent_app.pools import (
    DEFAULT_POOL,
    NAME_RULE,
    check_name,
    ensure_pool,
    is_default,
    pool_names,
    pool_scope,
)
from agent_app.replay import StoreUnavailable, get_replay_store
from agent_app.rl.config import routing_config
from agent_app.rl.reward import RewardConfig
from agent_app.services import checkpoint_health, dispatch, operator_config
from agent_app.services.operator_config import CONFIG_FIELDS, EDITABLE, EPSILON, INTERVAL
from agent_app.services.pool_admin import create_pool
from agent_app.services.refusals import TrainingRefused, TrainingTimeout

admin.site.site_header = "RL Agent Service"
admin.site.site_title = "RL Agent Service"
admin.site.index_title = "Operators' view"
RECENT_SAMPLES = 50


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows the service writes itself (the audit log, experiences, history): looked at, never edited."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class PoolForm(forms.ModelForm):
    class Meta:
        model = Pool
        fields = ("name", "description")

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        try:
            return check_name(name)
        except ValueError:
            raise forms.ValidationError(f"Not a valid pool name: {NAME_RULE}.") from None


@admin.register(Pool)
class PoolAdmin(admin.ModelAdmin):
    """Pools with what their agent has done; added here, described, deleted with all they hold."""

    form = PoolForm
    list_display = ("name", "description", "created_at", "model_version", "steps_done", "buffer_size",
                    "pages")
    search_fields = ("name", "description")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Pool]:
        state = AgentState.objects.filter(pool=OuterRef("name"))
        return super().get_queryset(request).annotate(
            serving_version=Subquery(state.values("model_version")[:1]),
            trained_steps=Subquery(state.values("steps_done")[:1]),
        )

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        ensure_pool(DEFAULT_POOL)  # listed even before its first request
        return super().changelist_view(request, extra_context)

    @admin.display(description="model version", ordering="serving_version")
    def model_version(self, obj: Pool) -> str:
        return "–" if obj.serving_version is None else f"v{obj.serving_version}"

    @admin.display(description="training steps", ordering="trained_steps")
    def steps_done(self, obj: Pool) -> int:
        return obj.trained_steps or 0

    @admin.display(description="replay buffer")
    def buffer_size(self, obj: Pool) -> str:
        try:
            return str(get_replay_store(obj.name).size())
        except StoreUnavailable:
            return "unavailable"

    @admin.display(description="pages")
    def pages(self, obj: Pool) -> str:
        return format_html('<a href="{}">dashboard</a> · <a href="{}">configuration</a>',
                           reverse("agent_dashboard") + pool_query(obj.name),
                           reverse("admin:agent_app_agentconfig_pool", args=[obj.name]))

    def get_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return ("name", "description") if obj is None else ("name", "description", "created_at")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return () if obj is None else ("name", "created_at")  # a pool's rows are found by its name

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and is_default(obj.name):
            return False  # the original agent: every request without a pool is its
        return super().has_delete_permission(request, obj)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # one pool at a time, each through the training worker
        return actions

    def save_model(self, request: HttpRequest, obj: Pool, form: PoolForm, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        pool, _ = create_pool(obj.name, obj.description)
        obj.pk, obj.created_at = pool.pk, pool.created_at
        obj._state.adding, obj._state.db = False, pool._state.db

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> tuple[Any, dict[str, int], Any, Any]:
        """The confirmation page's summary counts what goes with the pool, not only its row."""
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        for pool in objs:
            counts.update(pool_contents(pool.name))
        return deleted, counts, perms_needed, protected

    def log_deletions(self, request: HttpRequest, queryset: Any) -> None:
        """Logged by delete_model once the worker has deleted the pool, not before it tries."""

    def delete_model(self, request: HttpRequest, obj: Pool) -> None:
        """On the training worker, which holds the checkpoint files; a refusal is shown, not raised."""
        try:
            dispatch.request_pool_deletion(name=obj.name, username=request.user.get_username())
        except TrainingTimeout as exc:
            messages.warning(request, f"Deletion of pool {obj.name} queued: {exc}.")
        except TrainingRefused as exc:
            messages.error(request, f"Pool {obj.name} not deleted: {exc}.")
        else:
            super().log_deletions(request, [obj])

    def response_delete(self, request: HttpRequest, obj_display: str, obj_id: Any) -> HttpResponse:
        if Pool.objects.filter(pk=obj_id).exists():  # refused or still queued: no "deleted" message
            return HttpResponseRedirect(reverse("admin:agent_app_pool_changelist"))
        return super().response_delete(request, obj_display, obj_id)


def pool_contents(name: str) -> dict[str, int]:
    """What deleting pool `name` removes besides its row and agent state, for the confirmation page."""
    counts = {
        "checkpoints, with their files": Checkpoint.objects.filter(pool=name).count(),
        "history samples": MetricSample.objects.filter(pool=name).count(),
    }
    try:
        counts["experiences in the replay buffer"] = get_replay_store(name).size()
    except StoreUnavailable:
        pass
    return {label: count for label, count in counts.items() if count}


class AgentConfigForm(forms.ModelForm):
    epsilon = forms.FloatField(
        label="Current epsilon",
        help_text="Takes effect at once in every web worker (within SYNC_INTERVAL_SECONDS); training "
                  "goes on decaying it from this value.",
    )
    training_interval_seconds = forms.IntegerField(
        label="Training interval (seconds)",
        help_text="Beat's \"train\" periodic task, shared by every pool; beat applies it within seconds "
                  "and keeps it over TRAINING_INTERVAL_SECONDS when it restarts.",
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
        with pool_scope(self.instance.pool):  # the values of the pool this row configures
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
    """One row per pool. With a single pool the list is the form; `pool/<name>/` opens a pool's row
    whatever its primary key."""

    form = AgentConfigForm
    list_display = ("pool", "exploration_enabled", "epsilon_min", "epsilon_decay", "learning_rate",
                    "discount", "batch_size", "updated_at")
    fieldsets = (
        ("Pool", {"fields": ("pool",)}),
        ("Exploration", {"fields": (EPSILON, "exploration_enabled", "epsilon_min", "epsilon_decay")}),
        ("Training", {"fields": ("learning_rate", "discount", "batch_size", INTERVAL)}),
        ("Reward", {"fields": ("latency_scale_ms", "balance_weight", "failure_penalty")}),
        ("Last change", {"fields": ("updated_at",)}),
    )
    readonly_fields = ("pool", "updated_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        by_pool = path("pool/<str:name>/", self.admin_site.admin_view(self.pool_view),
                       name="agent_app_agentconfig_pool")
        return [by_pool, *super().get_urls()]  # before the admin's catch-all object URLs

    def pool_view(self, request: HttpRequest, name: str) -> HttpResponse:
        """The pool's configuration page (404 for an unknown pool)."""
        config = AgentConfig.load(chosen_pool({"pool": name}))
        return HttpResponseRedirect(reverse("admin:agent_app_agentconfig_change", args=[config.pk]))

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        names = pool_names()
        existing = set(AgentConfig.objects.values_list("pool", flat=True))
        AgentConfig.objects.bulk_create([AgentConfig(pool=name) for name in names if name not in existing],
                                        ignore_conflicts=True)  # every pool has its row from here on
        if len(names) == 1:
            return self.pool_view(request, names[0])
        return super().changelist_view(request, extra_context)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: Any = None) -> HttpResponse:
        config = self.get_object(request, unquote(object_id))
        if config is not None:
            extra_context = {"title": f"Agent configuration of pool {config.pool}", **(extra_context or {})}
        return super().change_view(request, object_id, form_url, extra_context)

    def save_model(self, request: HttpRequest, obj: AgentConfig, form: AgentConfigForm, change: bool) -> None:
        values = {name: form.cleaned_data[name] for name in form.changed_data if name in EDITABLE}
        try:
            with pool_scope(obj.pool):  # epsilon, the row and the audit entries are this pool's
                changes = operator_config.apply_changes(username=request.user.get_username(), values=values)
        except operator_config.InvalidConfig as exc:  # another operator changed a related value meanwhile
            messages.error(request, f"Not saved: {exc}")
            return
        obj.refresh_from_db()
        if changes:
            messages.info(request, "Changed: " + "; ".join(f"{c.field} {c.old_value} → {c.new_value}"
                                                          for c in changes))


@admin.register(ConfigChange)
class ConfigChangeAdmin(ReadOnlyAdmin):
    """The audit log: read-only, for everyone with the view permission."""

    list_display = ("changed_at", "pool", "username", "field", "old_value", "new_value")
    list_filter = ("pool", "field", "username")
    search_fields = ("field", "username", "old_value", "new_value")
    date_hierarchy = "changed_at"


@admin.register(Checkpoint)
class CheckpointAdmin(admin.ModelAdmin):
    list_display = ("version", "pool", "steps_done", "epsilon", "loss", "avg_reward", "created_at", "on_disk")
    list_filter = ("pool", "status")
    readonly_fields = ("version", "pool", "steps_done", "epsilon", "loss", "avg_reward", "path", "created_at",
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
        checkpoint = queryset.get()
        try:  # on the training worker, in the checkpoint's pool: loading it needs torch, never imported here
            result = dispatch.request_rollback(checkpoint_id=checkpoint.pk,
                                               username=request.user.get_username())
        except TrainingTimeout as exc:
            messages.warning(request, f"Rollback queued: {exc}.")
            return
        except TrainingRefused as exc:
            messages.error(request, f"Rollback refused: {exc}.")
            return
        messages.success(
            request,
            f"Checkpoint v{result['checkpoint_version']}{of_pool(checkpoint.pool)} is now served as model "
            f"v{result['model_version']} "
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
class ExperienceAdmin(ReadOnlyAdmin):
    """The database replay store's rows (the store trims itself to REPLAY_CAPACITY per pool); with
    REPLAY_STORE=redis, one pool's counts and recent samples instead (`?pool=`, the default pool)."""

    list_display = ("id", "pool", "created_at", "replica", "reward", "latency_ms", "success", "experience_id")
    list_filter = ("pool", "success", "action", "created_at")
    search_fields = ("experience_id",)
    readonly_fields = ("pool", "experience_id", "state", "action", "reward", "next_state", "latency_ms",
                       "success", "created_at")

    @admin.display(description="replica", ordering="action")
    def replica(self, obj: Experience) -> str:
        return replica_name(obj.action)

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        if settings.REPLAY_STORE == "database":
            return super().changelist_view(request, extra_context)
        if not self.has_view_permission(request):
            return super().changelist_view(request, extra_context)  # the admin's own refusal
        pool, pools = chosen_pool(request.GET), pool_names()
        title = "Experiences in the Redis replay store" + (f" of pool {pool}" if len(pools) > 1 else "")
        return TemplateResponse(request, "admin/agent_app/experience/store_summary.html", {
            **self.admin_site.each_context(request), "opts": self.model._meta, "title": title,
            "pool": pool, "pools": pools, **store_summary(pool),
        })


@admin.register(MetricSample)
class MetricSampleAdmin(ReadOnlyAdmin):
    """The dashboard's history: one sample per training run of a pool (trimmed per pool)."""

    list_display = ("created_at", "pool", "model_version", "steps_done", "epsilon", "loss", "avg_reward",
                    "buffer_size", "exploration_rate", "fallback_rate")
    list_filter = ("pool",)
    date_hierarchy = "created_at"


def replica_name(idx: int) -> str:
    names = settings.REPLICA_NAMES
    return names[idx] if 0 <= idx < len(names) else f"#{idx}"


def store_summary(pool: str = DEFAULT_POOL) -> dict[str, Any]:
    """The pool's store size, per-replica figures over its recent samples, and the samples themselves."""
    try:
        store = get_replay_store(pool)
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
